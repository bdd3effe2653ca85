"""Hostile and unlucky inputs never lose data: training (names, links, bad weights, corrupt data).
(The hostile case on tiny data, the real entry point, the documented exit code and message, and every
file the run did not create left as it was: the pattern of all the safety tests.)"""
import glob
import os

import torch
from helpers import (
    corrupt_middle,
    edit,
    lmdb_options,
    run_module,
    snapshot,
    tiny_ckpt,
    tiny_options,
    tiny_test_options,
    train_main,
    truncate,
)

from rlfn_arch.archs import RLFN


def victims(tmp_path):
    """Folders a bad name could hit: a sibling experiment, the experiments root, a folder outside."""
    for d in ('experiments/other_run/models', 'outside/keep'):
        os.makedirs(tmp_path / d, exist_ok=True)
        (tmp_path / d / 'precious.pth').write_bytes(os.urandom(256))
    return snapshot(tmp_path / 'experiments'), snapshot(tmp_path / 'outside')


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


def test_nan_pretrain_weights_are_refused_for_training_and_testing_before_any_folder(tmp_path):
    yml, exp = tiny_options(tmp_path / 'run', stage_iters=(1, 1, 1))
    (tmp_path / 'run').mkdir(exist_ok=True)
    bad = tiny_ckpt(tmp_path / 'nan.pth', nan=True, scale=4)
    edit(yml, lambda o: o['path'].update(pretrain_network_g=str(bad)))
    os.makedirs(exp)
    (exp / 'old.txt').write_text('previous run')
    proc = run_module('rlfn_arch.train', '-opt', yml, check=False)
    assert proc.returncode == 2 and 'block_1.c1_r.weight' in proc.stderr
    assert (exp / 'old.txt').read_text() == 'previous run'  # nothing archived
    assert not glob.glob(str(tmp_path / 'run' / 'experiments' / 'tiny_archived_*'))
    # a checkpoint that does not fit the network is refused the same way
    tiny_ckpt(tmp_path / 'x2.pth', scale=2)
    edit(yml, lambda o: o['path'].update(pretrain_network_g=str(tmp_path / 'x2.pth')))
    proc = run_module('rlfn_arch.train', '-opt', yml, check=False)
    assert proc.returncode == 2 and 'does not fit network_g' in proc.stderr
    assert 'The file holds an RLFN with upscale 2; to train it: --force_yml network_g:upscale=2' in proc.stderr
    wide = RLFN(upscale=4, feature_channels=12, mid_channels=8, num_blocks=1)
    torch.save({'params': wide.state_dict()}, tmp_path / 'wide.pth')
    edit(yml, lambda o: o['path'].update(pretrain_network_g=str(tmp_path / 'wide.pth')))
    proc = run_module('rlfn_arch.train', '-opt', yml, check=False)
    assert proc.returncode == 2 and '--force_yml network_g:feature_channels=12' in proc.stderr, proc.stderr
    # python -m rlfn_arch.test
    test_yml = tiny_test_options(tmp_path, 'nan_test', {'pretrain_network_g': str(bad), 'strict_load_g': True})
    proc = run_module('rlfn_arch.test', '-opt', test_yml, check=False)
    assert proc.returncode == 2 and 'block_1.c1_r.weight' in proc.stderr


def test_truncated_png_in_a_folder_dataset_fails_before_the_first_iteration(tmp_path):
    yml, exp = tiny_options(tmp_path, stage_iters=(2, 1, 1))
    truncate(tmp_path / 'data' / 'HR' / 'img3.png')
    proc = run_module('rlfn_arch.train', '-opt', yml, check=False)
    assert proc.returncode == 2 and 'img3.png' in proc.stderr and 'truncated' in proc.stderr
    assert not exp.exists()


def test_a_corrupt_sample_names_its_file_during_training_and_deep_check_finds_it_first(tmp_path):
    yml, exp = tiny_options(tmp_path, stage_iters=(20, 1, 1))
    corrupt_middle(tmp_path / 'data' / 'LR_bicubic' / 'X4' / 'img2x4.png')
    proc = run_module('rlfn_arch.train', '-opt', yml, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'img2x4.png' in proc.stderr and 'dataset tiny_train' in proc.stderr and 'Traceback' not in proc.stderr
    edit(yml, lambda o: o['datasets']['train'].update(deep_check=True))
    proc = run_module('rlfn_arch.train', '-opt', yml, check=False)
    assert proc.returncode == 2 and 'img2x4.png' in proc.stderr and 'dataset check failed' in proc.stderr
    assert not glob.glob(str(tmp_path / 'experiments' / 'tiny_archived_*'))


def test_truncated_lmdb_is_named_before_training(tmp_path):
    yml, hr_db, _ = lmdb_options(tmp_path)
    truncate(hr_db / 'data.mdb', keep=0.3)
    proc = run_module('rlfn_arch.train', '-opt', yml, check=False)
    assert proc.returncode == 2 and str(hr_db / 'data.mdb') in proc.stderr and 'truncated' in proc.stderr
    assert not (tmp_path / 'experiments' / 'tiny').exists()


def test_meta_info_key_missing_from_the_lmdb_is_named_before_training(tmp_path):
    yml, _, lr_db = lmdb_options(tmp_path)
    meta = lr_db / 'meta_info.txt'
    hr_meta = (tmp_path / 'hr.lmdb' / 'meta_info.txt')
    meta.write_text(meta.read_text() + 'ghost.png (20,20,3) 1\n')  # listed in both, stored in neither
    hr_meta.write_text(hr_meta.read_text() + 'ghost.png (80,80,3) 1\n')
    proc = run_module('rlfn_arch.train', '-opt', yml, check=False)
    assert proc.returncode == 2 and "'ghost'" in proc.stderr and 'missing from data.mdb' in proc.stderr
