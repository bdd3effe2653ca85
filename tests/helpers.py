"""Shared test helpers (imported as ``from helpers import ...``; tests/conftest.py puts this folder on the path).

``run_module`` runs an entry point the way a user would, in this process: ``main(argv)`` with stdout and
stderr captured, the working directory and environment as given, and SystemExit mapped to the exit code.
``run_module(..., subprocess=True)`` starts a real interpreter instead, for the few tests where the
process boundary is the point (a console script, an interpreter that imports nothing first).
"""
import contextlib
import glob
import hashlib
import importlib
import io
import os
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch
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


def run_module(module, *args, cwd=None, env=None, timeout=600, check=True, subprocess=False):
    """Run ``python -m module args``; returns a CompletedProcess (text) with ``returncode``, ``stdout``, ``stderr``.

    In this process by default (``main(argv)``: no interpreter start, no torch import per call); a real
    ``python -m`` process with ``subprocess=True``.
    """
    argv = [str(a) for a in args]
    proc = _run_subprocess(module, argv, cwd, env, timeout) if subprocess else _run_in_process(module, argv, cwd, env)
    if check and proc.returncode != 0:
        raise AssertionError(f'{module} {args} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\n'
                             f'stderr:\n{proc.stderr[-4000:]}')
    return proc


def _run_subprocess(module, argv, cwd, env, timeout):
    e = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    e.update(env or {})
    return subprocess.run([sys.executable, '-m', module, *argv], cwd=cwd or REPO, env=e, text=True,
                          capture_output=True, timeout=timeout)


def _run_in_process(module, argv, cwd, env):
    out, err = io.StringIO(), io.StringIO()
    old_cwd, old_env = os.getcwd(), dict(os.environ)
    try:
        os.chdir(cwd or REPO)
        os.environ.update(env or {})
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = importlib.import_module(module).main(argv)
            except SystemExit as e:  # argparse errors and --help
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(old_env)
    return subprocess.CompletedProcess([module, *argv], rc or 0, out.getvalue(), err.getvalue())


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
    side = 80 - 80 % scale  # HR divisible by the scale (x3: 78)
    hr, lr = make_pairs(str(tmp_path / 'data'), n=6, size=(side, side), scale=scale)
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


def tiny_test_options(tmp_path, name, path, model_type='WarmStartModel', metrics=None):
    """A test option file (python -m rlfn_arch.test) for the tiny x4 RLFN on one or two tiny pairs; returns its
    path. ``path``: its ``path`` section (``root`` is set to ``tmp_path``)."""
    hr, lr = make_pairs(str(tmp_path / 'set'), n=2, size=(64, 64), scale=4)
    opt = {'name': name, 'model_type': model_type, 'scale': 4, 'num_gpu': 0,
           'datasets': {'test_1': {'name': 't', 'type': 'PairedImageDataset', 'dataroot_gt': hr, 'dataroot_lq': lr,
                                   'filename_tmpl': '{}x4', 'io_backend': {'type': 'disk'}}},
           'network_g': {'type': 'RLFN', 'upscale': 4, 'feature_channels': 8, 'mid_channels': 8, 'num_blocks': 1},
           'path': {'root': str(tmp_path), **path},
           'val': {'save_img': False, **({'metrics': metrics} if metrics else {})}}
    out = tmp_path / f'{name}.yml'
    out.write_text(yaml.safe_dump(opt))
    return out


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


