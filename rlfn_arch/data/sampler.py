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

Epoch ``e`` serves the iterations ``e * P + 1 .. (e + 1) * P`` (``P`` = full batches per process; BasicSR
drops the last incomplete batch), so a state saved at iteration ``i`` during epoch ``e`` has consumed
``i - e * P`` batches of it.
"""
import math

import torch
from torch.utils.data.sampler import Sampler


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
    """

    def __init__(self, dataset, num_replicas, rank, ratio=1, seed=0, batch_size=1, resume_epoch=None,
                 resume_iter=None):
        self.dataset, self.num_replicas, self.rank = dataset, num_replicas, rank
        self.epoch, self.seed, self.batch_size = 0, seed, batch_size
        self.num_samples = math.ceil(len(dataset) * ratio / num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.batches_per_epoch = self.num_samples // batch_size
        self.keys = bool(getattr(dataset, 'sample_keys', False))
        self._skip = {}
        if resume_iter is not None and self.batches_per_epoch:
            consumed = resume_iter - resume_epoch * self.batches_per_epoch
            if not 0 <= consumed <= self.batches_per_epoch:
                raise ValueError(f'training state: iteration {resume_iter} is not inside epoch {resume_epoch} '
                                 f'({self.batches_per_epoch} batches per epoch); the data or batch size changed')
            self._skip = {resume_epoch: consumed * batch_size}

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
