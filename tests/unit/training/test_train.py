"""Multi-stage warm-start training through python -m rlfn_arch.train (in this process)."""
import glob
import json
import os

import pytest
import torch
import yaml
from helpers import (
    iters_in_log,
    logs,
    run_module,
    tiny_options,
)

from rlfn_arch.utils.checkpoint import safe_load


def test_three_stages_end_to_end(tmp_path):
    yml, exp = tiny_options(tmp_path, stage_iters=(3, 2, 2), save_freq=1)
    proc = run_module('rlfn_arch.train', '-opt', yml)
    records = json.loads((exp / 'stages.json').read_text())['stages']
    assert [records[s]['status'] for s in ('s1', 's2', 's3')] == ['done'] * 3
    # stage k > 1 starts bit for bit from stage k-1's final weights
    for prev, cur in (('s1', 's2'), ('s2', 's3')):
        final = safe_load(exp / prev / 'models' / 'net_g_latest.pth')['params']
        init = safe_load(exp / cur / 'models' / 'net_g_init.pth')['params']
        assert final.keys() == init.keys() and all(torch.equal(final[k], init[k]) for k in final)
    # ... and trains them
    s1_init = safe_load(exp / 's1' / 'models' / 'net_g_init.pth')['params']
    s1_final = safe_load(exp / 's1' / 'models' / 'net_g_latest.pth')['params']
    assert any(not torch.equal(s1_init[k], s1_final[k]) for k in s1_init)
    # a fresh optimizer and scheduler: step counts restart, the learning rate is the stage's initial one
    st = safe_load(exp / 's2' / 'training_states' / '1.state')
    steps = {int(v['step']) for v in st['optimizers'][0]['state'].values()}
    assert steps == {1}
    assert st['optimizers'][0]['param_groups'][0]['lr'] == pytest.approx(5e-4)
    assert st['optimizers'][0]['param_groups'][0]['initial_lr'] == pytest.approx(5e-4)
    # l_contrast only where configured; the stage named on the log lines
    assert 'l_contrast' not in logs(exp / 's1') and 'l_contrast' not in logs(exp / 's2')
    assert 'l_contrast' in logs(exp / 's3') and '[s3]' in logs(exp / 's3')
    for s in ('s1', 's2', 's3'):
        assert 'l_pix' in logs(exp / s) and 'l_total' in logs(exp / s)
        assert os.path.isdir(exp / s / 'training_states') and os.path.isdir(exp / s / 'models')
    assert (exp / 'net_g_final.pth').is_file()
    final = safe_load(exp / 'net_g_final.pth')['params']
    last = safe_load(exp / 's3' / 'models' / 'net_g_latest.pth')['params']
    assert all(torch.equal(final[k], last[k]) for k in final)
    assert '| stage' in proc.stdout and 'bicubic x4' in proc.stdout and 'PSNR-Y' in proc.stdout


def test_truncated_latest_state_is_skipped_with_a_warning(tmp_path):
    from rlfn_arch.training.records import find_resume_state
    yml, exp = tiny_options(tmp_path, stage_iters=(4, 1, 1), save_freq=2)
    run_module('rlfn_arch.train', '-opt', yml)
    stage = exp / 's1'
    latest = stage / 'training_states' / '4.state'
    latest.write_bytes(latest.read_bytes()[:100])
    messages = []
    state, path = find_resume_state(str(stage), torch.device('cpu'), log=messages.append)
    assert state['iter'] == 2 and path.endswith('2.state')
    assert any('4.state' in m and 'WARNING' in m for m in messages)


def test_plain_option_file_without_stages_trains_as_one_stage(tmp_path):
    yml, exp = tiny_options(tmp_path, stage_iters=(2, 1, 1))
    opt = yaml.safe_load(yml.read_text())
    opt.pop('stages')
    yml.write_text(yaml.safe_dump(opt, sort_keys=False))
    run_module('rlfn_arch.train', '-opt', yml)
    assert (exp / 'models' / 'net_g_latest.pth').is_file() and (exp / 'net_g_final.pth').is_file()


