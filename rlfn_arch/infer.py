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


def tiled_forward(net, x, scale, tile, tile_pad):
    """Run ``net`` on ``x`` (1, C, H, W) in tiles of ``tile`` LR pixels, each extended by ``tile_pad``
    on every side, and blend the overlaps with linear ramps. ``tile <= 0`` or a small image: one pass."""
    _, c, h, w = x.shape
    if tile <= 0 or (h <= tile and w <= tile):
        return net(x)
    out = torch.zeros(1, c, h * scale, w * scale, dtype=torch.float32)
    weight = torch.zeros(1, 1, h * scale, w * scale, dtype=torch.float32)
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            ya, yb = max(0, y0 - tile_pad), min(h, y0 + tile + tile_pad)
            xa, xb = max(0, x0 - tile_pad), min(w, x0 + tile + tile_pad)
            o = net(x[:, :, ya:yb, xa:xb]).float().cpu()
            wy = _ramp((yb - ya) * scale, ya > 0, yb < h, tile_pad * scale)
            wx = _ramp((xb - xa) * scale, xa > 0, xb < w, tile_pad * scale)
            wt = torch.from_numpy(np.outer(wy, wx))[None, None]
            out[:, :, ya * scale:yb * scale, xa * scale:xb * scale] += o * wt
            weight[:, :, ya * scale:yb * scale, xa * scale:xb * scale] += wt
    return out / weight


class Upscaler:
    """Holds the network and applies it to numpy images (any of the kinds the CLI accepts)."""

    def __init__(self, net, scale, device, tile=DEFAULT_TILE, tile_pad=DEFAULT_TILE_PAD, half=False):
        self.net, self.scale, self.device = net, scale, device
        self.tile, self.tile_pad, self.half = tile, tile_pad, half
        if half:
            if device.type != 'cuda':
                raise ValueError('--half needs a CUDA device (fp16 convolutions are slow or missing on CPU)')
            self.net = self.net.half()

    @torch.inference_mode()
    def _rgb(self, img01):
        """(H, W, 3) float32 RGB in [0,1] -> (sH, sW, 3) float32 in [0,1]."""
        x = torch.from_numpy(np.ascontiguousarray(img01.transpose(2, 0, 1)))[None].to(self.device)
        if self.half:
            x = x.half()
        y = tiled_forward(self.net, x, self.scale, self.tile, self.tile_pad)
        return y[0].float().clamp_(0, 1).cpu().numpy().transpose(1, 2, 0)

    def upscale(self, img):
        """``img`` as read by ``cv2.IMREAD_UNCHANGED``: (H, W) grey, (H, W, 3) BGR or (H, W, 4) BGRA,
        uint8 or uint16. Returns the upscaled image of the same kind and dtype."""
        if img.dtype == np.uint8:
            maxv = 255.0
        elif img.dtype == np.uint16:
            maxv = 65535.0
        else:
            raise ValueError(f'unsupported pixel type {img.dtype}')
        f = img.astype(np.float32) / maxv
        alpha = None
        if f.ndim == 2:
            rgb = np.repeat(f[:, :, None], 3, axis=2)
        elif f.shape[2] == 4:
            rgb, alpha = f[:, :, 2::-1], f[:, :, 3]
        elif f.shape[2] == 3:
            rgb = f[:, :, ::-1]
        else:
            raise ValueError(f'unsupported channel count {f.shape[2]}')
        out = self._rgb(np.ascontiguousarray(rgb))
        if f.ndim == 2:
            out = out.mean(axis=2)  # the three channels are (nearly) equal for a grey input
        else:
            out = out[:, :, ::-1]
            if alpha is not None:
                h, w = out.shape[:2]
                a = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)
                out = np.dstack([out, a])
        return np.clip(np.floor(out * maxv + 0.5), 0, maxv).astype(img.dtype)


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
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f'.{os.path.basename(path)}.{os.getpid()}.tmp')
    try:
        buf.tofile(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def run(args):
    from tqdm import tqdm

    from rlfn_arch.utils.model_io import load_model, pick_device
    device = pick_device(args.device)
    if args.onnx:
        from rlfn_arch.export import OnnxRLFN
        net = OnnxRLFN(args.onnx)
        cfg, device = {'upscale': net.upscale}, torch.device('cpu')
    else:
        net, cfg = load_model(args.model_path, args.opt, input_range=args.input_range, device=device)
    if args.fast and not args.onnx:
        from rlfn_arch.fast import optimize_for_inference
        net = optimize_for_inference(net)
    up = Upscaler(net, cfg['upscale'], device, args.tile, args.tile_pad, args.half)
    files = _inputs(args.input)
    single = not os.path.isdir(args.input)
    t0, failures, done = time.time(), [], 0
    for path in tqdm(files, unit='img', disable=len(files) < 2 or not sys.stderr.isatty()):
        stem, ext = os.path.splitext(os.path.basename(path))
        out_ext = '.' + args.ext.lstrip('.') if args.ext else ext
        if single and os.path.splitext(args.output)[1]:
            out = args.output
        else:
            out = os.path.join(args.output, f'{stem}{"_" + args.suffix if args.suffix else ""}{out_ext}')
        try:
            img = _read(path)
            res = up.upscale(img)
            if res.dtype == np.uint16 and out_ext.lower() not in ('.png', '.tif', '.tiff'):
                res = (res // 257).astype(np.uint8)
            _write(out, res)
            done += 1
        except (ImageReadError, ValueError, OSError, cv2.error) as e:
            failures.append(str(e))
            print(f'failed: {e}', file=sys.stderr)
    dt = time.time() - t0
    print(f'{done} image(s) upscaled x{cfg["upscale"]} in {dt:.1f} s on {device}; {len(failures)} failed')
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
    p.add_argument('--half', action='store_true', help='fp16 (CUDA only)')
    p.add_argument('--fast', action='store_true', help='the fast inference path (rlfn_arch.fast)')
    p.add_argument('--suffix', default='', help='appended to output names, e.g. out')
    p.add_argument('--ext', default=None, help='output format (png, jpg, ...); default: as the input')
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
