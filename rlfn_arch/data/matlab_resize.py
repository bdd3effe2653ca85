"""MATLAB-exact bicubic ``imresize`` for uint8 images.

Why not ``basicsr.utils.matlab_functions.imresize``: it computes both 1-D passes in float32 and rounds
once at the end, while MATLAB (which made the benchmark LR files) rounds uint8 images to uint8 after
each pass, with double-precision weights. The two differ by one level on up to ~15% of pixels.
This module follows MATLAB's ``imresize`` for uint8/uint16 input: double weights ("contributions"
with antialiasing), mirror padding, the dimension with the smaller scale first (rows on ties),
round-half-away-from-zero and saturation after every pass.
"""
import math

import numpy as np

from basicsr.utils.matlab_functions import imresize


def _cubic(x):
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def contributions(in_length, out_length, scale, kernel_width=4.0, antialiasing=True):
    """MATLAB's weights and 0-based source indices for one dimension: (out_length, P) each."""
    if scale < 1 and antialiasing:
        kernel = lambda x: scale * _cubic(scale * x)  # noqa: E731
        kernel_width = kernel_width / scale
    else:
        kernel = _cubic
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    p = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(p, dtype=np.float64)[None, :]
    weights = kernel(u[:, None] - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)
    aux = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    indices = aux[np.mod(indices.astype(np.int64) - 1, aux.size)]
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], indices[:, keep]


def _resize_along(img, axis, out_length, scale, antialiasing, dtype):
    weights, indices = contributions(img.shape[axis], out_length, scale, antialiasing=antialiasing)
    src = np.moveaxis(img, axis, 0).astype(np.float64)
    out = np.zeros((out_length, ) + src.shape[1:], dtype=np.float64)
    wshape = (out_length, ) + (1, ) * (src.ndim - 1)
    for k in range(weights.shape[1]):
        out += weights[:, k].reshape(wshape) * src[indices[:, k]]
    info = np.iinfo(dtype)
    out = np.clip(np.floor(out + 0.5), info.min, info.max).astype(dtype)  # MATLAB: round half away, saturate
    return np.moveaxis(out, 0, axis)


def imresize_matlab(img, scale, antialiasing=True):
    """Bicubic resize with MATLAB's uint8/uint16 semantics.

    Args:
        img (ndarray): (H, W) or (H, W, C), dtype uint8 or uint16.
        scale (float): the factor MATLAB gets, e.g. ``1/4`` for ``imresize(img, 1/4)``.
        antialiasing (bool): MATLAB's default True.

    Returns:
        ndarray: (ceil(H*scale), ceil(W*scale)[, C]), same dtype as the input.
    """
    if img.dtype not in (np.uint8, np.uint16):
        raise TypeError(f'imresize_matlab expects a uint8 or uint16 image, got {img.dtype}')
    out_h, out_w = math.ceil(img.shape[0] * scale), math.ceil(img.shape[1] * scale)
    # MATLAB: sort(scale) -> the dimension with the smaller factor first; ties keep rows first
    out = _resize_along(img, 0, out_h, scale, antialiasing, img.dtype)
    return _resize_along(out, 1, out_w, scale, antialiasing, img.dtype)


def modcrop(img, scale):
    """Crop H and W down to multiples of ``scale`` (top-left kept), as MATLAB's modcrop."""
    h, w = img.shape[:2]
    return img[:h - h % scale, :w - w % scale, ...]


def bicubic_lr(hr, scale):
    """``imresize(modcrop(hr, s), 1/s, 'bicubic')``: the benchmark degradation, bit-exact."""
    return imresize_matlab(modcrop(hr, scale), 1 / scale)


def bicubic_upsample(lr, scale):
    """The bicubic baseline: basicsr's MATLAB-style ``imresize`` up by ``scale`` (float math; only the
    downscaling used to make LR files needs the per-pass rounding above), rounded to uint8."""
    up = imresize(lr.astype(np.float32) / 255., scale)
    return (np.clip(up, 0, 1) * 255).round().astype(np.uint8)
