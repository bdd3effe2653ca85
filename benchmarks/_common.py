"""Helpers shared by the benchmark scripts: a results folder, JSON output and a markdown table."""
import json
import os
import platform

import numpy as np

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '..', 'shared')
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')


def hardware():
    name = platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            name = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return f'{name}, {len(os.sched_getaffinity(0))} cores available'


def report(name, rows, columns, extra=None):
    """Print ``rows`` (dicts) as a table and write them with ``extra`` to results/<name>.json."""
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print('| ' + ' | '.join(c.ljust(w) for c, w in zip(columns, widths)) + ' |')
    print('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
    for r in rows:
        print('| ' + ' | '.join(_fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths)) + ' |')
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f'{name}.json')
    with open(path, 'w') as f:
        json.dump({'hardware': hardware(), 'rows': rows, **(extra or {})}, f, indent=1)
    print(f'hardware: {hardware()}\nwrote {path}')


def _fmt(v):
    if isinstance(v, float):
        return f'{v:.4g}'
    return '-' if v is None else str(v)


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
