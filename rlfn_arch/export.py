"""Export RLFN to ONNX and check it: ``python -m rlfn_arch.export --model_path FILE --output model.onnx``.

Opset 17 (default), dynamic batch, height and width. ESA's resize back to the input's own size and
PixelShuffle (DepthToSpace) export with dynamic shapes. The exported graph is run with onnxruntime on
several input sizes and compared with PyTorch; the command prints the check and fails when the max abs
difference exceeds ``--atol`` (1e-4, in [0, 1]). The model describes itself in its ``metadata_props``
(architecture, network settings, scale, channels, value range [0, 1], minimum input size, project version;
``infer --onnx`` reads the scale from there). ``--fp16`` also writes an fp16 model for GPU runtimes.
"""
import argparse
import os
import sys
import tempfile

import rlfn_arch  # noqa: F401
from rlfn_arch.archs.rlfn_weights import model_metadata
from rlfn_arch.deploy.onnx import check_onnx, export_onnx, to_fp16
from rlfn_arch.deploy.source import add_model_args, open_model
from rlfn_arch.utils.fs import TMP_SUFFIX, check_output


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m rlfn_arch.export', description=__doc__.split('\n\n')[0])
    add_model_args(p, preset=True, device=False, precision=None)
    p.add_argument('--output', required=True, help='the .onnx file to write')
    p.add_argument('--opset', type=int, default=17)
    p.add_argument('--atol', type=float, default=1e-4)
    p.add_argument('--fp16', action='store_true', help='also write <output>_fp16.onnx (needs onnxconverter-common)')
    p.add_argument('--overwrite', action='store_true', help='replace existing output files (never an input)')
    args = p.parse_args(argv)
    if args.opset < 17:
        p.error('--opset must be 17 or newer')
    out16 = os.path.splitext(args.output)[0] + '_fp16.onnx'
    try:
        for out in [args.output] + ([out16] if args.fp16 else []):
            check_output(out, [args.model_path, args.opt], args.overwrite)
        model = open_model(args)
        net, cfg = model.net, model.cfg
    except (ValueError, OSError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    # exported and checked beside --output; only a model that passed its check is renamed into place
    folder = os.path.dirname(os.path.abspath(args.output))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, candidate = tempfile.mkstemp(prefix=f'.{os.path.basename(args.output)}.', suffix=TMP_SUFFIX, dir=folder)
        os.close(fd)
        export_onnx(net, candidate, args.opset, metadata=model_metadata(
            cfg, source=f'preset {model.name}' if model.kind == 'preset' else model.name))
    except OSError as e:
        print(f'error: {e}', file=sys.stderr)
        return 4
    try:
        print(f'exported {args.output} (opset {args.opset}, dynamic batch/height/width, RLFN {cfg})')
        worst = 0.0
        for h, w, d in check_onnx(net, candidate):
            print(f'  onnxruntime vs PyTorch at {h}x{w}: max abs diff {d:.2e}')
            worst = max(worst, d)
        if not worst <= args.atol:  # also true for NaN
            print(f'error: max abs diff {worst:.2e} exceeds --atol {args.atol:g}; {args.output} was not written',
                  file=sys.stderr)
            return 1
        os.replace(candidate, args.output)
    finally:
        if os.path.exists(candidate):
            os.unlink(candidate)
    print(f'check passed: max abs diff {worst:.2e} <= {args.atol:g}')
    if args.fp16:
        try:
            to_fp16(args.output, out16)
        except ImportError as e:
            print(f'error: {e}', file=sys.stderr)
            return 2
        print(f'wrote {out16} (fp16 weights and math, float32 inputs/outputs)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
