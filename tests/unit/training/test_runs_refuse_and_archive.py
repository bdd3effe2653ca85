"""Training runs never lose a user's data: each test builds the case that lost files or crashed
before, runs ``python -m rlfn_arch.train`` / ``prepare`` in this process, and checks the exit code, the
one-line message and that every file the run did not create is byte for byte as it was."""
import json
import os
import stat
import threading

import pytest
import yaml
from helpers import edit, run_module, snapshot, tiny_options, train_main


def _records(exp):
    return json.loads((exp / 'stages.json').read_text())


def _mark_running(exp, stage):
    rec = _records(exp)
    rec['stages'][stage]['status'] = 'running'
    (exp / 'stages.json').write_text(json.dumps(rec))


# ---------------------------------------------------------------------------- prepare sample --output
def _fake_content(out_dir, workers):
    """The sample builder's content step, made tiny (the folder handling around it is what is tested)."""
    for split in ('train', 'val'):
        os.makedirs(os.path.join(out_dir, split, 'HR'))
        open(os.path.join(out_dir, split, 'HR', 'x.png'), 'wb').write(b'png')
    with open(os.path.join(out_dir, 'sample.json'), 'w') as f:
        json.dump({'version': 2, 'source': 'scikit-image data'}, f)
    return []


def test_prepare_sample_never_deletes_a_folder_it_did_not_make(tmp_path, monkeypatch):
    from rlfn_arch.data import builders
    from rlfn_arch.data.builders import sample as sample_builder
    mine = tmp_path / 'mine'
    (mine / 'photos').mkdir(parents=True)
    (mine / 'notes.txt').write_text('keep me')
    (mine / 'photos' / 'a.jpg').write_bytes(os.urandom(64))
    before = snapshot(mine)
    proc = run_module('rlfn_arch.prepare', 'sample', '--output', mine, '--workers', '1', check=False)
    assert proc.returncode == 2 and str(mine) in proc.stderr and '--overwrite' in proc.stderr
    assert snapshot(mine) == before
    # --overwrite adds the dataset beside the user's files; a clashing train/ of theirs is archived, not deleted
    monkeypatch.setattr(sample_builder, '_build_sample_into', _fake_content)
    (mine / 'train').mkdir()
    (mine / 'train' / 'own.txt').write_text('theirs')
    stale_ours, stale_other = tmp_path / '.mine.tmp-1', tmp_path / '.mine.tmp-2'
    stale_ours.mkdir()
    (stale_ours / '.rlfn_sample_build').write_text('')
    stale_other.mkdir()
    (stale_other / 'x').write_text('not ours')
    run_module('rlfn_arch.prepare', 'sample', '--output', mine, '--workers', '1', '--overwrite')
    after = snapshot(mine)
    assert {k: after[k] for k in before} == before
    archived = [k for k in after if k.startswith('train_archived_') and k.endswith('own.txt')]
    assert len(archived) == 1 and (mine / archived[0]).read_text() == 'theirs'
    assert builders.sample_ready(str(mine)) and not stale_ours.exists() and (stale_other / 'x').exists()
    # rebuilding its own folder replaces only its own entries
    (mine / 'added_later.txt').write_text('user file')
    run_module('rlfn_arch.prepare', 'sample', '--output', mine, '--workers', '1', '--overwrite')
    assert (mine / 'added_later.txt').read_text() == 'user file' and (mine / 'notes.txt').read_text() == 'keep me'


# ------------------------------------------------------------------ --auto_resume without a training state
def test_auto_resume_archives_an_unfinished_stage_without_state_instead_of_deleting_it(tmp_path, capsys):
    yml, exp = tiny_options(tmp_path, stage_iters=(2, 2, 1), save_freq=100)  # no training state is ever saved
    assert train_main('-opt', yml) == 0
    _mark_running(exp, 's2')
    before = snapshot(exp / 's2')
    assert any(k.endswith('net_g_init.pth') for k in before) and any(k.endswith('.log') for k in before)
    capsys.readouterr()
    assert train_main('-opt', yml, '--auto_resume') == 0
    out = capsys.readouterr().out
    archived = [d for d in os.listdir(exp) if d.startswith('s2_archived_')]
    assert len(archived) == 1 and 'renamed to' in out and 'nothing was deleted' in out
    assert snapshot(exp / archived[0]) == before  # every file of the unfinished stage, byte for byte
    assert _records(exp)['stages']['s2']['status'] == 'done'


