"""ResumableSampler: BasicSR's order for every enlarge ratio, world size and rank; a resumed sampler serves
exactly what the uninterrupted one had left; per-sample augmentation depends on the key alone."""
import math
import random

import numpy as np
import pytest
import torch

from rlfn_arch.data.sampler import ResumableSampler

from basicsr.data.data_sampler import EnlargedSampler


class _Data:
    def __init__(self, n, keys=False):
        self.n, self.sample_keys = n, keys

    def __len__(self):
        return self.n


@pytest.mark.parametrize('n,ratio,world', [(6, 1, 1), (7, 3, 2), (10, 10, 3), (5, 2, 4)])
def test_the_order_is_basicsrs_for_every_ratio_world_size_and_rank(n, ratio, world):
    for rank in range(world):
        ours, theirs = ResumableSampler(_Data(n), world, rank, ratio), EnlargedSampler(_Data(n), world, rank, ratio)
        for epoch in (0, 1, 7):
            ours.set_epoch(epoch)
            theirs.set_epoch(epoch)
            assert list(ours) == list(theirs) and len(ours) == len(theirs)


@pytest.mark.parametrize('world,batch', [(1, 2), (2, 3)])
def test_a_resumed_sampler_serves_exactly_the_rest_of_the_epoch_then_whole_epochs(world, batch):
    n, ratio = 7, 3
    for rank in range(world):
        full = ResumableSampler(_Data(n), world, rank, ratio, batch_size=batch)
        per_epoch = full.batches_per_epoch
        for it in (per_epoch * 2 + 1, per_epoch * 3 - 1, per_epoch * 3):  # inside epoch 2, and at its very end
            resumed = ResumableSampler(_Data(n), world, rank, ratio, batch_size=batch, resume_epoch=2, resume_iter=it)
            for epoch in (2, 3):
                full.set_epoch(epoch)
                resumed.set_epoch(epoch)
                expect = list(full)[(it - 2 * per_epoch) * batch:] if epoch == 2 else list(full)
                assert list(resumed) == expect, (rank, it, epoch)


def test_every_iterator_of_the_resumed_epoch_skips_as_basicsrs_prefetcher_needs():
    """CPUPrefetcher calls iter() when it is built and again after set_epoch: both must resume."""
    full = ResumableSampler(_Data(6), 1, 0, 10, batch_size=2)
    resumed = ResumableSampler(_Data(6), 1, 0, 10, batch_size=2, resume_epoch=0, resume_iter=7)
    first = list(resumed)
    resumed.set_epoch(0)
    assert first == list(resumed) == list(full)[14:]


@pytest.mark.parametrize('world,batch', [(1, 2), (2, 3)])
def test_the_saved_entry_places_a_resumed_sampler(world, batch):
    n, ratio = 7, 3
    per_epoch = math.ceil(n * ratio / world) // batch  # full batches per process
    for rank in range(world):
        full = ResumableSampler(_Data(n), world, rank, ratio, batch_size=batch)
        full.set_epoch(2)
        it = 2 * per_epoch + 1
        entry = full.state(2, it)
        assert entry['consumed_batches'] == 1 and entry['dataset_len'] == n and entry['world_size'] == world
        resumed = ResumableSampler(_Data(n), world, rank, ratio, batch_size=batch, resume_epoch=2, resume_iter=it,
                                   saved=entry)
        resumed.set_epoch(2)
        assert resumed.resume_note is None and list(resumed) == list(full)[batch:]


def test_changed_data_starts_the_interrupted_epoch_over_and_says_what_changed():
    old = ResumableSampler(_Data(6), 1, 0, 10, batch_size=2)  # 30 batches per epoch
    entry = old.state(1, 50)  # epoch 1, 20 of its batches consumed
    new = ResumableSampler(_Data(7), 1, 0, 10, batch_size=2, resume_epoch=1, resume_iter=50, saved=entry)
    assert 'dataset_len 6 -> 7' in new.resume_note and 'starts over at iteration 50' in new.resume_note
    whole = ResumableSampler(_Data(7), 1, 0, 10, batch_size=2)
    for s in (new, whole):
        s.set_epoch(1)
    assert list(new) == list(whole)  # the interrupted epoch, from its start (BasicSR's behaviour)
    # epoch 1 now serves iterations 51..85 and epoch 2 86..120: a later state counts from there, and a
    # second resume from it continues exactly (recounting from iteration / epoch would not: 90 - 2 * 35 = 20, not 5)
    later = new.state(2, 90)
    assert later['consumed_batches'] == 5 and later['origin'] == [1, 50]
    again = ResumableSampler(_Data(7), 1, 0, 10, batch_size=2, resume_epoch=2, resume_iter=90, saved=later)
    for s in (again, whole):
        s.set_epoch(2)
    assert again.resume_note is None and list(again) == list(whole)[5 * 2:]


