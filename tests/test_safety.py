"""Hostile and unlucky inputs never lose data (issue: names as paths, concurrent runs, in-place inference,
non-finite weights, unbounded memory, corrupt data, alias bombs, full disks, kills).

Each test builds the hostile case on tiny data, runs the real entry point, and checks the documented
behaviour: a clear error naming the file, key or value, the right exit code, and every file the run did
not create left byte for byte as it was.
"""
import glob
import hashlib
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, make_pairs, run_module, start_training_and_kill_at, tiny_options

from rlfn_arch.utils.checkpoint import safe_load


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


def victims(tmp_path):
    """Folders a bad name could hit: a sibling experiment, the experiments root, a folder outside."""
    for d in ('experiments/other_run/models', 'outside/keep'):
        os.makedirs(tmp_path / d, exist_ok=True)
        (tmp_path / d / 'precious.pth').write_bytes(os.urandom(256))
    return snapshot(tmp_path / 'experiments'), snapshot(tmp_path / 'outside')


# ----------------------------------------------------------------------------------------- names
def train_main(*args):
    """``python -m rlfn_arch.train`` in this process (fast: no interpreter start); returns the exit code."""
    from rlfn_arch import train
    return train.main([str(a) for a in args])


BAD_NAMES = [('name', '..'), ('name', '.'), ('name', '../outside'), ('name', 'ABS'), ('name', 'a/b'),
             ('name', None), ('stage', '..'), ('stage', '.'), ('stage', '../../outside'), ('stage', '.hidden')]


def test_unsafe_names_are_refused_before_anything_touches_the_disk(tmp_path, capsys):
    yml, _ = tiny_options(tmp_path, stage_iters=(1, 1, 1))
    before_exp, before_out = victims(tmp_path)
    for where, bad in BAD_NAMES:
        bad = str(tmp_path / 'outside') if bad == 'ABS' else bad

        def setname(o):
            if where == 'name':
                o['name'] = bad
            else:
                o['stages'][1]['name'] = bad
        edit(yml, setname)
        for resume in ([], ['--auto_resume']):
            rc = train_main('-opt', yml, *resume)
            err = capsys.readouterr().err
            assert rc == 2 and 'name' in err and 'intact' not in err, (where, bad, err)
            assert snapshot(tmp_path / 'experiments') == before_exp, (where, bad)
            assert snapshot(tmp_path / 'outside') == before_out, (where, bad)
        yml, _ = tiny_options(tmp_path, stage_iters=(1, 1, 1))


def test_a_stage_folder_that_links_outside_is_never_emptied(tmp_path):
    """Defence in depth: a valid name whose folder is a symbolic link out of the experiment."""
    yml, exp = tiny_options(tmp_path, stage_iters=(1, 1, 1))
    _, before_out = victims(tmp_path)
    os.makedirs(exp)
    os.symlink(tmp_path / 'outside' / 'keep', exp / 's1')
    proc = run_module('rlfn_arch.train', '-opt', yml, '--auto_resume', check=False)
    assert proc.returncode == 2
    assert 'refusing' in proc.stderr and 'not inside' in proc.stderr and 'intact' not in proc.stderr
    assert snapshot(tmp_path / 'outside') == before_out


def test_guarded_delete_and_rename_refuse_paths_outside_the_owner(tmp_path):
    from rlfn_arch.utils.fs import UnsafePathError, remove_inside, rename_inside
    owner, outside = tmp_path / 'owner', tmp_path / 'outside'
    (owner / 'sub').mkdir(parents=True)
    outside.mkdir()
    (outside / 'f').write_text('keep')
    os.symlink(outside, owner / 'link')
    for path in (outside, owner, owner / '..', owner / 'link' / 'f', owner / 'sub' / '..' / '..' / 'outside'):
        with pytest.raises(UnsafePathError):
            remove_inside(path, owner)
    with pytest.raises(UnsafePathError):
        rename_inside(owner / 'sub', outside / 'moved', owner)
    remove_inside(owner / 'link', owner)  # the link itself goes, its target stays
    assert (outside / 'f').read_text() == 'keep' and not os.path.lexists(owner / 'link')
    remove_inside(owner / 'sub', owner)
    assert not (owner / 'sub').exists()


