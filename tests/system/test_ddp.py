import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import torch
from helpers import REPO, iters_in_log, tiny_options

from rlfn_arch.utils.checkpoint import safe_load

TORCHRUN = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2']


def _run(args, cwd=REPO, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    return subprocess.Popen(TORCHRUN + ['-m', 'rlfn_arch.train'] + [str(a) for a in args] + ['--launcher', 'pytorch'],
                            cwd=cwd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, **kw)


def _pids_running(needle):
    pids = []
    for d in os.listdir('/proc'):
        if d.isdigit() and int(d) != os.getpid():
            try:
                with open(f'/proc/{d}/cmdline', 'rb') as f:
                    if needle.encode() in f.read():
                        pids.append(int(d))
            except OSError:
                pass
    return pids


def kill_tree(p, yml):
    """SIGKILL torchrun and its workers (torchrun starts the workers in sessions of their own)."""
    for pid in [p.pid] + _pids_running(str(yml)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.wait()
    deadline = time.time() + 30
    while _pids_running(str(yml)) and time.time() < deadline:
        time.sleep(0.1)
    assert not _pids_running(str(yml)), 'training processes survived SIGKILL'


def test_two_process_gloo_two_stages_kill_and_resume(tmp_path):
    yml, exp = tiny_options(tmp_path, stage_iters=(4, 300, 1), save_freq=2)
    import yaml
    opt = yaml.safe_load(yml.read_text())
    opt['stages'] = opt['stages'][:2]  # two stages
    yml.write_text(yaml.safe_dump(opt, sort_keys=False))
    # 1) run until stage 2 has saved a few states, then kill the whole torchrun process group
    p = _run(['-opt', yml])
    target = exp / 's2' / 'training_states' / '6.state'
    deadline = time.time() + 240
    while not target.exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    assert target.exists(), p.communicate()[0][-3000:] if p.poll() is not None else 'timeout'
    kill_tree(p, yml)
    p.wait()
    s1 = exp / 's1'
    log1 = '\n'.join(open(f).read() for f in glob.glob(str(s1 / 'train_*.log')))
    assert 'World size (gpu number): 2' in log1
    # each rank: 6 images / 2 ranks = 3 per rank, batch 2, drop_last -> 1 iteration per epoch
    assert 'Iteration accounting: 1 iters/epoch per process' in log1
    assert iters_in_log(s1)[-1] == 4
    s1_init = safe_load(s1 / 'models' / 'net_g_init.pth')['params']
    s1_final = safe_load(s1 / 'models' / 'net_g_latest.pth')['params']
    assert any(not torch.equal(s1_init[k], s1_final[k]) for k in s1_init)
    s2_init = safe_load(exp / 's2' / 'models' / 'net_g_init.pth')['params']
    assert all(torch.equal(s1_final[k], s2_init[k]) for k in s1_final)
    # 2) resume under torchrun from another directory
    other = tmp_path / 'other'
    other.mkdir()
    p = _run(['-opt', yml, '--auto_resume'], cwd=other)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out[-4000:]
    assert '[s1] already finished' in out and '[s2] resuming from' in out
    assert re.search(r'\[s2\] DDP replicas identical on 2 ranks', out)
    records = json.loads((exp / 'stages.json').read_text())['stages']
    assert records['s1']['status'] == records['s2']['status'] == 'done'
    assert iters_in_log(exp / 's2')[-1] == 300
    assert not glob.glob(str(tmp_path / 'experiments' / '*archived*'))
    shutil.rmtree(other)


def test_two_process_gloo_run_killed_mid_epoch_resumes_bit_identical(tmp_path):
    """The exact-resume guarantee under DDP: each rank's shard resumes at the same position."""
    from helpers import edit

    def options(root):
        yml, exp = tiny_options(root, stage_iters=(60, 1, 1), save_freq=10)
        # 6 images x 10 / 2 ranks / batch 2 = 15 batches per epoch and rank: iteration 20 is mid-epoch 1
        edit(yml, lambda o: (o['datasets']['train'].update(dataset_enlarge_ratio=10),
                             o.update(stages=o['stages'][:1])))
        return yml, exp
    full_yml, full_exp = options(tmp_path / 'full')
    p = _run(['-opt', full_yml])
    out = p.communicate(timeout=600)[0]
    assert p.returncode == 0, out[-3000:]
    yml, exp = options(tmp_path / 'killed')
    p = _run(['-opt', yml])
    target = exp / 's1' / 'training_states' / '20.state'
    deadline = time.time() + 300
    while not target.exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    assert target.exists(), p.communicate()[0][-3000:] if p.poll() is not None else 'timeout'
    kill_tree(p, yml)
    assert not (exp / 'net_g_final.pth').exists()
    p = _run(['-opt', yml, '--auto_resume'])
    out = p.communicate(timeout=600)[0]
    assert p.returncode == 0 and '[s1] resuming from' in out, out[-3000:]
    a, b = (safe_load(e / 'net_g_final.pth')['params'] for e in (full_exp, exp))
    assert all(torch.equal(a[k], b[k]) for k in a)