def test_epochs_reach_the_total_iterations_from_a_moved_origin():
    s = ResumableSampler(_Data(7), 1, 0, 10, batch_size=2)  # 35 batches per epoch
    assert s.epochs_to_reach(100) == math.ceil(100 / 35)
    moved = ResumableSampler(_Data(70), 1, 0, 10, batch_size=2, resume_epoch=9, resume_iter=95,
                             saved=s.state(9, 95))  # 350 batches per epoch now
    last = moved.epochs_to_reach(2000)  # BasicSR runs epochs 9..last inclusive
    served = 95 + (last - 9 + 1) * moved.batches_per_epoch
    assert served >= 2000 and served - moved.batches_per_epoch < 2000 + moved.batches_per_epoch


@pytest.mark.parametrize('entry', ['junk', {'epoch': 1}, {'epoch': 1, 'consumed_batches': '2', 'origin': [0, 0]},
                                   {'epoch': 1, 'consumed_batches': 2, 'origin': None}])
def test_a_malformed_entry_starts_the_epoch_over_and_says_so(entry):
    s = ResumableSampler(_Data(6), 1, 0, 1, batch_size=2, resume_epoch=1, resume_iter=4, saved=entry)
    assert 'sampler entry is not one this sampler wrote' in s.resume_note and s.origin == (1, 4)
    s.set_epoch(1)
    assert len(list(s)) == 6


def test_a_state_from_before_the_entry_is_placed_from_iteration_and_epoch():
    placed = ResumableSampler(_Data(6), 1, 0, 1, batch_size=2, resume_epoch=1, resume_iter=4)  # 3 per epoch
    placed.set_epoch(1)
    assert placed.resume_note is None and len(list(placed)) == 4  # 1 of 3 batches consumed
    impossible = ResumableSampler(_Data(6), 1, 0, 1, batch_size=2, resume_epoch=1, resume_iter=100)
    assert 'iteration 100 is not inside epoch 1' in impossible.resume_note
    impossible.set_epoch(1)
    assert len(list(impossible)) == 6


def test_keys_carry_seed_epoch_and_global_position():
    s = ResumableSampler(_Data(5, keys=True), 2, 1, 2, seed=7)
    s.set_epoch(3)
    keys = list(s)
    order = s.order(3)
    assert keys == [(order[p], 7, 3, p) for p in range(1, s.total_size, 2)]


def test_the_augmentation_of_a_sample_depends_on_its_key_alone(tmp_path):
    from helpers import make_pairs

    from rlfn_arch.data.checked_dataset import CheckedPairedImageDataset
    hr, lr = make_pairs(str(tmp_path), n=2, size=(80, 80), scale=4)
    ds = CheckedPairedImageDataset({'name': 't', 'dataroot_gt': hr, 'dataroot_lq': lr, 'filename_tmpl': '{}x4',
                                    'io_backend': {'type': 'disk'}, 'gt_size': 32, 'use_hflip': True,
                                    'use_rot': True, 'scale': 4, 'phase': 'train'})
    random.seed(1)
    np.random.seed(1)
    a = ds[(1, 0, 5, 17)]['lq']
    random.seed(2)  # another worker, another process state: the same sample
    b = ds[(1, 0, 5, 17)]['lq']
    c = ds[(1, 0, 6, 17)]['lq']  # another epoch: another crop
    assert torch.equal(a, b) and not torch.equal(a, c)
    state = random.getstate()
    ds[(0, 0, 0, 0)]
    assert random.getstate() == state  # the caller's generator is left as it was