# ------------------------------------------------------------------ an experiment folder linked outside
def test_an_experiment_folder_linked_outside_the_experiments_root_is_refused(tmp_path, capsys):
    yml, exp = tiny_options(tmp_path, stage_iters=(1, 1, 1))
    outside = tmp_path / 'outside'
    (outside / 's1' / 'models').mkdir(parents=True)
    (outside / 's1' / 'models' / 'precious.pth').write_bytes(os.urandom(128))
    (outside / 'notes.txt').write_text('keep')
    exp.parent.mkdir(parents=True)
    os.symlink(outside, exp)
    before = snapshot(outside)
    for resume in (['--auto_resume'], []):
        assert train_main('-opt', yml, *resume) == 2
        err = capsys.readouterr().err
        assert 'symbolic link' in err and str(outside) in err and 'intact' not in err
        assert snapshot(outside) == before and os.path.islink(exp)
    # a link that stays inside the root is refused too: two names would share one folder
    os.unlink(exp)
    (exp.parent / 'other').mkdir()
    os.symlink(exp.parent / 'other', exp)
    assert train_main('-opt', yml, '--auto_resume') == 2
    assert 'must be real folders' in capsys.readouterr().err


# -------------------------------------------------------------------------------------- names
@pytest.mark.parametrize('bad', ['"x\\n"', '"x "', '"a\\tb"', '"x\\r"'])
def test_names_with_control_characters_or_trailing_whitespace_are_refused(tmp_path, capsys, bad):
    yml, _ = tiny_options(tmp_path, stage_iters=(1, 1, 1))
    assert train_main('-opt', yml, '--force_yml', f'name={bad}') == 2
    assert 'name' in capsys.readouterr().err
    assert not (tmp_path / 'experiments').exists()


# --------------------------------------------------------------------------------- option files
def test_a_fifo_option_file_is_refused_without_hanging(tmp_path, capsys):
    fifo = tmp_path / 'opt.yml'
    os.mkfifo(fifo)
    result = {}
    t = threading.Thread(target=lambda: result.update(rc=train_main('-opt', fifo)), daemon=True)
    t.start()
    t.join(timeout=30)
    assert not t.is_alive(), 'reading a FIFO option file hangs'
    assert result['rc'] == 2 and 'not a regular file' in capsys.readouterr().err


@pytest.mark.parametrize('data', [b'name: caf\xe9  # Latin-1 comment\n', bytes(range(100, 228)) + b'\xff\xfe'],
                         ids=['latin1', 'random_bytes'])
def test_a_non_utf8_option_file_is_a_one_line_error(tmp_path, capsys, data):
    bad = tmp_path / 'bad.yml'
    bad.write_bytes(data)
    assert train_main('-opt', bad) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and 'UTF-8' in err and 'Traceback' not in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------ stages.json
@pytest.mark.parametrize('content', ['', '{"stages": ', '[1, 2]'])
def test_a_corrupt_stages_json_is_named_and_left_alone(tmp_path, capsys, content):
    yml, exp = tiny_options(tmp_path, stage_iters=(1, 1, 1))
    assert train_main('-opt', yml) == 0
    (exp / 'stages.json').write_text(content)
    before = snapshot(exp)
    capsys.readouterr()
    assert train_main('-opt', yml, '--auto_resume') == 2
    err = capsys.readouterr().err
    assert str(exp / 'stages.json') in err and 'Move it aside' in err and 'Traceback' not in err
    assert snapshot(exp) == before


