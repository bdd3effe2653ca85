"""int8 post-training static quantization with ONNX Runtime (QDQ, per-channel weights, uint8
activations), calibrated on a few LR training patches.

    python -m rlfn_arch.quantize --model_path FILE --output model_int8.onnx [--calib DIR]

ONNX Runtime's int8 convolutions use VNNI where the CPU has it; PyTorch's eager int8 path cannot run
ESA's resize and sigmoid in int8 and would fall back and forth, so ONNX Runtime is our int8 path.
Which layers are int8 was chosen by measurement (official RLFN-S x4, Set5 x4 PSNR-Y, 2 CPU threads;
see the issue note): quantizing every conv costs 0.45 dB; ESA (gating through a sigmoid), the 1x1
``c5``, the head, ``conv_2`` and the upsampler are sensitive and cheap, so they stay float; of the three
3x3 convs per block, ``c1_r`` (which reads the block input, whose range the ESA gating widens) costs the
most accuracy. Default: ``c2_r`` and ``c3_r`` in int8 with entropy calibration (about -0.06 dB; MinMax:
-0.07 dB), the rest float.
"""
import argparse
import os
import sys
import tempfile

import rlfn_arch  # noqa: F401
from rlfn_arch.archs.rlfn_weights import load_model
from rlfn_arch.deploy.onnx import export_onnx
from rlfn_arch.deploy.quantize import calibration_patches, quantize


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m rlfn_arch.quantize', description=__doc__.split('\n\n')[0])
    p.add_argument('--model_path', required=True)
    p.add_argument('--output', required=True, help='int8 .onnx to write')
    p.add_argument('--calib', default=None, help='folder of LR images (default: the sample dataset, x4)')
    p.add_argument('--num_patches', type=int, default=32)
    args = p.parse_args(argv)
    net, cfg = load_model(args.model_path)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(net, os.path.join(tmp, 'fp32.onnx'))
        quantize(fp32, args.output, calibration_patches(args.calib, args.num_patches))
    print(f'wrote {args.output} (int8 QDQ, calibrated on {args.num_patches} patches)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
