"""int8 ONNX model: ``python -m rlfn_arch.quantize --model_path FILE --output model_int8.onnx``.

A checkpoint of a quantization-aware stage (``train: qat``) becomes the int8 model it trained as (its convs,
its scales; no calibration); float weights are quantized after training (``--convs``, default ``block_3x3``;
``--calibration``, default ``stage``: the int8 stage's quantizers on LR patches, ``--calib``, without
training). What and why: :mod:`rlfn_arch.deploy.quantize`.
"""
import argparse
import sys

import rlfn_arch  # noqa: F401
from rlfn_arch.archs.qat import INT8_CONVS, WEIGHT_QMAX, int8_settings_of
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
)
from rlfn_arch.deploy.source import add_model_args, open_model
from rlfn_arch.utils.checkpoint import safe_load, select_weights, strip_module
from rlfn_arch.utils.fs import check_output
from rlfn_arch.utils.options.schema import QAT_PLACEMENTS


def _trained_state(args):
    """The checkpoint's weights and the int8 settings it trained with (:func:`rlfn_arch.archs.qat.int8_settings_of`),
    or (None, {}) for float weights."""
    path = args.model_path or model_file(args.model)
    sd = strip_module(select_weights(safe_load(path), path)[0])
    held = int8_settings_of(sd)
    return (sd, held) if held else (None, {})


#: What a quantization-aware checkpoint keeps whatever the flags say: its ``train.qat`` key (also the flag's name)
#: and how a refusal names it.
_TRAINED_FLAGS = {'convs': 'int8 convs', 'weight_bits': 'weight bits', 'placement': 'placement'}


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
        sd, held = _trained_state(args)
        for key, words in _TRAINED_FLAGS.items():
            asked = getattr(args, key)
            if held and asked and asked != held[key]:
                raise ValueError(f'{model.name}: trained with {words} {held[key]}; it cannot run with --{key} '
                                 f'{asked} (train a quantization-aware stage with train.qat.{key}: {asked})')
        trained = held.get('convs')
        if trained and args.calibration:
            raise ValueError(f'{model.name}: trained for int8 with its own ranges; --calibration is for float weights')
        patches = None if trained else calibration_patches(args.calib, args.num_patches)
    except (ValueError, OSError) as e:  # unreadable or non-finite weights, a bad calibration folder
        print(f'error: {e}', file=sys.stderr)
        return 2
    default_convs, default_method = ptq_defaults(model.net)
    convs = trained or args.convs or default_convs
    bits = held.get('weight_bits') or args.weight_bits or 8
    method = args.calibration or default_method
    placement = held.get('placement') or args.placement or 'qlinear'
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
