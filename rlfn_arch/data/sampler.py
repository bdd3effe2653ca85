"""A training sampler that makes a resumed run the same run: the position in the epoch is part of the
training state, and each sample's augmentation depends only on (seed, epoch, position).

:class:`ResumableSampler` gives exactly the order of BasicSR's ``EnlargedSampler`` (the same permutation,
seeded by the epoch; ``dataset_enlarge_ratio``; rank shards ``rank::world_size``), and

* resumes inside an epoch: built with the training state's iteration and epoch, the first epoch it
  serves skips the batches the run already consumed, by index arithmetic alone (nothing is loaded);
* yields sample keys ``(index, seed, epoch, position)`` to datasets that take them
  (:class:`rlfn_arch.data.checked_dataset.CheckedPairedImageDataset`), which reseed Python's and NumPy's
  random generators from the key before BasicSR's random crop, flips and rotations and restore them
  afterwards: the augmentation of a sample no longer depends on the DataLoader worker, the number of
  workers, or when the process started. Other datasets receive plain indices.

The position is saved with the training state (:meth:`ResumableSampler.state`, the ``sampler`` entry
written by :class:`rlfn_arch.models.warmstart_model.WarmStartModel`): the epoch, the batches of it already
consumed, and what the order depends on (dataset length, enlarge ratio, world size, batch size, seed).
Epochs are counted from an *origin* ``(E0, I0)``: epoch ``E0`` serves the iterations ``I0 + 1 .. I0 + P``
and every later epoch the next ``P`` (``P`` = full batches per process; BasicSR drops the last incomplete
batch). A fresh run has origin ``(0, 0)``, so epoch ``e`` serves ``e * P + 1 .. (e + 1) * P``.

If the data changed before a resume (another dataset length, ratio, world size, batch size or seed), the
saved position means nothing for the new order: the interrupted epoch starts over at the resumed iteration
(BasicSR's own behaviour), :attr:`ResumableSampler.resume_note` says so, and the origin moves there, so
later states are counted right. Training states written before the entry existed are placed from their
(iteration, epoch) with origin ``(0, 0)``.
"""
import math

import torch
from torch.utils.data.sampler import Sampler


def _well_formed(saved):
    """A ``sampler`` entry as :meth:`ResumableSampler.state` writes it (ints; ``origin`` two ints)."""
    if not isinstance(saved, dict):
        return False
    origin = saved.get('origin')
    return all(type(saved.get(k)) is int for k in ('epoch', 'consumed_batches')) and \
        isinstance(origin, (list, tuple)) and len(origin) == 2 and all(type(v) is int for v in origin)


