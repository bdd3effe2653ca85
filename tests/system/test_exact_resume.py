"""Resume that changes nothing: a run killed with SIGKILL in the middle of an epoch (a real process) and
resumed with --auto_resume ends with the same weights, bit for bit, as the run that never stopped; and the
number of DataLoader workers does not change the result (per-sample augmentation keys)."""
import pytest
import torch
from helpers import edit, run_module, start_training_and_kill_at, tiny_options

from rlfn_arch.utils.checkpoint import safe_load

# 6 images x enlarge ratio 10 / batch 2 = 30 batches per epoch; checkpoints every 25 iterations
ITERS, SAVE = (70, 70, 1), 25


def _options(root, workers=0):
    yml, exp = tiny_options(root, stage_iters=ITERS, save_freq=SAVE)
    edit(yml, lambda o: o['datasets']['train'].update(num_worker_per_gpu=workers, dataset_enlarge_ratio=10,
                                                      persistent_workers=workers > 0))
    return yml, exp


def _final(exp):
    return safe_load(exp / 'net_g_final.pth')['params']


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    yml, exp = _options(tmp_path_factory.mktemp('full'))
    run_module('rlfn_arch.train', '-opt', yml, subprocess=True)  # one thread, like the killed runs
    return _final(exp)


@pytest.mark.parametrize('stage,state,workers', [
    ('s1', 50, 0),  # iteration 50: epoch 1, 20 of its 30 batches consumed
    ('s2', 25, 0),  # inside stage 2's first epoch (BasicSR builds the loader iterator twice there)
    ('s1', 50, 2),  # two DataLoader workers: the same result as none
])
def test_a_run_killed_mid_epoch_and_resumed_ends_bit_identical(tmp_path, uninterrupted, stage, state, workers):
    yml, exp = _options(tmp_path, workers)
    target = exp / stage / 'training_states' / f'{state}.state'
    assert start_training_and_kill_at(yml, target, settle=0.0), f'{target} was never written'
    assert state % 30 and not (exp / 'net_g_final.pth').exists()  # killed inside an epoch, before the end
    proc = run_module('rlfn_arch.train', '-opt', yml, '--auto_resume', subprocess=True)
    assert f'[{stage}] resuming from' in proc.stdout
    final = _final(exp)
    assert final.keys() == uninterrupted.keys()
    assert all(torch.equal(final[k], uninterrupted[k]) for k in final)