# ----------------------------------------------------------------------------------- one run only
def test_a_second_run_with_the_same_name_is_refused_while_the_first_completes(tmp_path):
    yml, exp = tiny_options(tmp_path, stage_iters=(800, 1, 1), save_freq=400)
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    first = subprocess.Popen([sys.executable, '-m', 'rlfn_arch.train', '-opt', str(yml)], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not glob.glob(str(exp / 's1' / 'train_*.log')) and time.time() < deadline and first.poll() is None:
        time.sleep(0.05)
    assert first.poll() is None, 'the first run ended before the second could start'
    second = run_module('rlfn_arch.train', '-opt', yml, check=False)
    assert second.returncode == 2
    assert 'in use' in second.stderr and f'PID {first.pid}' in second.stderr
    assert first.poll() is None, 'the first run must still be running when the second is refused'
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert not glob.glob(str(tmp_path / 'experiments' / 'tiny_archived_*'))  # the second archived nothing
    assert (exp / 'net_g_final.pth').is_file()
    assert safe_load(exp / 's1' / 'models' / 'net_g_latest.pth')['params']
    # the lock went with the process: a third run (resume) proceeds
    run_module('rlfn_arch.train', '-opt', yml, '--auto_resume')


def test_the_lock_is_released_when_its_holder_is_killed(tmp_path):
    from rlfn_arch.utils.fs import ExperimentLock, LockedError
    code = ('import sys, time; sys.path.insert(0, %r); from rlfn_arch.utils.fs import ExperimentLock; '
            'ExperimentLock(%r, "x").acquire(); print("locked", flush=True); time.sleep(60)') % (REPO, str(tmp_path))
    holder = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == 'locked'
    with pytest.raises(LockedError, match=f'PID {holder.pid}'):
        ExperimentLock(str(tmp_path), 'x').acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    ExperimentLock(str(tmp_path), 'x').acquire().release()


# --------------------------------------------------------------------------------------- inference
def _tiny_ckpt(path, nan=False, scale=2):
    from rlfn_arch.archs.rlfn_arch import RLFN
    torch.manual_seed(0)
    net = RLFN(upscale=scale, feature_channels=8, mid_channels=8, num_blocks=1)
    sd = net.state_dict()
    if nan:
        sd['block_1.c1_r.weight'][0, 0, 0, 0] = float('nan')
    torch.save({'params': sd}, path)
    return path


def _images(folder, sizes):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        cv2.imwrite(os.path.join(folder, f'im{i}.png'), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_infer_refuses_to_write_over_its_inputs(tmp_path):
    ckpt = _tiny_ckpt(tmp_path / 'net.pth')
    _images(tmp_path / 'imgs', [(20, 16), (18, 18)])
    before = snapshot(tmp_path / 'imgs')
    proc = run_module('rlfn_arch.infer', '-i', tmp_path / 'imgs', '-o', tmp_path / 'imgs', '--model_path', ckpt,
                      check=False)
    assert proc.returncode == 2 and 'would overwrite the input' in proc.stderr and '--suffix' in proc.stderr
    assert snapshot(tmp_path / 'imgs') == before
    single = tmp_path / 'imgs' / 'im0.png'
    proc = run_module('rlfn_arch.infer', '-i', single, '-o', single, '--model_path', ckpt, check=False)
    assert proc.returncode == 2 and snapshot(tmp_path / 'imgs') == before
    # with a suffix the same folder is fine, and the inputs stay untouched
    run_module('rlfn_arch.infer', '-i', tmp_path / 'imgs', '-o', tmp_path / 'imgs', '--model_path', ckpt,
               '--suffix', 'x2')
    after = snapshot(tmp_path / 'imgs')
    assert {k: after[k] for k in before} == before
    assert sorted(after) == ['im0.png', 'im0_x2.png', 'im1.png', 'im1_x2.png']


def test_nan_weights_are_refused_by_every_entry_point(tmp_path):
    bad = _tiny_ckpt(tmp_path / 'nan.pth', nan=True)
    _images(tmp_path / 'imgs', [(20, 16)])
    checks = [
        ('rlfn_arch.convert', ['--input', bad, '--output', tmp_path / 'c.pth', '--input_range', '1']),
        ('rlfn_arch.infer', ['-i', tmp_path / 'imgs', '-o', tmp_path / 'out', '--model_path', bad]),
        ('rlfn_arch.export', ['--model_path', bad, '--output', tmp_path / 'm.onnx']),
        ('rlfn_arch.benchmark', ['--model_path', bad, '--size', '16', '16', '--runs', '1', '--warmup', '0']),
    ]
    for module, args in checks:
        proc = run_module(module, *args, check=False)
        assert proc.returncode == 2, (module, proc.stdout, proc.stderr)
        assert 'block_1.c1_r.weight' in proc.stderr and 'non-finite' in proc.stderr, module
    assert not os.path.exists(tmp_path / 'c.pth') and not os.path.exists(tmp_path / 'out')
    assert not os.path.exists(tmp_path / 'm.onnx')


def test_nan_pretrain_weights_are_refused_for_training_and_testing_before_any_folder(tmp_path):
    yml, exp = tiny_options(tmp_path / 'run', stage_iters=(1, 1, 1))
    (tmp_path / 'run').mkdir(exist_ok=True)
    bad = _tiny_ckpt(tmp_path / 'nan.pth', nan=True, scale=4)
    edit(yml, lambda o: o['path'].update(pretrain_network_g=str(bad)))
    os.makedirs(exp)
    (exp / 'old.txt').write_text('previous run')
    proc = run_module('rlfn_arch.train', '-opt', yml, check=False)
    assert proc.returncode == 2 and 'block_1.c1_r.weight' in proc.stderr
    assert (exp / 'old.txt').read_text() == 'previous run'  # nothing archived
    assert not glob.glob(str(tmp_path / 'run' / 'experiments' / 'tiny_archived_*'))
    # a checkpoint that does not fit the network is refused the same way
    _tiny_ckpt(tmp_path / 'x2.pth', scale=2)
    edit(yml, lambda o: o['path'].update(pretrain_network_g=str(tmp_path / 'x2.pth')))
    proc = run_module('rlfn_arch.train', '-opt', yml, check=False)
    assert proc.returncode == 2 and 'does not fit network_g' in proc.stderr
    # python -m rlfn_arch.test
    hr, lr = make_pairs(str(tmp_path / 'set'), n=1, size=(64, 64), scale=4)
    test_opt = {'name': 'nan_test', 'model_type': 'WarmStartModel', 'scale': 4, 'num_gpu': 0,
                'datasets': {'test_1': {'name': 't', 'type': 'PairedImageDataset', 'dataroot_gt': hr,
                                        'dataroot_lq': lr, 'filename_tmpl': '{}x4', 'io_backend': {'type': 'disk'}}},
                'network_g': {'type': 'RLFN', 'upscale': 4, 'feature_channels': 8, 'mid_channels': 8,
                              'num_blocks': 1},
                'path': {'root': str(tmp_path), 'pretrain_network_g': str(bad), 'strict_load_g': True},
                'val': {'save_img': False}}
    (tmp_path / 'test.yml').write_text(yaml.safe_dump(test_opt))
    proc = run_module('rlfn_arch.test', '-opt', tmp_path / 'test.yml', check=False)
    assert proc.returncode == 2 and 'block_1.c1_r.weight' in proc.stderr


def test_export_check_treats_nan_as_a_failure(tmp_path):
    from rlfn_arch.archs.rlfn_arch import RLFN
    from rlfn_arch.deploy.onnx import check_onnx, export_onnx
    torch.manual_seed(0)
    net = RLFN(upscale=2, feature_channels=8, mid_channels=8, num_blocks=1).eval()
    export_onnx(net, str(tmp_path / 'm.onnx'))
    with torch.no_grad():
        net.conv_2.bias.fill_(float('nan'))  # PyTorch side now gives NaN, ONNX side finite
    diffs = check_onnx(net, str(tmp_path / 'm.onnx'), sizes=[(16, 16)])
    assert diffs[0][2] == float('inf') and not diffs[0][2] <= 1e-4


def test_infer_refuses_nonfinite_output_and_writes_nothing(tmp_path):
    from rlfn_arch.archs.rlfn_arch import RLFN
    from rlfn_arch.deploy.upscaler import NonFiniteOutputError, Upscaler
    net = RLFN(upscale=2, feature_channels=8, mid_channels=8, num_blocks=1).eval()
    with torch.no_grad():
        net.conv_2.bias.fill_(float('inf'))
    with pytest.raises(NonFiniteOutputError):
        Upscaler(net, 2, torch.device('cpu')).upscale(np.zeros((20, 20, 3), np.uint8))


def test_large_image_is_refused_before_decoding_and_the_next_image_still_runs(tmp_path):
    ckpt = _tiny_ckpt(tmp_path / 'net.pth')
    os.makedirs(tmp_path / 'imgs')
    # a 6000x6000 PNG of one colour: ~100 KB on disk, 864 MB at x2 as uint8 RGB
    cv2.imwrite(str(tmp_path / 'imgs' / 'a_huge.png'), np.zeros((6000, 6000, 3), np.uint8))
    cv2.imwrite(str(tmp_path / 'imgs' / 'b_small.png'), np.full((20, 24, 3), 128, np.uint8))
    proc = run_module('rlfn_arch.infer', '-i', tmp_path / 'imgs', '-o', tmp_path / 'out', '--model_path', ckpt,
                      '--max_memory', '0.5', check=False)
    assert proc.returncode == 1
    assert 'a_huge.png' in proc.stderr and 'memory budget' in proc.stderr
    assert sorted(os.listdir(tmp_path / 'out')) == ['b_small.png']
    assert cv2.imread(str(tmp_path / 'out' / 'b_small.png')).shape == (40, 48, 3)


def test_an_allocation_failure_is_reported_and_the_next_image_still_runs(tmp_path, monkeypatch, capsys):
    from rlfn_arch import infer
    ckpt = _tiny_ckpt(tmp_path / 'net.pth')
    _images(tmp_path / 'imgs', [(20, 16), (18, 18)])
    real = infer.Upscaler.upscale
    calls = []

    def first_fails(self, img):  # what torch raises when the CPU allocator cannot serve a request
        calls.append(img.shape)
        if len(calls) == 1:
            raise RuntimeError('[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can\'t allocate memory')
        return real(self, img)

    monkeypatch.setattr(infer.Upscaler, 'upscale', first_fails)
    rc = infer.main(['-i', str(tmp_path / 'imgs'), '-o', str(tmp_path / 'out'), '--model_path', str(ckpt)])
    err = capsys.readouterr().err
    assert rc == 1 and 'im0.png' in err and "can't allocate memory" in err
    assert os.listdir(tmp_path / 'out') == ['im1.png']


def _blend_on_full_canvas(net, x, s, tile, pad):
    """Reference: every padded tile blended with linear ramps on a full-size float canvas (what infer did
    before streaming; written out here independently of the library)."""
    _, c, h, w = x.shape

    def ramp(n, lo, hi):
        r = np.ones(n, np.float32)
        k = pad * s
        up = (np.arange(k, dtype=np.float32) + 0.5) / k
        if lo:
            r[:k] = np.minimum(r[:k], up[:n])
        if hi:
            r[-k:] = np.minimum(r[-k:], up[::-1][-min(n, k):])
        return r
    out, wsum = torch.zeros(c, h * s, w * s), torch.zeros(1, h * s, w * s)
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            ya, yb, xa, xb = max(0, y0 - pad), min(h, y0 + tile + pad), max(0, x0 - pad), min(w, x0 + tile + pad)
            wt = torch.from_numpy(np.outer(ramp((yb - ya) * s, ya > 0, yb < h), ramp((xb - xa) * s, xa > 0, xb < w)))
            out[:, ya * s:yb * s, xa * s:xb * s] += net(x[:, :, ya:yb, xa:xb])[0] * wt
            wsum[:, ya * s:yb * s, xa * s:xb * s] += wt
    return out / wsum


def test_streamed_tiles_equal_full_canvas_blending_and_hold_one_band(tmp_path):
    from rlfn_arch.archs.rlfn_arch import RLFN
    from rlfn_arch.deploy.upscaler import tiled_rows
    torch.manual_seed(0)
    net = RLFN(upscale=2, feature_channels=8, mid_channels=8, num_blocks=1).eval()
    x = torch.rand(1, 3, 150, 70)
    with torch.no_grad():
        ref = _blend_on_full_canvas(net, x, 2, 32, 8)
        strips = list(tiled_rows(net, x, 2, tile=32, tile_pad=8))
    assert [s[0] for s in strips] == [0] + [s[1] for s in strips[:-1]] and strips[-1][1] == 300
    assert max(s[2].shape[1] for s in strips) <= (32 + 2 * 8) * 2  # never more than one band of rows
    assert torch.allclose(torch.cat([s[2] for s in strips], 1), ref, atol=1e-6)


# ----------------------------------------------------------------------------------- corrupt data
def _truncate(path, keep=0.6):
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:int(len(data) * keep)])


