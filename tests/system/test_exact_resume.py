"""Resume that changes nothing: a run killed with SIGKILL in the middle of an epoch (a real process) and
resumed with --auto_resume ends with the same weights, bit for bit, as the run that never stopped; and the
number of DataLoader workers does not change the result (per-sample augmentation keys)."""
import pytest
import torch
from helpers import edit, iters_in_log, make_pairs, run_module, start_training_and_kill_at, tiny_options

from rlfn_arch.utils.checkpoint import safe_load

# 6 images x enlarge ratio 10 / batch 2 = 30 batches per epoch; checkpoints every 25 iterations
ITERS, SAVE = (70, 70, 1), 25


def _options(root, workers=0, iters=ITERS):
    yml, exp = tiny_options(root, stage_iters=iters, save_freq=SAVE)
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


def _kill_grow_resume(root, kills):
    """Kill the tiny run at each (stage, state) of ``kills``, with a seventh image added after the first kill
    (35 batches per epoch instead of 30); resume to the end. Returns (final weights, last stdout, folder)."""
    yml, exp = _options(root, iters=(ITERS[0], 1, 1))  # stage 1 is the point
    for i, (stage, state) in enumerate(kills):
        args = ('--auto_resume',) if i else ()
        assert start_training_and_kill_at(yml, exp / stage / 'training_states' / f'{state}.state', args=args)
        if i == 0:
            make_pairs(str(root / 'data'), n=7, size=(80, 80), scale=4)  # the first six are the same images
    proc = run_module('rlfn_arch.train', '-opt', yml, '--auto_resume', subprocess=True)
    return _final(exp), proc.stdout, exp


def test_the_position_is_saved_with_the_state_and_survives_a_data_change(tmp_path):
    """Resumed on changed data, the interrupted epoch starts over (said on the console) and the stage still
    runs exactly total_iter iterations; a second kill after that resumes from the saved position, so it ends
    bit-identical to the run killed once (recounting from iteration and epoch would land elsewhere)."""
    once, out, exp = _kill_grow_resume(tmp_path / 'once', [('s1', 25)])
    assert 'dataset_len 6 -> 7' in out and 'starts over at iteration 25' in out
    state = safe_load(exp / 's1' / 'training_states' / '50.state')
    # epoch 0 restarted at iteration 25 with 35 batches: at iteration 50 it has consumed 25 of them
    assert state['sampler']['consumed_batches'] == 25 and state['sampler']['origin'] == [0, 25]
    assert iters_in_log(exp / 's1')[-1] == ITERS[0]
    twice, out2, _ = _kill_grow_resume(tmp_path / 'twice', [('s1', 25), ('s1', 50)])
    assert 'changed' not in out2
    assert all(torch.equal(twice[k], once[k]) for k in once)


def test_an_int8_stage_killed_mid_epoch_resumes_bit_identical_ranges_included(tmp_path):
    """The quantization-aware stage resumes like any stage: weights and every quantizer's observed range end
    as in the run that never stopped (the ranges are in the checkpoint; the observers move in training only),
    learned ranges and their optimizer state included."""
    def options(root):
        yml, exp = _options(root, iters=(1, 1, 40))  # ranges calibrated on 10 batches, then learned
        edit(yml, lambda o: o['stages'][2]['train'].update(qat={'convs': 'all', 'calibration_batches': 10,
                                                                'ranges': 'learned'}))
        return yml, exp
    yml, exp = options(tmp_path / 'full')
    run_module('rlfn_arch.train', '-opt', yml, subprocess=True)
    full = _final(exp)
    yml, exp = options(tmp_path / 'killed')
    assert start_training_and_kill_at(yml, exp / 's3' / 'training_states' / '25.state')  # 25 of 30 batches
    proc = run_module('rlfn_arch.train', '-opt', yml, '--auto_resume', subprocess=True)
    assert '[s3] resuming from' in proc.stdout
    final = _final(exp)
    assert final.keys() == full.keys() and any('output_fq' in k for k in final)
    assert any(k.endswith('range_scale') and float(v.abs().max()) > 0 for k, v in final.items())  # they learned
    assert all(torch.equal(final[k], full[k]) for k in final)
