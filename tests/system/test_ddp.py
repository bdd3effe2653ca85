import glob
import json
import os
import re
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


def test_two_process_gloo_run_killed_mid_epoch_in_stage_2_resumes_from_elsewhere_bit_identical(tmp_path):
    """Two gloo processes, two stages; torchrun and both workers SIGKILLed in the middle of a stage-2 epoch,
    resumed under torchrun from another directory: the finished stage is skipped, each rank's shard resumes
    at the same position, and the final weights equal an uninterrupted 2-process run's bit for bit."""
    from helpers import edit

    def options(root):
        yml, exp = tiny_options(root, stage_iters=(10, 20, 1), save_freq=5)
        # 6 images x 5 = 30 samples / 2 ranks = 15 per rank, batch 2, drop_last: 7 iterations per epoch and
        # rank; stage 2's iteration 10 is in the middle of its epoch 1
        edit(yml, lambda o: (o['datasets']['train'].update(dataset_enlarge_ratio=5), o.update(stages=o['stages'][:2])))
        return yml, exp
    full_yml, full_exp = options(tmp_path / 'full')
    p = _run(['-opt', full_yml])
    out = p.communicate(timeout=600)[0]
    assert p.returncode == 0, out[-3000:]
    yml, exp = options(tmp_path / 'killed')
    p = _run(['-opt', yml])
    target = exp / 's2' / 'training_states' / '10.state'
    deadline = time.time() + 300
    while not target.exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    assert target.exists(), p.communicate()[0][-3000:] if p.poll() is not None else 'timeout'
    kill_tree(p, yml)
    assert not (exp / 'net_g_final.pth').exists()
    s1 = exp / 's1'
    log1 = '\n'.join(open(f).read() for f in glob.glob(str(s1 / 'train_*.log')))
    assert 'World size (gpu number): 2' in log1
    assert 'Iteration accounting: 7 iters/epoch per process' in log1
    assert iters_in_log(s1)[-1] == 10
    s1_init = safe_load(s1 / 'models' / 'net_g_init.pth')['params']
    s1_final = safe_load(s1 / 'models' / 'net_g_latest.pth')['params']
    assert any(not torch.equal(s1_init[k], s1_final[k]) for k in s1_init)
    s2_init = safe_load(exp / 's2' / 'models' / 'net_g_init.pth')['params']
    assert all(torch.equal(s1_final[k], s2_init[k]) for k in s1_final)
    other = tmp_path / 'other'
    other.mkdir()
    p = _run(['-opt', yml, '--auto_resume'], cwd=other)
    out = p.communicate(timeout=600)[0]
    assert p.returncode == 0, out[-4000:]
    assert '[s1] already finished' in out and '[s2] resuming from' in out
    assert re.search(r'\[s2\] DDP replicas identical on 2 ranks', out)
    records = json.loads((exp / 'stages.json').read_text())['stages']
    assert records['s1']['status'] == records['s2']['status'] == 'done'
    assert iters_in_log(exp / 's2')[-1] == 20
    assert not glob.glob(str(tmp_path / 'killed' / 'experiments' / '*archived*'))
    a, b = (safe_load(e / 'net_g_final.pth')['params'] for e in (full_exp, exp))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_int8_stage_under_ddp_validates_and_ends_with_identical_replicas(tmp_path):
    """Two gloo processes, an int8 stage with learned ranges and frozen weights outside ``trainable_g``: rank 0
    validates alone (its forward must not wait for a buffer broadcast the other rank never joins: the run hung
    there), every rank ends with the same weights and ranges, and the ranges learned."""
    from helpers import edit
    yml, exp = tiny_options(tmp_path, stage_iters=(2, 1, 8), save_freq=4)
    edit(yml, lambda o: (o['datasets']['train'].update(dataset_enlarge_ratio=5), o['stages'][2]['train'].update(
        qat={'convs': 'all', 'calibration_batches': 3, 'ranges': 'learned'}, trainable_g=['block_'])))
    p = _run(['-opt', yml])
    try:
        out = p.communicate(timeout=300)[0]
    except subprocess.TimeoutExpired:
        kill_tree(p, yml)
        raise
    assert p.returncode == 0, out[-3000:]
    assert '[s3] DDP replicas identical on 2 ranks' in out
    final = torch.load(exp / 'net_g_final.pth', map_location='cpu', weights_only=True)['params']
    assert any(k.endswith('range_scale') and float(v.abs().max()) > 0 for k, v in final.items())
    assert (exp / 'net_g_final_int8.onnx').is_file()
