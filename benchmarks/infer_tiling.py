"""Tiled inference: PSNR-Y gap to untiled on Set14 x4 (official RLFN-S x4 weights, converted) for the
default tile settings and smaller tiles, and the peak resident memory of upscaling a 960x540 image
to 3840x2160 on CPU with and without tiling (each in its own process, peak RSS from the kernel).

    python benchmarks/infer_tiling.py
"""
import os
import resource
import subprocess
import sys
import tempfile

import cv2
import numpy as np
import torch
from _common import SHARED, benchmark_psnr_y, report

import rlfn_arch  # noqa: F401
from rlfn_arch.archs import PRESETS, RLFN
from rlfn_arch.deploy.upscaler import DEFAULT_TILE, DEFAULT_TILE_PAD, tiled_forward


def set14_psnr(net, tile, pad):
    def run(x):
        with torch.inference_mode():
            return tiled_forward(net, torch.from_numpy(x), 4, tile, pad).numpy()
    return benchmark_psnr_y(run, 'Set14')


def peak_rss_mb(tile, ckpt, img, out):
    cmd = [sys.executable, '-m', 'rlfn_arch.infer', '-i', img, '-o', out, '--model_path', ckpt, '--tile', str(tile)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(cmd, check=True, capture_output=True, env=dict(os.environ, OMP_NUM_THREADS='2'))
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(after, before) / 1024  # ru_maxrss of the largest child so far, KiB -> MiB


def main():
    torch.set_num_threads(2)
    rows = []
    official = os.path.join(SHARED, 'weights', 'rlfn_s_x4.pth')
    if os.path.isfile(official):
        from rlfn_arch.archs.rlfn_weights import convert
        net = RLFN(upscale=4, **PRESETS['rlfn_s']).eval()
        net.load_state_dict(convert(official)[0])
        base = set14_psnr(net, 0, 0)
        rows.append({'what': 'Set14 x4 PSNR-Y, untiled', 'value': base})
        for tile, pad in ((DEFAULT_TILE, DEFAULT_TILE_PAD), (64, 16), (48, 8)):
            v = set14_psnr(net, tile, pad)
            rows.append({'what': f'Set14 x4 PSNR-Y, tile {tile} pad {pad}', 'value': v, 'gap_dB': v - base})
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, 'rlfn_s.pth')
        torch.save({'params': RLFN(upscale=4, **PRESETS['rlfn_s']).state_dict()}, ckpt)
        img = os.path.join(tmp, 'in.png')
        rng = np.random.default_rng(0)
        cv2.imwrite(img, cv2.resize((rng.random((68, 120, 3)) * 255).astype(np.uint8), (960, 540)))
        # tiled first: ru_maxrss of children only grows, so the untiled run must come second
        rows.append({'what': f'960x540 -> 3840x2160 peak RSS MB, tile {DEFAULT_TILE}',
                     'value': peak_rss_mb(DEFAULT_TILE, ckpt, img, os.path.join(tmp, 'o1.png'))})
        rows.append({'what': '960x540 -> 3840x2160 peak RSS MB, untiled',
                     'value': peak_rss_mb(0, ckpt, img, os.path.join(tmp, 'o2.png'))})
    report('infer_tiling', rows, ['what', 'value', 'gap_dB'])


if __name__ == '__main__':
    main()
