"""A run killed with SIGKILL (a real process) and resumed with --auto_resume."""
import glob
import json
import os

from helpers import (
    iters_in_log,
    run_module,
    start_training_and_kill_at,
    tiny_options,
)

from rlfn_arch.utils.checkpoint import safe_load


def test_sigkill_in_stage2_then_auto_resume_from_another_directory(tmp_path):
    yml, exp = tiny_options(tmp_path, stage_iters=(3, 400, 2), save_freq=3)
    assert start_training_and_kill_at(yml, exp / 's2' / 'training_states' / '9.state'), 'stage 2 did not reach 9'
    s1_final_before = (exp / 's1' / 'models' / 'net_g_latest.pth').read_bytes()
    records = json.loads((exp / 'stages.json').read_text())['stages']
    assert records['s1']['status'] == 'done' and records['s2']['status'] == 'running'
    other = tmp_path / 'elsewhere'
    other.mkdir()
    proc = run_module('rlfn_arch.train', '-opt', yml, '--auto_resume', cwd=other)
    assert '[s1] already finished' in proc.stdout
    assert '[s2] resuming from' in proc.stdout
    records = json.loads((exp / 'stages.json').read_text())['stages']
    assert [records[s]['status'] for s in ('s1', 's2', 's3')] == ['done'] * 3
    assert (exp / 's1' / 'models' / 'net_g_latest.pth').read_bytes() == s1_final_before  # not rerun
    assert not glob.glob(str(tmp_path / 'experiments' / 'tiny_archived*'))
    assert not os.path.exists(other / 'experiments')
    # the same iterations as an uninterrupted run: stage 2 ends at exactly 400, nothing lost or repeated
    iters = iters_in_log(exp / 's2')
    assert iters[-1] == 400 and iters == list(range(iters[0], 401))
    st = safe_load(exp / 's2' / 'training_states' / '399.state')
    assert st['iter'] == 399 and {int(v['step']) for v in st['optimizers'][0]['state'].values()} == {399}