# ------------------------------------------------------------------------------ network_g changed
def test_resuming_after_network_g_changed_names_the_tensor_and_the_option(tmp_path, capsys):
    yml, exp = tiny_options(tmp_path, stage_iters=(1, 1, 4), save_freq=2)
    assert train_main('-opt', yml) == 0
    _mark_running(exp, 's3')  # s3 has training_states/2.state and 4.state
    edit(yml, lambda o: o['network_g'].update(feature_channels=12))
    before = snapshot(exp)
    capsys.readouterr()
    assert train_main('-opt', yml, '--auto_resume') == 2
    err = capsys.readouterr().err
    assert 'conv_1.weight' in err and 'network_g.feature_channels: 8 -> 12' in err and 'Traceback' not in err
    assert snapshot(exp) == before


# ------------------------------------------------------------------------- stage names like files
@pytest.mark.parametrize('name', ['stages.json', 'net_g_final.pth', 'net_g_final.safetensors'])
def test_a_stage_named_like_a_file_the_runner_writes_is_refused_up_front(tmp_path, capsys, name):
    yml, _ = tiny_options(tmp_path, stage_iters=(1, 1, 1))
    edit(yml, lambda o: o['stages'][0].update(name=name))
    assert train_main('-opt', yml) == 2
    assert 'file the runner writes' in capsys.readouterr().err
    assert not (tmp_path / 'experiments').exists()


# ------------------------------------------------------------------- pre-flight before archiving
def test_a_batch_larger_than_the_dataset_is_refused_before_the_old_run_is_archived(tmp_path, capsys):
    yml, exp = tiny_options(tmp_path, stage_iters=(1, 1, 1))
    exp.mkdir(parents=True)
    (exp / 'old.txt').write_text('previous run')
    edit(yml, lambda o: o['datasets']['train'].update(batch_size_per_gpu=8))  # 6 images
    assert train_main('-opt', yml) == 2
    err = capsys.readouterr().err
    assert 'no full batch' in err and 'batch_size_per_gpu 8' in err
    assert sorted(os.listdir(exp.parent)) == ['tiny'] and (exp / 'old.txt').read_text() == 'previous run'


def test_dry_run_prints_the_plans_and_writes_nothing(tmp_path, capsys):
    yml, exp = tiny_options(tmp_path, stage_iters=(3, 2, 1))
    before = snapshot(tmp_path)
    assert train_main('-opt', yml, '--dry_run') == 0
    out = capsys.readouterr().out
    assert out.count('stage ') >= 3 and 'init from   previous stage' in out and 'dry run: nothing was written' in out
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------ leftovers and file modes
def test_resume_removes_a_stale_final_temporary_and_checkpoints_respect_the_umask(tmp_path, capsys):
    yml, exp = tiny_options(tmp_path, stage_iters=(1, 1, 1))
    old = os.umask(0o022)
    try:
        assert train_main('-opt', yml) == 0
    finally:
        os.umask(old)
    for f in ('net_g_final.pth', 'stages.json', 's1/models/net_g_latest.pth'):
        assert stat.S_IMODE(os.stat(exp / f).st_mode) == 0o644, f
    stale = exp / '.net_g_final.pth.k1ll3d_x.rlfn-tmp'
    stale.write_bytes(b'partial')
    capsys.readouterr()
    assert train_main('-opt', yml, '--auto_resume') == 0
    assert not stale.exists() and 'a write interrupted by the kill' in capsys.readouterr().out


def test_plans_are_frozen(tmp_path):
    from rlfn_arch.training.plan import build_plans
    from rlfn_arch.training.stages import stage_options
    from rlfn_arch.utils.options import load_options
    yml, _ = tiny_options(tmp_path, stage_iters=(1, 1, 1))
    raw = load_options(str(yml))
    _, _, plans = build_plans(raw, stage_options(raw, str(yml)), str(tmp_path), str(yml))
    with pytest.raises(TypeError):
        plans[0].options['train']['total_iter'] = 5
    with pytest.raises(Exception):
        plans[0].label = 'x'
    assert yaml.safe_load(yaml.safe_dump({'n': plans[1].options['train']['total_iter']}))['n'] == 1