def _corrupt_middle(path):
    """Damage compressed data but keep the header and the end marker (the cheap check cannot see it)."""
    data = bytearray(open(path, 'rb').read())
    for i in range(60, len(data) - 20):
        data[i] ^= 0x5A
    open(path, 'wb').write(bytes(data))


def test_truncated_png_in_a_folder_dataset_fails_before_the_first_iteration(tmp_path):
    yml, exp = tiny_options(tmp_path, stage_iters=(2, 1, 1))
    _truncate(tmp_path / 'data' / 'HR' / 'img3.png')
    proc = run_module('rlfn_arch.train', '-opt', yml, check=False)
    assert proc.returncode == 2 and 'img3.png' in proc.stderr and 'truncated' in proc.stderr
    assert not exp.exists()


def test_a_corrupt_sample_names_its_file_during_training_and_deep_check_finds_it_first(tmp_path):
    yml, exp = tiny_options(tmp_path, stage_iters=(20, 1, 1))
    _corrupt_middle(tmp_path / 'data' / 'LR_bicubic' / 'X4' / 'img2x4.png')
    proc = run_module('rlfn_arch.train', '-opt', yml, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'img2x4.png' in proc.stderr and 'dataset tiny_train' in proc.stderr and 'Traceback' not in proc.stderr
    edit(yml, lambda o: o['datasets']['train'].update(deep_check=True))
    proc = run_module('rlfn_arch.train', '-opt', yml, check=False)
    assert proc.returncode == 2 and 'img2x4.png' in proc.stderr and 'dataset check failed' in proc.stderr
    assert not glob.glob(str(tmp_path / 'experiments' / 'tiny_archived_*'))


def _lmdb_options(tmp_path, names=None):
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


def test_truncated_lmdb_is_named_before_training(tmp_path):
    yml, hr_db, _ = _lmdb_options(tmp_path)
    _truncate(hr_db / 'data.mdb', keep=0.3)
    proc = run_module('rlfn_arch.train', '-opt', yml, check=False)
    assert proc.returncode == 2 and str(hr_db / 'data.mdb') in proc.stderr and 'truncated' in proc.stderr
    assert not (tmp_path / 'experiments' / 'tiny').exists()


def test_meta_info_key_missing_from_the_lmdb_is_named_before_training(tmp_path):
    yml, _, lr_db = _lmdb_options(tmp_path)
    meta = lr_db / 'meta_info.txt'
    hr_meta = (tmp_path / 'hr.lmdb' / 'meta_info.txt')
    meta.write_text(meta.read_text() + 'ghost.png (20,20,3) 1\n')  # listed in both, stored in neither
    hr_meta.write_text(hr_meta.read_text() + 'ghost.png (80,80,3) 1\n')
    proc = run_module('rlfn_arch.train', '-opt', yml, check=False)
    assert proc.returncode == 2 and "'ghost'" in proc.stderr and 'missing from data.mdb' in proc.stderr


def test_lmdb_keys_survive_basicsr_key_derivation_and_non_ascii_names(tmp_path):
    from basicsr.data.data_util import paired_paths_from_lmdb
    names = ['a.b.png', 'ünï côdé.png']
    yml, hr_db, lr_db = _lmdb_options(tmp_path, names)
    keys = {p['gt_path'] for p in paired_paths_from_lmdb([str(lr_db), str(hr_db)], ['lq', 'gt'])}
    assert {'a_b', '_n__c_d_'} <= keys and len(keys) == 6
    proc = run_module('rlfn_arch.prepare', 'check', '--hr', hr_db, '--lr', lr_db, '--scale', '4', '--deep')
    assert '6 HR keys checked' in proc.stdout and '0 problem(s)' in proc.stdout
    run_module('rlfn_arch.train', '-opt', yml)  # basicsr's LMDB reader finds every key
    # two names that would share a key are refused, and nothing is written
    d = tmp_path / 'clash'
    _images(d, [(16, 16), (16, 16)])
    os.rename(d / 'im0.png', d / 'x.y.png')
    os.rename(d / 'im1.png', d / 'x_y.png')
    proc = run_module('rlfn_arch.prepare', 'lmdb', '--input', d, '--output', tmp_path / 'clash.lmdb', check=False)
    assert proc.returncode == 2 and 'x.y.png' in proc.stderr and 'x_y.png' in proc.stderr
    assert not (tmp_path / 'clash.lmdb').exists()


def test_prepare_check_on_lmdbs_checks_them_and_deep_finds_a_corrupt_value(tmp_path):
    import lmdb
    _, hr_db, lr_db = _lmdb_options(tmp_path)
    with lmdb.open(str(lr_db), map_size=1 << 26) as env, env.begin(write=True) as txn:
        txn.put(b'img1', b'\x89PNG\r\n\x1a\n not really')
    proc = run_module('rlfn_arch.prepare', 'check', '--hr', hr_db, '--lr', lr_db, '--scale', '4', check=False)
    assert proc.returncode == 0 and '6 HR keys checked' in proc.stdout
    proc = run_module('rlfn_arch.prepare', 'check', '--hr', hr_db, '--lr', lr_db, '--scale', '4', '--deep',
                      check=False)
    assert proc.returncode == 1 and 'key img1' in proc.stdout
    proc = run_module('rlfn_arch.prepare', 'check', '--hr', hr_db, '--lr', tmp_path / 'data' / 'HR', '--scale', '4',
                      check=False)
    assert proc.returncode == 2 and 'two folders or two LMDBs' in proc.stderr


# ----------------------------------------------------------------------------------------- prepare
def test_prepare_exit_codes_and_bad_paths(tmp_path):
    _images(tmp_path / 'hr', [(24, 24), (24, 24)])
    (tmp_path / 'hr' / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\nnope')
    proc = run_module('rlfn_arch.prepare', 'bicubic', '--hr', tmp_path / 'hr', '--output', tmp_path / 'lr',
                      '--scales', '2', '--workers', '1', check=False)
    assert proc.returncode == 1 and '1 input(s) failed' in proc.stderr and 'broken.png' in proc.stdout
    assert sorted(os.listdir(tmp_path / 'lr' / 'X2')) == ['im0x2.png', 'im1x2.png']
    (tmp_path / 'afile').write_text('x')
    for args in (['bicubic', '--hr', tmp_path / 'hr', '--output', tmp_path / 'afile', '--scales', '2'],
                 ['lmdb', '--input', tmp_path / 'nope', '--output', tmp_path / 'n.lmdb'],
                 ['subimages', '--input', tmp_path / 'hr', '--output', tmp_path / 'afile']):
        proc = run_module('rlfn_arch.prepare', *args, '--workers', '1', check=False)
        assert proc.returncode in (1, 2) and 'Traceback' not in proc.stderr, (args, proc.stderr)
    assert (tmp_path / 'afile').read_text() == 'x'
    empty = tmp_path / 'bad_only'
    empty.mkdir()
    (empty / 'z.png').write_bytes(b'')
    proc = run_module('rlfn_arch.prepare', 'lmdb', '--input', empty, '--output', tmp_path / 'z.lmdb', check=False)
    assert proc.returncode == 2 and 'no readable images' in proc.stderr


# ----------------------------------------------------------------------------------------- options
def test_yaml_alias_bomb_is_refused_in_under_a_second(tmp_path):
    from rlfn_arch.utils.options import OptionError, load_options
    lines = ['a0: &a0 [x, x, x, x, x, x, x, x, x]']
    lines += [f'a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, '
              f'*a{i - 1}]' for i in range(1, 10)]
    bomb = tmp_path / 'bomb.yml'
    bomb.write_text('\n'.join(lines) + '\nname: boom\n')
    assert bomb.stat().st_size < 1200
    t0 = time.time()
    with pytest.raises(OptionError, match='anchor'):
        load_options(str(bomb))
    assert time.time() - t0 < 1.0
    proc = run_module('rlfn_arch.train', '-opt', bomb, check=False, timeout=60)
    assert proc.returncode == 2 and 'not allowed in option files' in proc.stderr


@pytest.mark.parametrize('key,value,message', [
    ('lr', [1], 'train.optim_g.lr: must be a positive number'),
    ('lr', 0, 'train.optim_g.lr: must be a positive number'),
    ('eta_min', -1e-6, 'eta_min: must be >= 0'),
    ('periods', ['a'], 'periods: must be a non-empty list of integers'),
    ('restart_weights', [1, 1], 'restart_weights: has 2 entries for 1 periods'),
    ('name', None, 'name: must be a string'),
])
def test_wrong_types_and_ranges_are_option_errors(tmp_path, capsys, key, value, message):
    yml, exp = tiny_options(tmp_path, stage_iters=(1, 1, 1))

    def change(o):
        if key == 'lr':
            o['train']['optim_g']['lr'] = value
        elif key == 'name':
            o['name'] = value
        else:
            o['train']['scheduler'] = {'type': 'CosineAnnealingRestartLR', 'periods': [10], 'restart_weights': [1],
                                       'eta_min': 1e-7, key: value}
    edit(yml, change)
    assert train_main('-opt', yml) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / 'experiments').exists()


# -------------------------------------------------------------------------------------- full disk
def _limit_file_size(limit):
    def preexec():
        import resource
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def test_a_full_disk_during_a_save_exits_4_naming_the_file(tmp_path):
    """RLIMIT_FSIZE makes every write past 200 KB fail as a full disk does (EFBIG instead of ENOSPC),
    through every layer (torch.save included), without root or a special file system."""
    yml, exp = tiny_options(tmp_path, stage_iters=(4, 1, 1), save_freq=2)
    edit(yml, lambda o: o['network_g'].update(feature_channels=48, mid_channels=48))  # ~1.8 MB checkpoints
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-m', 'rlfn_arch.train', '-opt', str(yml)], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=300, preexec_fn=_limit_file_size(200_000))
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert 'net_g_init.pth' in proc.stderr and 'File too large' in proc.stderr and 'Traceback' not in proc.stderr
    assert not glob.glob(str(exp / '**' / '.*.tmp'), recursive=True)  # no partial file left


# ----------------------------------------------------------------------------------- after a kill
def test_resume_removes_stale_temporaries_and_stages_json_adds_every_segment(tmp_path):
    yml, exp = tiny_options(tmp_path, stage_iters=(2, 300, 1), save_freq=4)
    target = exp / 's2' / 'training_states' / '8.state'
    assert start_training_and_kill_at(yml, target, settle=1.0)
    killed_after = os.path.getmtime(target) - os.path.getmtime(exp / 's1' / 'models' / 'net_g_latest.pth')
    stale = [exp / 's2' / 'models' / '.net_g_12.pth.abc123.tmp', exp / 's2' / 'training_states' / '.12.state.x9.tmp']
    for f in stale:
        f.write_bytes(b'partial')
    assert (exp / 's2' / '.run').is_dir()  # the stage's option file stays inside the experiment
    proc = run_module('rlfn_arch.train', '-opt', yml, '--auto_resume')
    assert not any(f.exists() for f in stale) and 'a write interrupted by the kill' in proc.stdout
    rec = yaml.safe_load((exp / 'stages.json').read_text())['stages']['s2']
    resumed = float(proc.stdout.split('| s2')[1].split('|')[2])  # the summary table's wall seconds
    assert rec["status"] == "done" and rec["seconds"] == pytest.approx(resumed, abs=1)
    assert rec['seconds'] >= killed_after - 1.0  # includes the segment that was killed
    assert not os.listdir(exp / 's2' / '.run')
