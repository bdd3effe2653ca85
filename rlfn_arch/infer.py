"""Upscale images: ``python -m rlfn_arch.infer -i INPUT -o OUTPUT --model_path FILE``.

INPUT is an image or a folder (an output folder inside it is skipped). The network settings come from
the checkpoint's tensors (or ``--opt``). An EXIF orientation tag is applied when reading, as image viewers
do, so the output (written without EXIF) shows the picture the way the input was seen.
Greyscale stays greyscale, 16-bit stays 16-bit, RGBA keeps its alpha (upscaled separately, bicubic),
images below RLFN's 15x15 minimum are padded. Large images are processed in overlapping tiles blended
with linear ramps (``--tile``, ``--tile_pad``), which bounds memory. An unreadable image is reported and
skipped, the exit code is 1 when any failed, and outputs are written atomically.
"""
import argparse
import os
import sys
import time

import cv2
import numpy as np
from tqdm import tqdm

import rlfn_arch  # noqa: F401
from rlfn_arch.data.image_io import IMG_EXTENSIONS, ImageReadError, header_size, read_unchanged, write_image
from rlfn_arch.deploy.fast import optimize_for_inference
from rlfn_arch.deploy.source import add_model_args, open_model
from rlfn_arch.deploy.upscaler import DEFAULT_TILE, DEFAULT_TILE_PAD, Upscaler
from rlfn_arch.utils.fs import same_file
from rlfn_arch.utils.precision import describe, resolve_channels_last


def _inputs(path, output=None):
    """The input files: ``path`` itself, or the entries of the folder ``path`` (hidden ones and the output
    folder, when it lies inside the input, left out)."""
    if not os.path.isdir(path):
        return [path]
    out = os.path.realpath(output) if output else None
    return [os.path.join(path, n) for n in sorted(os.listdir(path))
            if not n.startswith('.') and os.path.realpath(os.path.join(path, n)) != out]


def plan_outputs(files, args):
    """The output path of each input, in order.

    Raises:
        ValueError: an output would overwrite an input file (or any file in the input folder that is
            an input), or two inputs would write the same output; nothing has been written.
    """
    single = not os.path.isdir(args.input)
    outs = []
    for path in files:
        stem, ext = os.path.splitext(os.path.basename(path))
        out_ext = '.' + args.ext.lstrip('.') if args.ext else ext
        if single and os.path.splitext(args.output)[1]:
            outs.append(args.output)
        else:
            outs.append(os.path.join(args.output, f'{stem}{"_" + args.suffix if args.suffix else ""}{out_ext}'))
    inputs = {os.path.realpath(f): f for f in files}
    seen, existing = {}, []
    for src, out in zip(files, outs):
        real = os.path.realpath(out)
        hit = inputs.get(real) or next((f for f in files if same_file(out, f)), None)  # links to an input count
        if hit:
            raise ValueError(f'{out} would overwrite the input {hit}; nothing was written. Write to '
                             'another folder with -o, or add --suffix (e.g. --suffix x4)')
        if os.path.lexists(out):
            existing.append(out)
        if real in seen:
            raise ValueError(f'{seen[real]} and {src} would both be written to {out}; nothing was written. '
                             'Use --suffix or a separate output folder')
        seen[real] = src
    if existing and not args.overwrite:
        more = ', ...' if len(existing) > 1 else ''
        raise ValueError(f'{len(existing)} output file(s) exist already ({existing[0]}{more}); '
                         'nothing was written. Pass --overwrite to replace them, or write to another folder with -o')
    return outs


def run(args):

    files = _inputs(args.input, args.output)
    outs = plan_outputs(files, args)  # refuse in-place writes before loading anything
    if args.half:
        args.precision = 'fp16'
    model = open_model(args)
    net, cfg, device, precision = model.net, model.cfg, model.device, model.precision
    if model.kind != 'onnx':
        layout = args.fast or resolve_channels_last(args.channels_last, device)
        if layout or precision != 'fp32':  # channels_last and/or autocast; never compiled per image
            net = optimize_for_inference(net, precision=precision, channels_last=layout)
    budget = None if args.max_memory is None else int(args.max_memory * 2**30)
    up = Upscaler(net, cfg['upscale'], device, args.tile, args.tile_pad, max_memory=budget)
    t0, failures, done = time.time(), [], 0
    for path, out in tqdm(list(zip(files, outs)), unit='img', disable=len(files) < 2 or not sys.stderr.isatty()):
        out_ext = os.path.splitext(out)[1]
        try:
            size = header_size(path) if path.lower().endswith(IMG_EXTENSIONS) else None
            if size is not None:  # refuse before decoding when the header already says it will not fit
                up.check_budget(size[0], size[1], path)
            img = read_unchanged(path)
            try:
                res = up.upscale(img)
            except ValueError as e:
                raise ValueError(f'{path}: {e}') from e
            if res.dtype == np.uint16 and out_ext.lower() not in ('.png', '.tif', '.tiff'):
                res = (res // 257).astype(np.uint8)
            write_image(out, res)
            done += 1
        except (ImageReadError, ValueError, OSError, cv2.error, MemoryError, RuntimeError) as e:
            # one image failing (unreadable, too large, out of memory, ...) never stops the others
            msg = str(e) if path in str(e) else f'{path}: {type(e).__name__}: {str(e).strip()[:300]}'
            failures.append(msg)
            print(f'failed: {msg}', file=sys.stderr)
    dt = time.time() - t0
    where = describe(device) + (f', {model.net.runtime}' if model.kind == 'onnx' else '')
    print(f'{done} image(s) upscaled x{cfg["upscale"]} in {dt:.1f} s on {where} ({precision}); '
          f'{len(failures)} failed')
    for f in failures:
        print(f'  failed: {f}')
    return 1 if failures else 0


def build_parser():
    p = argparse.ArgumentParser(prog='python -m rlfn_arch.infer', description=__doc__.split('\n\n')[0])
    p.add_argument('-i', '--input', required=True, help='image file or folder')
    p.add_argument('-o', '--output', required=True, help='output folder (or file, for one input image)')
    p.add_argument('--overwrite', action='store_true', help='replace output files that exist (never an input)')
    add_model_args(p, onnx=True, input_range=True)  # with --device and --precision (auto)
    p.add_argument('--tile', type=int, default=DEFAULT_TILE,
                   help=f'LR tile size, 0 = whole image (default {DEFAULT_TILE})')
    p.add_argument('--tile_pad', type=int, default=DEFAULT_TILE_PAD,
                   help=f'overlap per tile side (default {DEFAULT_TILE_PAD})')
    p.add_argument('--half', action='store_true', help='same as --precision fp16 (native on CUDA)')
    p.add_argument('--channels_last', default='auto', choices=['auto', 'true', 'false'],
                   help='NHWC layout inside the network: auto (default) = on, as in training (1.5x end to end on '
                   'Set14 with an AVX2 CPU: benchmarks/infer_folder.py); false = plain NCHW')
    p.add_argument('--fast', action='store_true', help='same as --channels_last true (kept for older scripts)')
    p.add_argument('--suffix', default='', help='appended to output names, e.g. out')
    p.add_argument('--ext', default=None, help='output format (png, jpg, ...); default: as the input')
    p.add_argument('--max_memory', type=float, default=None,
                   help='memory budget in GiB for one image (output, input, one band of tiles); larger images '
                   'are refused before decoding. Default: half of the physical memory')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
