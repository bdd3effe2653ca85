"""Upscale images: ``python -m rlfn_arch.infer -i INPUT -o OUTPUT --model_path FILE``.

INPUT is an image or a folder. The network settings come from the checkpoint's tensors (or ``--opt``).
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
import torch

import rlfn_arch  # noqa: F401
from rlfn_arch.data.image_io import IMG_EXTENSIONS, ImageReadError, decode_unchanged
from rlfn_arch.fast import optimize_for_inference
from rlfn_arch.utils.fs import atomic_write
from rlfn_arch.utils.precision import PRECISIONS, describe, resolve_precision

DEFAULT_TILE, DEFAULT_TILE_PAD = 128, 16


def _ramp(n, left, right, pad):
    """1-D blending weights of one tile: linear over ``pad`` pixels at sides that overlap a neighbour."""
    w = np.ones(n, np.float32)
    if pad > 0:
        r = (np.arange(pad, dtype=np.float32) + 0.5) / pad
        if left:
            w[:pad] = np.minimum(w[:pad], r[:n])
        if right:
            w[-pad:] = np.minimum(w[-pad:], r[::-1][-min(n, pad):])
    return w


def tiled_rows(net, x, scale, tile, tile_pad):
    """Run ``net`` on ``x`` (1, C, H, W) in tiles of ``tile`` LR pixels, each extended by ``tile_pad``
    on every side, blend the overlaps with linear ramps, and yield the output in finished row strips:
    ``(r0, r1, strip)`` with ``strip`` a float32 (C, r1 - r0, sW) tensor of output rows r0..r1.

    Only one band of tiles is held in float: at most ``(tile + 2 * tile_pad) * scale`` output rows of
    the full output width (plus one weight channel), whatever the image height. ``tile <= 0`` or an
    image within one tile: one pass, one strip.
    """
    _, c, h, w = x.shape
    if tile <= 0 or (h <= tile and w <= tile):
        yield 0, h * scale, net(x)[0].float().cpu()
        return
    s, width = scale, w * scale
    starts = list(range(0, h, tile))
    acc = torch.zeros(c, 0, width)
    wsum = torch.zeros(1, 0, width)
    acc_r0 = 0  # output row of acc[:, 0]
    for i, y0 in enumerate(starts):
        ya, yb = max(0, y0 - tile_pad), min(h, y0 + tile + tile_pad)
        grow = yb * s - acc_r0 - acc.shape[1]
        if grow > 0:
            acc = torch.cat([acc, torch.zeros(c, grow, width)], 1)
            wsum = torch.cat([wsum, torch.zeros(1, grow, width)], 1)
        wy = _ramp((yb - ya) * s, ya > 0, yb < h, tile_pad * s)
        rows = slice(ya * s - acc_r0, yb * s - acc_r0)
        for x0 in range(0, w, tile):
            xa, xb = max(0, x0 - tile_pad), min(w, x0 + tile + tile_pad)
            o = net(x[:, :, ya:yb, xa:xb])[0].float().cpu()
            wx = _ramp((xb - xa) * s, xa > 0, xb < w, tile_pad * s)
            wt = torch.from_numpy(np.outer(wy, wx))[None]
            acc[:, rows, xa * s:xb * s] += o * wt
            wsum[:, rows, xa * s:xb * s] += wt
        # rows no later band touches are final
        done = (max(0, starts[i + 1] - tile_pad) if i + 1 < len(starts) else h) * s
        n = done - acc_r0
        if n > 0:
            yield acc_r0, done, acc[:, :n] / wsum[:, :n]
            acc, wsum, acc_r0 = acc[:, n:].clone(), wsum[:, n:].clone(), done


def tiled_forward(net, x, scale, tile, tile_pad):
    """:func:`tiled_rows` assembled into one (1, C, sH, sW) float32 tensor (holds the whole output)."""
    return torch.cat([strip for _, _, strip in tiled_rows(net, x, scale, tile, tile_pad)], 1)[None]


def default_memory_budget():
    """Half of the machine's physical memory, in bytes (the default of ``--max_memory``)."""
    try:
        return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


