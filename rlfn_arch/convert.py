"""Convert the official RLFN checkpoints into BasicSR checkpoints in [0, 1] range.

Usage::

    python -m rlfn_arch.convert --input ../shared/weights/rlfn_s_x4.pth --output weights/RLFN_S_x4.pth

Reads the five bytedance/RLFN files and the NTIRE 2022 challenge copy (``team04_rlfn.pth``, keys
``fea_conv``, ``B1..B4``, ``LR_conv``), detects the configuration from the tensor shapes, folds the
[0, 255] input/output range into ``conv_1`` and ``upsampler.0`` and writes ``{'params': state_dict}``.
"""
import argparse
import sys

from rlfn_arch.archs.rlfn_weights import convert, network_yaml, preset_name
from rlfn_arch.utils.checkpoint import CheckpointError, safe_load
from rlfn_arch.utils.fs import UnsafePathError, check_output


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m rlfn_arch.convert', description=__doc__.split('\n\n')[0])
    parser.add_argument('--input', required=True, help='official RLFN .pth (bytedance/RLFN or NTIRE 2022 copy)')
    parser.add_argument('--output', required=True, help='BasicSR checkpoint to write ({"params": ...}); a name '
                        'ending in .safetensors writes safetensors with metadata (scale, network, range)')
    parser.add_argument('--input_range', type=float, default=None,
                        help='value range the input checkpoint works in (official weights: 255; 1 for a checkpoint '
                        'already in [0, 1]). Default: detected from what the network does')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --output (never the input)')
    args = parser.parse_args(argv)
    try:
        check_output(args.output, [args.input], args.overwrite)
        _, cfg, factor = convert(args.input, args.output, args.input_range)
    except (CheckpointError, UnsafePathError, OSError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    saved = safe_load(args.output)
    n = sum(v.numel() for v in saved.get('params', saved).values())
    print(f'{args.input} -> {args.output}: {preset_name(cfg)} x{cfg["upscale"]}, {n:,} parameters, '
          + (f'range [0, {factor:g}] folded into [0, 1]' if factor != 1 else 'already in [0, 1] (nothing folded)'))
    print(network_yaml(cfg))
    return 0


if __name__ == '__main__':
    sys.exit(main())
