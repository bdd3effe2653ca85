"""Helpers shared by the benchmark scripts: a results folder, JSON output and a markdown table."""
import json
import os

import numpy as np

from rlfn_arch.utils.fs import atomic_write
from rlfn_arch.utils.report import cpu_name, format_table

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '..', 'shared')
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')


def hardware():
    return f'{cpu_name()}, {len(os.sched_getaffinity(0))} cores available'


def report(name, rows, columns, extra=None):
    """Print ``rows`` (dicts) as a table and write them with ``extra`` to results/<name>.json."""
    print(format_table(rows, columns))
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f'{name}.json')
    atomic_write(path, lambda f: json.dump({'hardware': hardware(), 'rows': rows, **(extra or {})}, f, indent=1),
                 binary=False)
    print(f'hardware: {hardware()}\nwrote {path}')


def benchmark_psnr_y(run, set_name, scale=4):
    """Mean PSNR-Y (border = scale) of ``run`` on ``../shared/datasets/<set_name>``, or None when absent.

    ``run``: RGB float32 numpy (1, 3, h, w) in [0, 1] -> the same at the upscaled size."""
    import cv2

    from basicsr.metrics import calculate_psnr
    root = os.path.join(SHARED, 'datasets', set_name)
    if not os.path.isdir(root):
        return None
    vals = []
    for name in sorted(os.listdir(os.path.join(root, 'HR'))):
        stem = os.path.splitext(name)[0]
        hr = cv2.imread(os.path.join(root, 'HR', name))
        lr = cv2.imread(os.path.join(root, 'LR_bicubic', f'X{scale}', f'{stem}x{scale}.png'))
        x = np.ascontiguousarray(lr[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255)
        y = np.clip(np.asarray(run(x))[0].transpose(1, 2, 0)[:, :, ::-1], 0, 1)
        sr = (y * 255).round().astype(np.uint8)
        vals.append(calculate_psnr(sr, hr[:sr.shape[0], :sr.shape[1]], crop_border=scale, test_y_channel=True))
    return float(np.mean(vals))
