"""Hand-edited, tampered or hostile run files: the dry run sees what the run would see, refusals are one line
with exit code 2, a stage always runs exactly ``total_iter``, and nothing the run did not create is touched."""
import json
import os

import pytest
import torch
from helpers import edit, iters_in_log, logs, run_module, snapshot, tiny_options, train_main

from rlfn_arch.utils.checkpoint import safe_load


def _refused(proc, *words):
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and 'Traceback' not in out and all(w in out for w in words), out[-3000:]


@pytest.mark.parametrize('change, words', [
    ({'block': 'foo'}, 'block must be one of'),
    ({'esa': 'none'}, 'esa must be one of'),
    ({'fuse': 'sum'}, 'fuse must be one of'),
    ({'block': 'rfdb', 'feature_channels': 9}, 'even feature_channels'),
    ({'feature_channels': -4}, 'feature_channels must be a positive integer'),
    ({'mid_channels': -4}, 'mid_channels must be a positive integer'),
    ({'upscale': 4.0}, 'upscale must be the integer'),
])
def test_a_network_that_cannot_be_built_is_refused_by_the_dry_run_and_the_run(tmp_path, change, words):
    yml, exp = tiny_options(tmp_path, stage_iters=(1, 1, 1))
    run_module('rlfn_arch.train', '-opt', yml)
    before = snapshot(exp)
    edit(yml, lambda o: o['network_g'].update(change))
    for extra in (['--dry_run'], []):
        _refused(run_module('rlfn_arch.train', '-opt', yml, *extra, check=False), 'network_g', words)
    assert snapshot(exp) == before and not list(exp.parent.glob('tiny_archived_*'))


def test_a_hand_edited_stages_json_is_seen_by_the_dry_run(tmp_path):
    yml, exp = tiny_options(tmp_path, stage_iters=(1, 1, 1))
    run_module('rlfn_arch.train', '-opt', yml)
    rec = json.loads((exp / 'stages.json').read_text())
    (exp / 'notes.txt').write_text('not a checkpoint')
    rec['stages']['s1']['final'] = str(exp / 'notes.txt')
    rec['stages']['s2']['status'] = 'running'
    (exp / 'stages.json').write_text(json.dumps(rec))
    before = snapshot(exp)
    for extra in (['--dry_run'], []):
        _refused(run_module('rlfn_arch.train', '-opt', yml, '--auto_resume', *extra, check=False),
                 'stage s1', 'notes.txt', 'stages.json marks this stage finished')
    assert snapshot(exp) == before


@pytest.mark.parametrize('origin', [[0, 10**12], [10**6, 0], [0, -5]])
def test_a_tampered_sampler_origin_is_refused_and_the_stage_runs_exactly_total_iter(tmp_path, origin):
    yml, exp = tiny_options(tmp_path, stage_iters=(6, 1, 1), save_freq=2)
    edit(yml, lambda o: o.update(stages=o['stages'][:1]))
    assert train_main('-opt', yml) == 0
    states = exp / 's1' / 'training_states'
    state = safe_load(states / '4.state')
    state['sampler']['origin'] = origin
    torch.save(state, states / '4.state')
    os.remove(states / '6.state')
    os.remove(exp / 's1' / 'models' / 'net_g_6.pth')
    rec = json.loads((exp / 'stages.json').read_text())
    rec['stages']['s1']['status'] = 'running'
    (exp / 'stages.json').write_text(json.dumps(rec))
    assert train_main('-opt', yml, '--auto_resume') == 0
    assert 'is impossible at iteration 4' in logs(exp / 's1')
    assert max(iters_in_log(exp / 's1')) == 6  # exactly total_iter, then the stage ends
    assert json.loads((exp / 'stages.json').read_text())['stages']['s1']['status'] == 'done'


def test_resume_cleanup_removes_only_the_projects_own_temporaries(tmp_path):
    yml, exp = tiny_options(tmp_path, stage_iters=(1, 1, 1))
    run_module('rlfn_arch.train', '-opt', yml)
    mine = [exp / '.my.draft.tmp', exp / '.notes.abcdefgh.tmp', exp / 's1' / 'models' / '.keep.tmp']
    ours = exp / '.net_g_final.pth.k1ll3d_x.rlfn-tmp'
    for f in mine + [ours]:
        f.write_text('x')
    run_module('rlfn_arch.train', '-opt', yml, '--auto_resume')
    assert all(f.read_text() == 'x' for f in mine) and not ours.exists()


def test_a_users_datasets_sample_folder_is_refused_by_the_dry_run_and_the_run(tmp_path):
    yml, exp = tiny_options(tmp_path, stage_iters=(1, 1, 1))
    sample = tmp_path / 'datasets' / 'sample'
    (sample / 'train').mkdir(parents=True)
    (sample / 'train' / 'mine.png').write_bytes(b'a photo')

    def read_sample(o):
        o['datasets']['val'].update(dataroot_gt=str(sample / 'val' / 'HR'),
                                    dataroot_lq=str(sample / 'val' / 'LR_bicubic' / 'X4'))
    edit(yml, read_sample)
    before = snapshot(sample)
    for extra in (['--dry_run'], []):
        _refused(run_module('rlfn_arch.train', '-opt', yml, *extra, check=False), str(sample), 'sample.json')
    assert snapshot(sample) == before and not exp.exists()


@pytest.mark.parametrize('text, words', [
    ('a: ' + '[' * 5000 + ']' * 5000 + '\n', 'nested too deeply'),
    ('a:\n' + ''.join('  ' * i + f'k{i}:\n' for i in range(1, 40)) + '  ' * 40 + 'v: 1\n', 'levels deep'),
    ('name: x\nscale: ' + '9' * 5000 + '\n', 'a value cannot be read'),
])
def test_option_files_that_would_exhaust_the_parser_are_one_line_errors(tmp_path, text, words):
    bad = tmp_path / 'bad.yml'
    bad.write_text(text)
    for tool in ('rlfn_arch.train', 'rlfn_arch.test'):
        proc = run_module(tool, '-opt', bad, check=False)
        _refused(proc, str(bad), words)
        assert len(proc.stderr.strip().splitlines()) == 1 and 'set_int_max_str_digits' not in proc.stderr


@pytest.mark.parametrize('key, value', [('device', 'cuda'), ('path.init_from', 'x.pth')])
def test_keys_nothing_reads_are_refused_with_a_suggestion(tmp_path, key, value):
    yml, _ = tiny_options(tmp_path, stage_iters=(1, 1, 1))

    def add(o):
        if '.' in key:
            o['path'][key.split('.')[1]] = value
        else:
            o[key] = value
    edit(yml, add)
    _refused(run_module('rlfn_arch.train', '-opt', yml, '--dry_run', check=False), key.split('.')[-1])
