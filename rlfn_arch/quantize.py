"""int8 ONNX model: ``python -m rlfn_arch.quantize --model_path FILE --output model_int8.onnx [--calib DIR]``.

Exports the fp32 graph, then quantizes the layers measured to tolerate it, calibrated on LR patches (what
and why: :mod:`rlfn_arch.deploy.quantize`).
"""
import argparse
import os
import sys
import tempfile

import rlfn_arch  # noqa: F401
from rlfn_arch.archs.rlfn_weights import model_metadata
from rlfn_arch.deploy.onnx import export_onnx
from rlfn_arch.deploy.quantize import calibration_patches, quantize
from rlfn_arch.deploy.source import add_model_args, open_model
from rlfn_arch.utils.fs import check_output


def main(argv=None):
    """Exit codes: 0 written; 2 unusable weights or calibration images (nothing written); 4 the output
    could not be written (nothing partial left)."""
    p = argparse.ArgumentParser(prog='python -m rlfn_arch.quantize', description=__doc__.split('\n\n')[0])
    add_model_args(p, device=False, precision=None)
    p.add_argument('--output', required=True, help='int8 .onnx to write')
    p.add_argument('--calib', default=None, help='folder of LR images (default: the sample dataset, x4)')
    p.add_argument('--num_patches', type=int, default=32)
    p.add_argument('--overwrite', action='store_true', help='replace an existing --output (never an input)')
    args = p.parse_args(argv)
    try:
        check_output(args.output, [args.model_path, getattr(args, 'onnx', None)], args.overwrite)
        model = open_model(args)
        net = model.net
        patches = calibration_patches(args.calib, args.num_patches)
    except (ValueError, OSError) as e:  # unreadable or non-finite weights, a bad calibration folder
        print(f'error: {e}', file=sys.stderr)
        return 2
    try:
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = export_onnx(net, os.path.join(tmp, 'fp32.onnx'))
            quantize(fp32, args.output, patches, metadata=model_metadata(
                model.cfg, source=model.name, precision='int8 (QDQ)'))
    except OSError as e:  # the int8 file is written atomically: nothing partial is left at --output
        print(f'error: {e}', file=sys.stderr)
        return 4
    print(f'wrote {args.output} (int8 QDQ, calibrated on {args.num_patches} patches)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