class Upscaler:
    """Holds the network and applies it to numpy images (any of the kinds the CLI accepts).

    Memory: the output image is allocated once, in its final dtype, and filled strip by strip (see
    :func:`tiled_rows`); besides it and the input, the peak holds one band of tiles in float32.
    :meth:`projected_bytes` is that peak, checked against ``max_memory`` before anything is decoded.
    """

    def __init__(self, net, scale, device, tile=DEFAULT_TILE, tile_pad=DEFAULT_TILE_PAD, half=False,
                 max_memory=None):
        self.net, self.scale, self.device = net, scale, device
        self.tile, self.tile_pad, self.half = tile, tile_pad, half
        self.max_memory = default_memory_budget() if max_memory is None else max_memory
        if half:
            if device.type != 'cuda':
                raise ValueError('--half needs a CUDA device (fp16 convolutions are slow or missing on CPU)')
            self.net = self.net.half()

    def projected_bytes(self, width, height, channels=4, itemsize=2):
        """Peak memory of upscaling a ``width`` x ``height`` image (upper bound for 8/16-bit, <= 4 channels):
        decoded input + float input + output image + one float band of tiles (+ weights) + encoded file."""
        s, w, h = self.scale, width, height
        out = w * s * h * s * channels * itemsize
        band_rows = h * s if self.tile <= 0 or (h <= self.tile and w <= self.tile) else \
            min(h, self.tile + 2 * self.tile_pad) * s
        band = 2 * band_rows * w * s * 4 * 4  # accumulator + the strip divided out of it, 3 channels + weight
        return w * h * channels * itemsize + w * h * 3 * 4 + 2 * out + band

    def check_budget(self, width, height, what):
        need = self.projected_bytes(width, height)
        if need > self.max_memory:
            raise ImageTooLargeError(
                f'{what}: {width}x{height} -> {width * self.scale}x{height * self.scale} needs about '
                f'{need / 2**30:.1f} GiB, above the memory budget of {self.max_memory / 2**30:.1f} GiB '
                '(--max_memory; default half of the physical memory)')

    @torch.inference_mode()
    def _rgb_rows(self, img01):
        """(H, W, 3) float32 RGB in [0,1] -> yields (r0, r1, (r1-r0, sW, 3) float32 in [0,1])."""
        x = torch.from_numpy(np.ascontiguousarray(img01.transpose(2, 0, 1)))[None].to(self.device)
        if self.half:
            x = x.half()
        for r0, r1, strip in tiled_rows(self.net, x, self.scale, self.tile, self.tile_pad):
            if not bool(torch.isfinite(strip).all()):
                raise NonFiniteOutputError(f'the network produced non-finite values (NaN/Inf) in output rows '
                                           f'{r0}-{r1}: the weights or the input are broken; nothing written')
            yield r0, r1, strip.clamp_(0, 1).numpy().transpose(1, 2, 0)

    def upscale(self, img):
        """``img`` as read by ``cv2.IMREAD_UNCHANGED``: (H, W) grey, (H, W, 3) BGR or (H, W, 4) BGRA,
        uint8 or uint16. Returns the upscaled image of the same kind and dtype."""
        if img.dtype == np.uint8:
            maxv = 255.0
        elif img.dtype == np.uint16:
            maxv = 65535.0
        else:
            raise ValueError(f'unsupported pixel type {img.dtype}')
        if img.ndim == 3 and img.shape[2] not in (3, 4):
            raise ValueError(f'unsupported channel count {img.shape[2]}')
        self.check_budget(img.shape[1], img.shape[0], 'image')
        h, w, s = img.shape[0], img.shape[1], self.scale
        if img.ndim == 2:
            rgb = np.repeat((img.astype(np.float32) / maxv)[:, :, None], 3, axis=2)
        else:
            rgb = img[:, :, 2::-1].astype(np.float32) / maxv
        out = np.empty((h * s, w * s) + img.shape[2:], img.dtype)
        for r0, r1, strip in self._rgb_rows(rgb):
            if img.ndim == 2:
                strip = strip.mean(axis=2)  # the three channels are (nearly) equal for a grey input
            else:
                strip = strip[:, :, ::-1]
            q = np.clip(np.floor(strip * maxv + 0.5), 0, maxv)
            if img.ndim == 2:
                out[r0:r1] = q
            else:
                out[r0:r1, :, :3] = q
        if img.ndim == 3 and img.shape[2] == 4:  # alpha: bicubic, in the image's own dtype
            out[:, :, 3] = cv2.resize(np.ascontiguousarray(img[:, :, 3]), (w * s, h * s), interpolation=cv2.INTER_CUBIC)
        return out


class ImageTooLargeError(ValueError):
    """An image whose upscaled output would not fit the memory budget."""


class NonFiniteOutputError(ValueError):
    """The network produced NaN or Inf."""


def _inputs(path):
    if os.path.isdir(path):
        return [os.path.join(path, n) for n in sorted(os.listdir(path)) if not n.startswith('.')]
    return [path]


def _read(path):
    if not path.lower().endswith(IMG_EXTENSIONS):
        raise ImageReadError(f'{path}: not an image file extension ({", ".join(IMG_EXTENSIONS)})')
    img = decode_unchanged(path)  # keeps 16-bit and alpha, unlike the training reader
    if img.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(f'{path}: unsupported pixel type {img.dtype} (expected 8- or 16-bit)')
    if img.ndim == 3 and img.shape[2] == 2:  # grey + alpha -> BGRA
        img = np.dstack([np.repeat(img[:, :, :1], 3, axis=2), img[:, :, 1:]])
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    return img