def test_nonfinite_losses_skip_updates_then_stop_with_the_last_good_checkpoint_intact(tmp_path):
    yml, exp = tiny_options(tmp_path, stage_iters=(2, 20, 1), save_freq=1,
                            extra_stage2={'pixel_opt': {'loss_weight': float('nan')}, 'max_nonfinite': 3})
    proc = run_module('rlfn_arch.train', '-opt', yml, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert 'non-finite loss at iter 1 (stage s2)' in out
    assert '3 consecutive non-finite' in out and 'last good checkpoint' in out
    for f in glob.glob(str(exp / '**' / '*.pth'), recursive=True):
        params = safe_load(f)['params']
        assert all(torch.isfinite(v).all() for v in params.values()), f
    s2_init = safe_load(exp / 's2' / 'models' / 'net_g_init.pth')['params']
    s2_iter2 = safe_load(exp / 's2' / 'models' / 'net_g_2.pth')['params']
    assert all(torch.equal(s2_init[k], s2_iter2[k]) for k in s2_init)  # no update was applied


def test_write_failure_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import errno

    from rlfn_arch.utils import checkpoint, fs
    target = tmp_path / 'net.pth'
    checkpoint.atomic_save({'params': {'w': torch.ones(3)}}, target)
    before = target.read_bytes()

    def full_disk(fd):  # the bytes went to the page cache; the disk reports ENOSPC when they must land
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(fs.os, 'fsync', full_disk)
    with pytest.raises(OSError, match='cannot write .*net.pth: No space left'):
        checkpoint.atomic_save({'params': {'w': torch.zeros(3)}}, target)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ['net.pth']
    with pytest.raises(OSError, match='cannot write'):
        checkpoint.atomic_save({'x': 1}, tmp_path / 'net.pth' / 'sub.pth')  # parent is a file


def test_stage_iterations_are_exact_with_drop_last(tmp_path):
    # 6 images, batch 4 with drop_last: 1 batch per epoch; basicsr 1.4.2 would count 2 and stop early
    yml, exp = tiny_options(tmp_path, stage_iters=(5, 1, 1))
    opt = yaml.safe_load(yml.read_text())
    opt['datasets']['train']['batch_size_per_gpu'] = 4
    opt['stages'] = opt['stages'][:1]
    yml.write_text(yaml.safe_dump(opt, sort_keys=False))
    run_module('rlfn_arch.train', '-opt', yml)
    assert iters_in_log(exp / 's1')[-1] == 5


def test_model_save_errors_are_raised_not_ignored(tmp_path, monkeypatch):
    """basicsr 1.4.2 logs 'Just ignore it' on a failed save; ours raises with the path and keeps the old file."""
    import errno

    from rlfn_arch.training import stage_options
    from rlfn_arch.utils import fs
    from rlfn_arch.utils.options import load_options
    from rlfn_arch.utils.runtime import finalize

    from basicsr.models import build_model
    yml, exp = tiny_options(tmp_path)
    opt = stage_options(load_options(str(yml)), str(yml))[0][1]
    finalize(opt, str(tmp_path), is_train=True, experiments_root=str(exp / 's1'))
    for key in ('models', 'training_states'):
        os.makedirs(opt['path'][key], exist_ok=True)
    model = build_model(opt)
    model.save(0, 2)
    good = (exp / 's1' / 'models' / 'net_g_2.pth').read_bytes()

    def full_disk(fd):  # the bytes went to the page cache; the disk reports ENOSPC when they must land
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(fs.os, 'fsync', full_disk)
    with pytest.raises(OSError, match=r'cannot write .*net_g_2.pth: No space left'):
        model.save(0, 2)
    assert (exp / 's1' / 'models' / 'net_g_2.pth').read_bytes() == good
    assert sorted(os.listdir(exp / 's1' / 'models')) == ['net_g_2.pth']


def test_debug_flag_follows_basicsr(tmp_path):
    yml, exp = tiny_options(tmp_path, stage_iters=(2, 1, 1), save_freq=1000)
    opt = yaml.safe_load(yml.read_text())
    opt['stages'] = opt['stages'][:1]
    yml.write_text(yaml.safe_dump(opt, sort_keys=False))
    run_module('rlfn_arch.train', '-opt', yml, '--debug')
    debug = tmp_path / 'experiments' / 'debug_tiny'
    assert (debug / 'stages.json').is_file() and not exp.exists()
    assert [i for i in iters_in_log(debug / 's1') if i] == [1, 2]  # print_freq forced to 1 (0: the start line)