class ResumableSampler(Sampler):
    """BasicSR's EnlargedSampler order, resumable inside an epoch, with per-sample keys.

    Args:
        dataset: the training dataset (``len()`` is used; ``sample_keys = True`` on it selects keys).
        num_replicas (int): world size.
        rank (int): this process's rank.
        ratio (int): ``dataset_enlarge_ratio``. Default: 1.
        seed (int): the run's ``manual_seed`` (the augmentation keys). Default: 0.
        batch_size (int): samples per batch per process (to count consumed batches). Default: 1.
        resume_epoch (int | None), resume_iter (int | None): where the resumed training state stopped.
        saved (dict | None): that state's ``sampler`` entry (:meth:`state`); None for a state written
            before the entry existed. Default: None.

    Attributes:
        resume_note (str | None): why a resumed run is not the same run as one that never stopped (the
            data changed since the state was saved); None when it is.
    """

    def __init__(self, dataset, num_replicas, rank, ratio=1, seed=0, batch_size=1, resume_epoch=None,
                 resume_iter=None, saved=None):
        self.dataset, self.num_replicas, self.rank, self.ratio = dataset, num_replicas, rank, ratio
        self.epoch, self.seed, self.batch_size = 0, seed, batch_size
        self.num_samples = math.ceil(len(dataset) * ratio / num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.batches_per_epoch = self.num_samples // batch_size
        self.keys = bool(getattr(dataset, 'sample_keys', False))
        self.origin, self._skip, self.resume_note = (0, 0), {}, None
        if resume_iter is not None and self.batches_per_epoch:
            consumed = self._position(resume_epoch, resume_iter, saved)
            self._skip = {resume_epoch: consumed * batch_size}

    @classmethod
    def for_run(cls, seed, batch_size, resume_state=None):
        """A builder with BasicSR's ``EnlargedSampler(dataset, num_replicas, rank, ratio)`` signature that makes
        this sampler for one stage: ``seed`` (the run's ``manual_seed``), ``batch_size`` (per process), and the
        position of ``resume_state`` (a loaded training state: its ``epoch``, ``iter`` and ``sampler`` entry;
        None for a fresh stage)."""
        state = resume_state or {}

        def build(dataset, num_replicas, rank, ratio=1):
            return cls(dataset, num_replicas, rank, ratio, seed=seed, batch_size=batch_size,
                       resume_epoch=state.get('epoch'), resume_iter=state.get('iter'), saved=state.get('sampler'))
        return build

    def fingerprint(self):
        """What the order and the augmentation keys depend on (dict of ints)."""
        return {'dataset_len': len(self.dataset), 'enlarge_ratio': self.ratio, 'world_size': self.num_replicas,
                'batch_size': self.batch_size, 'seed': self.seed}

    def state(self, epoch, current_iter):
        """The entry a training state saved at ``current_iter`` (during ``epoch``) keeps for this sampler.

        Returns:
            dict: ``epoch``, ``consumed_batches`` (of that epoch, per process), ``origin`` and the
            :meth:`fingerprint`.
        """
        e0, i0 = self.origin
        return {'epoch': epoch, 'consumed_batches': current_iter - i0 - (epoch - e0) * self.batches_per_epoch,
                'origin': [e0, i0], **self.fingerprint()}

    def _position(self, epoch, it, saved):
        """Batches of ``epoch`` consumed at iteration ``it``; sets the origin (and the note if the data changed)."""
        per_epoch = self.batches_per_epoch
        if saved is not None and not _well_formed(saved):
            why = f'its sampler entry is not one this sampler wrote: {str(saved)[:120]}'
        elif saved is not None:
            changed = [f'{k} {saved.get(k)} -> {v}' for k, v in self.fingerprint().items() if saved.get(k) != v]
            e0, i0 = saved['origin']
            consumed = saved['consumed_batches']
            # only what this state's iteration and epoch make possible: a tampered origin would end the stage
            # early or run empty epochs for ever
            possible = 0 <= e0 <= epoch and 0 <= i0 <= it and it - i0 - (epoch - e0) * per_epoch == consumed
            if not changed and saved['epoch'] == epoch and 0 <= consumed <= per_epoch and possible:
                self.origin = (e0, i0)
                return consumed
            why = ', '.join(changed) or (
                f'the saved position (epoch {saved["epoch"]}) does not match epoch {epoch}' if saved['epoch'] != epoch
                else f'sampler entry origin {[e0, i0]} with {consumed} consumed batches is impossible at iteration '
                f'{it} of epoch {epoch} ({per_epoch} batches per epoch)')
        else:  # a state from before the entry existed: epochs counted from (0, 0)
            consumed = it - epoch * per_epoch
            if 0 <= consumed <= per_epoch:
                return consumed
            why = f'iteration {it} is not inside epoch {epoch} at {per_epoch} batches per epoch'
        self.origin = (epoch, it)
        self.resume_note = (f'the training data changed since this state was saved ({why}): epoch {epoch} starts '
                            f'over at iteration {it}, so this run is no longer the same as one that never stopped')
        return 0

    def epochs_to_reach(self, total_iter):
        """BasicSR's ``total_epochs`` (its loop runs epochs ``start .. total_epochs``) that reach ``total_iter``."""
        e0, i0 = self.origin
        return e0 + math.ceil(max(total_iter - i0, 0) / self.batches_per_epoch)

    def order(self, epoch):
        """Every process's sample indices of ``epoch``, in BasicSR's order (``torch.randperm`` seeded by it)."""
        g = torch.Generator()
        g.manual_seed(epoch)
        n = len(self.dataset)
        return [v % n for v in torch.randperm(self.total_size, generator=g).tolist()]

    def __iter__(self):
        # every iterator of the resumed epoch skips (BasicSR's CPUPrefetcher makes one when it is built and
        # another after set_epoch; both serve the same epoch), later epochs are whole
        skip = self._skip.get(self.epoch, 0)
        order = self.order(self.epoch)
        positions = range(self.rank + skip * self.num_replicas, self.total_size, self.num_replicas)
        if self.keys:
            return iter([(order[p], self.seed, self.epoch, p) for p in positions])
        return iter([order[p] for p in positions])

    def __len__(self):
        return self.num_samples

    def set_epoch(self, epoch):
        self.epoch = epoch
