"""int8 ONNX model: ``python -m rlfn_arch.quantize --model_path FILE --output model_int8.onnx``.

A checkpoint of a quantization-aware stage (``train: qat``) becomes the int8 model it trained as (its convs,
its scales; no calibration); float weights are quantized after training (``--convs``, default ``block_3x3``;
``--calibration``, default ``stage``: the int8 stage's quantizers on LR patches, ``--calib``, without
training). What and why: :mod:`rlfn_arch.deploy.quantize`.
"""
import argparse
import sys

import rlfn_arch  # noqa: F401
from rlfn_arch.archs.qat import INT8_CONVS, WEIGHT_QMAX, int8_placement_of, int8_weight_bits_of
from rlfn_arch.archs.rlfn_weights import model_metadata
from rlfn_arch.archs.zoo import model_file
from rlfn_arch.deploy.quantize import (
    CALIBRATIONS,
    PTQ_CALIBRATION,
    PTQ_CONVS,
    calibration_patches,
    ptq_defaults,
    quantize_calibrated,
    quantize_checkpoint,
    trained_int8,
)
from rlfn_arch.deploy.source import add_model_args, open_model
from rlfn_arch.utils.checkpoint import safe_load, select_weights
from rlfn_arch.utils.fs import check_output
from rlfn_arch.utils.options.schema import QAT_PLACEMENTS


def _trained_state(args):
    """The checkpoint's weights, the int8 set, the weight bits and the placement it trained for, or four Nones for
    float weights."""
    path = args.model_path or model_file(args.model)
    sd = select_weights(safe_load(path), path)[0]
    preset = trained_int8(sd)
    return (sd, preset, int8_weight_bits_of(sd), int8_placement_of(sd)) if preset else (None,) * 4


def main(argv=None):
    """Exit codes: 0 written; 2 unusable weights or calibration images (nothing written); 4 the output
    could not be written (nothing partial left)."""
    p = argparse.ArgumentParser(prog='python -m rlfn_arch.quantize', description=__doc__.split('\n\n')[0])
    add_model_args(p, device=False, precision=None)
    p.add_argument('--output', required=True, help='int8 .onnx to write')
    p.add_argument('--calib', default=None, help='folder of LR images (default: the sample dataset, x4); float '
                   'weights only')
    p.add_argument('--num_patches', type=int, default=32)
    p.add_argument('--calibration', default=None, choices=list(CALIBRATIONS),
                   help=f'float weights: how activation ranges are calibrated (default {PTQ_CALIBRATION}: the int8 '
                   'stage\'s own quantizers, no training; entropy, minmax, percentile: ONNX Runtime\'s; RFDN-derived '
                   'layouts: entropy)')
    p.add_argument('--convs', default=None, choices=list(INT8_CONVS),
                   help=f'float weights: which convs run in int8 (default {PTQ_CONVS}; RFDN-derived layouts: '
                   'blocks); a quantization-aware checkpoint runs the ones it trained for')
    p.add_argument('--weight_bits', type=int, default=None, choices=list(WEIGHT_QMAX),
                   help='float weights: 8 (default) or 7, for CPUs without int8 dot-product instructions (AVX2, '
                   'AVX-512 without VNNI), where 8-bit weights can saturate; a quantization-aware checkpoint keeps '
                   'the bits it trained with')
    p.add_argument('--placement', default=None, choices=list(QAT_PLACEMENTS),
                   help='float weights: qlinear (default: each int8 conv reads and writes 8 bits, int8 in ONNX Runtime '
                   'and OpenVINO) or inputs (it reads 8 bits and writes float: int8 in OpenVINO only, closer to '
                   'fp32); a quantization-aware checkpoint keeps the placement it trained with')
    p.add_argument('--overwrite', action='store_true', help='replace an existing --output (never an input)')
    args = p.parse_args(argv)
    try:
        check_output(args.output, [args.model_path, getattr(args, 'onnx', None)], args.overwrite)
        model = open_model(args)
        sd, trained, trained_bits, trained_placement = _trained_state(args)
        if trained and args.convs and args.convs != trained:
            raise ValueError(f'{model.name}: trained with int8 convs {trained}; it cannot run as --convs {args.convs} '
                             f'(train a quantization-aware stage with train.qat.convs: {args.convs})')
        if trained and args.weight_bits and args.weight_bits != trained_bits:
            raise ValueError(f'{model.name}: trained with {trained_bits}-bit weights; it cannot run with '
                             f'--weight_bits {args.weight_bits} (train a quantization-aware stage with '
                             f'train.qat.weight_bits: {args.weight_bits})')
        if trained and args.placement and args.placement != trained_placement:
            raise ValueError(f'{model.name}: trained with placement {trained_placement}; it cannot run as --placement '
                             f'{args.placement} (train a quantization-aware stage with train.qat.placement: '
                             f'{args.placement})')
        if trained and args.calibration:
            raise ValueError(f'{model.name}: trained for int8 with its own ranges; --calibration is for float weights')
        patches = None if trained else calibration_patches(args.calib, args.num_patches)
    except (ValueError, OSError) as e:  # unreadable or non-finite weights, a bad calibration folder
        print(f'error: {e}', file=sys.stderr)
        return 2
    default_convs, default_method = ptq_defaults(model.net)
    convs = trained or args.convs or default_convs
    bits = trained_bits or args.weight_bits or 8
    method = args.calibration or default_method
    placement = trained_placement or args.placement or 'qlinear'
    how = 'quantization-aware' if trained else f'post-training, {method} calibration on {args.num_patches} patches'
    meta = model_metadata(model.cfg, source=model.name, precision='int8 (QDQ)', int8_convs=convs, int8=how,
                          int8_weight_bits=bits)
    try:
        if trained:
            quantize_checkpoint(sd, args.output, meta, source=model.name)
        else:
            quantize_calibrated(model.net, args.output, patches, convs, method, metadata=meta, weight_bits=bits,
                                placement=placement)
    except ValueError as e:  # a quantization-aware checkpoint whose ranges were never observed
        print(f'error: {e}', file=sys.stderr)
        return 2
    except OSError as e:  # the int8 file is written atomically: nothing partial is left at --output
        print(f'error: {e}', file=sys.stderr)
        return 4
    where = '' if placement == 'qlinear' else ', 8-bit conv inputs only: int8 in OpenVINO (--runtime openvino)'
    print(f'wrote {args.output} (int8 QDQ, convs {convs}, {bits}-bit weights, {how}{where})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