def _write(path, img):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    ext = os.path.splitext(path)[1]
    ok, buf = cv2.imencode(ext, img)
    if not ok:
        raise OSError(f'cannot encode {path}')
    atomic_write(path, lambda f: f.write(buf.tobytes()))


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
    seen = {}
    for src, out in zip(files, outs):
        real = os.path.realpath(out)
        if real in inputs:
            raise ValueError(f'{out} would overwrite the input {inputs[real]}; nothing was written. Write to '
                             'another folder with -o, or add --suffix (e.g. --suffix x4)')
        if real in seen:
            raise ValueError(f'{seen[real]} and {src} would both be written to {out}; nothing was written. '
                             'Use --suffix or a separate output folder')
        seen[real] = src
    return outs


def run(args):
    from tqdm import tqdm

    from rlfn_arch.data.image_io import _header_size
    from rlfn_arch.utils.model_io import load_model, pick_device
    files = _inputs(args.input)
    outs = plan_outputs(files, args)  # refuse in-place writes before loading anything
    device = pick_device(args.device)
    if args.onnx:
        from rlfn_arch.export import OnnxRLFN
        net = OnnxRLFN(args.onnx)
        cfg, device = {'upscale': net.upscale}, torch.device('cpu')
    else:
        net, cfg = load_model(args.model_path, args.opt, input_range=args.input_range, device=device)
    precision = 'fp32'
    if not args.onnx:
        precision = resolve_precision('fp16' if args.half else args.precision, device)
        if precision == 'fp16' and device.type != 'cuda':
            raise ValueError('--precision fp16 (--half) needs a CUDA device: fp16 convolutions are emulated on CPU')
        if args.fast or precision != 'fp32':  # channels_last + autocast; never compiled per image
            net = optimize_for_inference(net, precision=precision)
    budget = None if args.max_memory is None else int(args.max_memory * 2**30)
    up = Upscaler(net, cfg['upscale'], device, args.tile, args.tile_pad, args.half, max_memory=budget)
    t0, failures, done = time.time(), [], 0
    for path, out in tqdm(list(zip(files, outs)), unit='img', disable=len(files) < 2 or not sys.stderr.isatty()):
        out_ext = os.path.splitext(out)[1]
        try:
            size = _header_size(path) if path.lower().endswith(IMG_EXTENSIONS) else None
            if size is not None:  # refuse before decoding when the header already says it will not fit
                up.check_budget(size[0], size[1], path)
            img = _read(path)
            try:
                res = up.upscale(img)
            except ValueError as e:
                raise ValueError(f'{path}: {e}') from e
            if res.dtype == np.uint16 and out_ext.lower() not in ('.png', '.tif', '.tiff'):
                res = (res // 257).astype(np.uint8)
            _write(out, res)
            done += 1
        except (ImageReadError, ValueError, OSError, cv2.error, MemoryError, RuntimeError) as e:
            # one image failing (unreadable, too large, out of memory, ...) never stops the others
            msg = str(e) if path in str(e) else f'{path}: {type(e).__name__}: {str(e).strip()[:300]}'
            failures.append(msg)
            print(f'failed: {msg}', file=sys.stderr)
    dt = time.time() - t0
    print(f'{done} image(s) upscaled x{cfg["upscale"]} in {dt:.1f} s on {describe(device)} ({precision}); '
          f'{len(failures)} failed')
    for f in failures:
        print(f'  failed: {f}')
    return 1 if failures else 0


def build_parser():
    p = argparse.ArgumentParser(prog='python -m rlfn_arch.infer', description=__doc__.split('\n\n')[0])
    p.add_argument('-i', '--input', required=True, help='image file or folder')
    p.add_argument('-o', '--output', required=True, help='output folder (or file, for one input image)')
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--model_path', help='checkpoint (BasicSR {"params": ...} or converted official)')
    src.add_argument('--onnx', help='an exported ONNX model (fp32 from rlfn_arch.export or int8 from '
                     'rlfn_arch.quantize), run with ONNX Runtime on CPU')
    p.add_argument('--opt', default=None, help='option file whose network_g to use (default: read from the weights)')
    p.add_argument('--input_range', type=float, default=1.0, help='255 for unconverted official RLFN files')
    p.add_argument('--tile', type=int, default=DEFAULT_TILE, help=f'LR tile size, 0 = whole image (default {DEFAULT_TILE})')
    p.add_argument('--tile_pad', type=int, default=DEFAULT_TILE_PAD, help=f'overlap per tile side (default {DEFAULT_TILE_PAD})')
    p.add_argument('--device', default=None, help='cpu, cuda, cuda:1 (default: cuda if available)')
    p.add_argument('--precision', default='auto', choices=PRECISIONS,
                   help='auto (default): bf16 where the device runs it natively (AVX512_BF16/AMX CPU, bf16 GPU), '
                   'else fp32; fp16 on CUDA only')
    p.add_argument('--half', action='store_true', help='same as --precision fp16 (CUDA only)')
    p.add_argument('--fast', action='store_true', help='channels_last layout also in fp32 (rlfn_arch.fast)')
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
