"""int8 ONNX model: ``python -m rlfn_arch.quantize --model_path FILE --output model_int8.onnx``.

A checkpoint of a quantization-aware stage (``train: qat``) becomes the int8 model it trained as (its convs,
its scales; no calibration); float weights are quantized after training (``--convs``, default ``blocks``;
calibrated on LR patches, ``--calib``). What and why: :mod:`rlfn_arch.deploy.quantize`.
"""
import argparse
import sys

import rlfn_arch  # noqa: F401
from rlfn_arch.archs.qat import INT8_CONVS
from rlfn_arch.archs.rlfn_weights import model_metadata
from rlfn_arch.archs.zoo import model_file
from rlfn_arch.deploy.quantize import (
    PTQ_CONVS,
    calibration_patches,
    quantize_calibrated,
    quantize_checkpoint,
    trained_int8,
)
from rlfn_arch.deploy.source import add_model_args, open_model
from rlfn_arch.utils.checkpoint import safe_load, select_weights
from rlfn_arch.utils.fs import check_output


def _trained_state(args):
    """The checkpoint's weights and the int8 set it trained for, or (None, None) for float weights."""
    path = args.model_path or model_file(args.model)
    sd = select_weights(safe_load(path), path)[0]
    preset = trained_int8(sd)
    return (sd, preset) if preset else (None, None)


def main(argv=None):
    """Exit codes: 0 written; 2 unusable weights or calibration images (nothing written); 4 the output
    could not be written (nothing partial left)."""
    p = argparse.ArgumentParser(prog='python -m rlfn_arch.quantize', description=__doc__.split('\n\n')[0])
    add_model_args(p, device=False, precision=None)
    p.add_argument('--output', required=True, help='int8 .onnx to write')
    p.add_argument('--calib', default=None, help='folder of LR images (default: the sample dataset, x4); float '
                   'weights only')
    p.add_argument('--num_patches', type=int, default=32)
    p.add_argument('--convs', default=None, choices=list(INT8_CONVS),
                   help=f'float weights: which convs run in int8 (default {PTQ_CONVS}); a quantization-aware '
                   'checkpoint runs the ones it trained for')
    p.add_argument('--overwrite', action='store_true', help='replace an existing --output (never an input)')
    args = p.parse_args(argv)
    try:
        check_output(args.output, [args.model_path, getattr(args, 'onnx', None)], args.overwrite)
        model = open_model(args)
        sd, trained = _trained_state(args)
        if trained and args.convs and args.convs != trained:
            raise ValueError(f'{model.name}: trained with int8 convs {trained}; it cannot run as --convs {args.convs} '
                             f'(train a quantization-aware stage with train.qat.convs: {args.convs})')
        patches = None if trained else calibration_patches(args.calib, args.num_patches)
    except (ValueError, OSError) as e:  # unreadable or non-finite weights, a bad calibration folder
        print(f'error: {e}', file=sys.stderr)
        return 2
    convs = trained or args.convs or PTQ_CONVS
    how = 'quantization-aware' if trained else f'post-training, calibrated on {args.num_patches} patches'
    meta = model_metadata(model.cfg, source=model.name, precision='int8 (QDQ)', int8_convs=convs, int8=how)
    try:
        if trained:
            quantize_checkpoint(sd, args.output, meta, source=model.name)
        else:
            quantize_calibrated(model.net, args.output, patches, convs, metadata=meta)
    except ValueError as e:  # a quantization-aware checkpoint whose ranges were never observed
        print(f'error: {e}', file=sys.stderr)
        return 2
    except OSError as e:  # the int8 file is written atomically: nothing partial is left at --output
        print(f'error: {e}', file=sys.stderr)
        return 4
    print(f'wrote {args.output} (int8 QDQ, convs {convs}, {how})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
