"""`infer` on a folder of differently sized images, end to end (first call and compile time included):
is ``torch.compile`` worth it there? Set14 x4 LR (14 images, 14 sizes) with the official RLFN-S x4
weights when ../shared is present, else the sample dataset's held-out LR images with random weights.

    python benchmarks/infer_folder.py [--threads 2] [--folder DIR]

Every row runs the whole folder once, in a fresh wrapper, through ``Upscaler`` (what ``infer`` calls:
tiles of 128 with 16 pixels of overlap, uint8 in and out), and reports the total seconds, the ratio to eager
fp32 NCHW and the largest pixel difference to it. Rows: eager fp32 (NCHW), the fast path eager
(channels_last) in fp32 and bf16 (bf16 is emulated, and slow, on CPUs without AVX512_BF16/AMX; see
``native_bf16``), ``torch.compile`` once per input shape (what compiling each image costs; torch stops
recompiling after its recompile limit and runs those shapes eagerly), and the time to compile one fixed
shape (a padded 160x160 tile), which is the least any compiled path pays before its first output. Compile
times are cold (a fresh inductor cache, as on a first run) unless ``--warm_cache``. Writes
results/infer_folder.json.
"""
import argparse
import os
import tempfile
import time

import cv2
import numpy as np
import torch
from _common import SHARED, report

import rlfn_arch  # noqa: F401
from rlfn_arch.archs import PRESETS, RLFN
from rlfn_arch.deploy.fast import optimize_for_inference
from rlfn_arch.deploy.upscaler import DEFAULT_TILE, DEFAULT_TILE_PAD, Upscaler
from rlfn_arch.utils.precision import native_bf16

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def network():
    """RLFN-S x4 in [0, 1]: the official weights when available (else random ones) and where they came from."""
    torch.manual_seed(0)
    net = RLFN(upscale=4, **PRESETS['rlfn_s']).eval()
    official = os.path.join(SHARED, 'weights', 'rlfn_s_x4.pth')
    if os.path.isfile(official):
        from rlfn_arch.archs.rlfn_weights import convert
        net.load_state_dict(convert(official)[0])
        return net, 'official RLFN-S x4'
    return net, 'RLFN-S x4, random weights'


def folder_images(folder):
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(('.png', '.jpg', '.bmp')))
    return [cv2.imread(os.path.join(folder, n), cv2.IMREAD_UNCHANGED) for n in names]


def run_folder(net, images):
    """Seconds for the whole folder and the outputs."""
    up = Upscaler(net, 4, torch.device('cpu'))
    t = time.perf_counter()
    outs = [up.upscale(img) for img in images]
    return time.perf_counter() - t, outs


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--folder', default=None, help='LR images (default: Set14 x4 LR, else the sample held-out LR)')
    p.add_argument('--warm_cache', action='store_true', help="keep inductor's on-disk cache (default: a fresh one, "
                   'so compile times are what a first run pays)')
    args = p.parse_args()
    if not args.warm_cache:  # must be set before the first compile
        os.environ['TORCHINDUCTOR_CACHE_DIR'] = tempfile.mkdtemp(prefix='inductor_cold_')
    torch.set_num_threads(args.threads)
    folder = args.folder or os.path.join(SHARED, 'datasets', 'Set14', 'LR_bicubic', 'X4')
    if not os.path.isdir(folder):
        folder = os.path.join(REPO, 'datasets', 'sample', 'val', 'LR_bicubic', 'X4')
    images = folder_images(folder)
    shapes = sorted({img.shape[:2] for img in images})
    net, weights = network()
    print(f'{len(images)} images, {len(shapes)} sizes, {weights}')
    paths = {
        'eager fp32 NCHW': lambda: net,
        'fast path fp32 (channels_last, eager)': lambda: optimize_for_inference(net, precision='fp32'),
        'fast path bf16 (channels_last, eager)': lambda: optimize_for_inference(net, precision='bf16'),
        'compile per input shape, fp32': lambda: optimize_for_inference(net, precision='fp32', compile=True),
    }
    rows, ref, base = [], None, None
    for name, make in paths.items():
        torch._dynamo.reset()  # no compiled code or recompile count carried over from another row
        seconds, outs = run_folder(make(), images)
        ref = ref or outs
        base = base or seconds
        diff = max(int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) for a, b in zip(ref, outs))
        rows.append({'path': name, 'folder_s': round(seconds, 2), 'x_eager': round(base / seconds, 2),
                     'max_pixel_diff': diff})
        print(rows[-1], flush=True)
    side = DEFAULT_TILE + 2 * DEFAULT_TILE_PAD
    torch._dynamo.reset()
    compiled = optimize_for_inference(net, precision='fp32', compile=True)
    x = torch.rand(1, 3, side, side)
    t = time.perf_counter()
    compiled(x)
    first = time.perf_counter() - t
    t = time.perf_counter()
    compiled(x)
    rows.append({'path': f'compile one fixed {side}x{side} tile shape: first call only', 'folder_s': round(first, 2),
                 'x_eager': round(base / first, 2), 'max_pixel_diff': None,
                 'steady_ms_per_tile': round((time.perf_counter() - t) * 1000, 1)})
    print(rows[-1], flush=True)
    report('infer_folder', rows, ['path', 'folder_s', 'x_eager', 'max_pixel_diff', 'steady_ms_per_tile'],
           {'threads': args.threads, 'folder': os.path.relpath(folder, REPO), 'images': len(images),
            'sizes': len(shapes), 'weights': weights, 'inductor_cache': 'warm' if args.warm_cache else 'cold',
            'native_bf16': native_bf16('cpu'), 'torch': torch.__version__})


if __name__ == '__main__':
    main()
