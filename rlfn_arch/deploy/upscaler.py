"""Upscaling images of any size with bounded memory: tiles blended with linear ramps, streamed into the
output in its final dtype. :class:`Upscaler` takes numpy images as OpenCV reads them (grey, BGR, BGRA;
8 or 16 bit)."""
import os

import cv2
import numpy as np
import torch

DEFAULT_TILE = 128
DEFAULT_TILE_PAD = 16


class ImageTooLargeError(ValueError):
    """An image whose upscaled output would not fit the memory budget."""


class NonFiniteOutputError(ValueError):
    """The network produced NaN or Inf."""


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

    def __init__(self, net, scale, device, tile=DEFAULT_TILE, tile_pad=DEFAULT_TILE_PAD, max_memory=None):
        self.net, self.scale, self.device = net, scale, device
        self.tile, self.tile_pad = tile, tile_pad
        self.max_memory = default_memory_budget() if max_memory is None else max_memory

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
