"""Hostile and unlucky runs never lose data where a real process matters: concurrent runs, locks
held by a killed process, a full disk (a file-size limit on the child), kills mid-run.
(The hostile case on tiny data, the real entry point, the documented exit code and message, and every
file the run did not create left as it was: the pattern of all the safety tests.)"""
import glob
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from helpers import (
    REPO,
    edit,
    limit_file_size,
    run_module,
    start_training_and_kill_at,
    tiny_options,
)

from rlfn_arch.utils.checkpoint import safe_load


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


def test_a_full_disk_during_a_save_exits_4_naming_the_file(tmp_path):
    """RLIMIT_FSIZE makes every write past 200 KB fail as a full disk does (EFBIG instead of ENOSPC),
    through every layer (torch.save included), without root or a special file system."""
    yml, exp = tiny_options(tmp_path, stage_iters=(4, 1, 1), save_freq=2)
    edit(yml, lambda o: o['network_g'].update(feature_channels=48, mid_channels=48))  # ~1.8 MB checkpoints
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-m', 'rlfn_arch.train', '-opt', str(yml)], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=300, preexec_fn=limit_file_size(200_000))
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert 'net_g_init.pth' in proc.stderr and 'File too large' in proc.stderr and 'Traceback' not in proc.stderr
    assert not glob.glob(str(exp / '**' / '.*.rlfn-tmp'), recursive=True)  # no partial file left


# ----------------------------------------------------------------------------------- after a kill
def test_resume_removes_stale_temporaries_and_stages_json_adds_every_segment(tmp_path):
    yml, exp = tiny_options(tmp_path, stage_iters=(2, 300, 1), save_freq=4)
    target = exp / 's2' / 'training_states' / '8.state'
    assert start_training_and_kill_at(yml, target, settle=1.0)
    killed_after = os.path.getmtime(target) - os.path.getmtime(exp / 's1' / 'models' / 'net_g_latest.pth')
    stale = [exp / 's2' / 'models' / '.net_g_12.pth.abc123xy.rlfn-tmp',
             exp / 's2' / 'training_states' / '.12.state.x9x9x9x9.rlfn-tmp']
    for f in stale:
        f.write_bytes(b'partial')
    assert (exp / 's2' / 's2.yml').is_file()  # the stage's finalized options: in its own folder, no temporary file
    proc = run_module('rlfn_arch.train', '-opt', yml, '--auto_resume')
    assert not any(f.exists() for f in stale) and 'a write interrupted by the kill' in proc.stdout
    rec = yaml.safe_load((exp / 'stages.json').read_text())['stages']['s2']
    resumed = float(proc.stdout.split('| s2')[1].split('|')[2])  # the summary table's wall seconds
    assert rec["status"] == "done" and rec["seconds"] == pytest.approx(resumed, abs=1)
    assert rec['seconds'] >= killed_after - 1.0  # includes the segment that was killed
    assert not (exp / 's2' / '.run').exists()