def start_training_and_kill_at(yml, target, settle=0.0, timeout=240, args=()):
    """Start ``python -m rlfn_arch.train -opt yml *args``, SIGKILL it once ``target`` exists (after ``settle``
    seconds). Returns True when it was killed there (False: it ended or timed out first)."""
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    p = subprocess.Popen([sys.executable, '-m', 'rlfn_arch.train', '-opt', str(yml), *args], cwd=REPO, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not os.path.exists(target) and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    reached = os.path.exists(target)
    time.sleep(settle)
    p.send_signal(signal.SIGKILL)
    p.wait()
    return reached


def snapshot(root):
    """{relative path: sha256} of every file under ``root`` (links recorded as their target)."""
    out = {}
    for d, dirs, files in os.walk(root):
        for name in files + [x for x in dirs if os.path.islink(os.path.join(d, x))]:
            full = os.path.join(d, name)
            rel = os.path.relpath(full, root)
            out[rel] = 'link:' + os.readlink(full) if os.path.islink(full) else \
                hashlib.sha256(open(full, 'rb').read()).hexdigest()
    return out


def edit(yml, fn):
    opt = yaml.safe_load(yml.read_text())
    fn(opt)
    yml.write_text(yaml.safe_dump(opt, sort_keys=False))
    return yml


# ----------------------------------------------------------------------------------------- names
def train_main(*args):
    """``python -m rlfn_arch.train`` in this process (fast: no interpreter start); returns the exit code."""
    from rlfn_arch import train
    return train.main([str(a) for a in args])


# --------------------------------------------------------------------------------------- inference
def tiny_ckpt(path, nan=False, scale=2):
    from rlfn_arch.archs.rlfn_arch import RLFN
    torch.manual_seed(0)
    net = RLFN(upscale=scale, feature_channels=8, mid_channels=8, num_blocks=1)
    sd = net.state_dict()
    if nan:
        sd['block_1.c1_r.weight'][0, 0, 0, 0] = float('nan')
    torch.save({'params': sd}, path)
    return path


def random_images(folder, sizes):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        cv2.imwrite(os.path.join(folder, f'im{i}.png'), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


# ----------------------------------------------------------------------------------- corrupt data
def truncate(path, keep=0.6):
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:int(len(data) * keep)])


def corrupt_middle(path):
    """Damage compressed data but keep the header and the end marker (the cheap check cannot see it)."""
    data = bytearray(open(path, 'rb').read())
    for i in range(60, len(data) - 20):
        data[i] ^= 0x5A
    open(path, 'wb').write(bytes(data))


def lmdb_options(tmp_path, names=None):
    """tiny_options on LMDBs built by our own prepare command; returns (yml, hr_lmdb, lr_lmdb)."""
    yml, _ = tiny_options(tmp_path, stage_iters=(2, 1, 1))
    hr_dir, lr_dir = tmp_path / 'data' / 'HR', tmp_path / 'data' / 'LR_bicubic' / 'X4'
    for i, new in enumerate(names or []):  # LR names equal to the HR names, as sub-images are
        os.rename(hr_dir / f'img{i}.png', hr_dir / new)
        os.rename(lr_dir / f'img{i}x4.png', lr_dir / f'tmp{i}.png')
    for f in os.listdir(lr_dir):
        if f.startswith('img'):
            os.rename(lr_dir / f, lr_dir / f.replace('x4', ''))
    for i, new in enumerate(names or []):
        os.rename(lr_dir / f'tmp{i}.png', lr_dir / new)
    hr_db, lr_db = tmp_path / 'hr.lmdb', tmp_path / 'lr.lmdb'
    run_module('rlfn_arch.prepare', 'lmdb', '--input', hr_dir, '--output', hr_db, '--workers', '1')
    run_module('rlfn_arch.prepare', 'lmdb', '--input', lr_dir, '--output', lr_db, '--workers', '1')

    def to_lmdb(o):
        o['datasets']['train'].update(dataroot_gt=str(hr_db), dataroot_lq=str(lr_db), io_backend={'type': 'lmdb'})
        o['datasets']['train'].pop('filename_tmpl')
        o['datasets'].pop('val')  # its folders were renamed above
    edit(yml, to_lmdb)
    return yml, hr_db, lr_db


# -------------------------------------------------------------------------------------- full disk
def limit_file_size(limit):
    def preexec():
        import resource
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec
