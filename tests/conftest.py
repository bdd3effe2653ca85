import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

import rlfn_arch  # noqa: F401

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get('RLFN_SHARED', os.path.join(os.path.dirname(REPO), 'shared'))
OFFICIAL = ['rlfn_x2', 'rlfn_x4', 'rlfn_s_x2', 'rlfn_s_x4', 'rlfn_ntire_x4', 'team04_rlfn']


def shared_path(*parts):
    path = os.path.join(SHARED, *parts)
    if not os.path.exists(path):
        pytest.skip(f'{path} not available (the ../shared folder with official weights and benchmark sets is '
                    'only present in the development checkout)')
    return path


def run_module(module, *args, cwd=None, env=None, timeout=600, check=True):
    """Run ``python -m module args`` the way a user would; returns CompletedProcess (text)."""
    e = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    e.update(env or {})
    proc = subprocess.run([sys.executable, '-m', module, *map(str, args)], cwd=cwd or REPO, env=e, text=True,
                          capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'{module} {args} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\n'
                             f'stderr:\n{proc.stderr[-4000:]}')
    return proc


def make_pairs(root, n=4, size=(64, 48), scale=4, seed=0, lr_tmpl='{}x{s}'):
    """Tiny HR/LR folders (random smooth images) in the benchmark layout; returns (hr_dir, lr_dir)."""
    from rlfn_arch.data.matlab_resize import bicubic_lr
    rng = np.random.default_rng(seed)
    hr_dir, lr_dir = os.path.join(root, 'HR'), os.path.join(root, 'LR_bicubic', f'X{scale}')
    os.makedirs(hr_dir, exist_ok=True)
    os.makedirs(lr_dir, exist_ok=True)
    for i in range(n):
        base = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3)).astype(np.uint8)
        hr = cv2.resize(base, size, interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(os.path.join(hr_dir, f'img{i}.png'), hr)
        cv2.imwrite(os.path.join(lr_dir, lr_tmpl.format(f'img{i}', s=scale) + '.png'), bicubic_lr(hr, scale))
    return hr_dir, lr_dir
