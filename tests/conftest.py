import glob
import os
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import yaml

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


def tiny_options(tmp_path, stage_iters=(4, 4, 4), save_freq=2, scale=4, extra_stage2=None):
    """A three-stage option file on tiny data; experiments go under tmp_path (path.root)."""
    hr, lr = make_pairs(str(tmp_path / 'data'), n=6, size=(80, 80), scale=scale)
    opt = {
        'name': 'tiny', 'model_type': 'WarmStartModel', 'scale': scale, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {
            'train': {'name': 'tiny_train', 'type': 'PairedImageDataset', 'dataroot_gt': hr, 'dataroot_lq': lr,
                      'filename_tmpl': '{}x%d' % scale, 'io_backend': {'type': 'disk'}, 'gt_size': 16 * scale,
                      'use_hflip': True, 'use_rot': True, 'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2,
                      'dataset_enlarge_ratio': 1},
            'val': {'name': 'tiny_val', 'type': 'PairedImageDataset', 'dataroot_gt': hr, 'dataroot_lq': lr,
                    'filename_tmpl': '{}x%d' % scale, 'io_backend': {'type': 'disk'}}},
        'network_g': {'type': 'RLFN', 'upscale': scale, 'feature_channels': 8, 'mid_channels': 8, 'num_blocks': 1},
        'path': {'root': str(tmp_path), 'pretrain_network_g': None, 'strict_load_g': True},
        'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5},
                  'total_iter': stage_iters[0], 'warmup_iter': -1,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'val': {'val_freq': 1000, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': scale, 'test_y_channel': True}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': save_freq, 'use_tb_logger': False},
        'stages': [
            {'name': 's1'},
            {'name': 's2', 'train': {'total_iter': stage_iters[1], 'optim_g': {'lr': 5e-4}, **(extra_stage2 or {})}},
            {'name': 's3', 'train': {'total_iter': stage_iters[2], 'contrastive_opt': {
                'type': 'ContrastiveLoss', 'loss_weight': 0.1, 'num_features': 4}}},
        ],
    }
    path = tmp_path / 'tiny.yml'
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return path, tmp_path / 'experiments' / 'tiny'


def logs(stage_dir):
    """Every training log of a stage folder, concatenated."""
    return '\n'.join(open(p).read() for p in sorted(glob.glob(os.path.join(stage_dir, 'train_*.log'))))


def iters_in_log(stage_dir):
    """The iteration numbers the logs of a stage folder report, sorted."""
    return sorted({int(m.replace(',', '')) for m in re.findall(r'iter:\s+([\d,]+)', logs(stage_dir))})


def flatten(d, prefix=''):
    """{'a.b.c': value} for a nested mapping (to compare option dicts key by key)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f'{prefix}{k}.'))
        else:
            out[f'{prefix}{k}'] = v
    return out


def start_training_and_kill_at(yml, target, settle=0.0, timeout=240):
    """Start ``python -m rlfn_arch.train -opt yml``, SIGKILL it once ``target`` exists (after ``settle``
    seconds). Returns True when it was killed there (False: it ended or timed out first)."""
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    p = subprocess.Popen([sys.executable, '-m', 'rlfn_arch.train', '-opt', str(yml)], cwd=REPO, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not os.path.exists(target) and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    reached = os.path.exists(target)
    time.sleep(settle)
    p.send_signal(signal.SIGKILL)
    p.wait()
    return reached
