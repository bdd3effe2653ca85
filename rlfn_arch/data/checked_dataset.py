"""BasicSR's PairedImageDataset with errors that name the sample.

basicsr's loader fails on a corrupt image deep inside a DataLoader worker with a bare ``TypeError`` or
``cv2.error`` that names neither the file nor the dataset; on DF2K that can be hours into a run. This
subclass overrides only ``__getitem__`` to re-raise such a failure as :class:`DatasetSampleError` with
the dataset name, the index and both file paths (or LMDB keys). The training entry point uses it for
every ``type: PairedImageDataset`` block; it can also be named directly.
"""
import random
import zlib

import numpy as np

from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.utils.registry import DATASET_REGISTRY


class DatasetSampleError(RuntimeError):
    """A training or validation sample that could not be loaded; the message names it."""


@DATASET_REGISTRY.register()
class CheckedPairedImageDataset(PairedImageDataset):
    """PairedImageDataset (same options, same samples) whose load errors name the dataset and files.

    It also takes the sample keys ``(index, seed, epoch, position)`` of
    :class:`rlfn_arch.data.sampler.ResumableSampler`: Python's and NumPy's random generators (which BasicSR's
    random crop, flips and rotations draw from) are seeded from the key for the sample and restored after
    it, so a sample's augmentation depends on (seed, epoch, position) alone.
    """

    sample_keys = True  # ResumableSampler yields keys to this dataset

    def __getitem__(self, key):
        if not isinstance(key, (tuple, list)):
            return self._load(key)
        index, seed, epoch, position = key
        token = f'{seed}:{epoch}:{position}'
        py_state, np_state = random.getstate(), np.random.get_state()
        random.seed(token)  # a str seed is hashed with SHA-512: the same in every process
        np.random.seed(zlib.crc32(token.encode()))
        try:
            return self._load(index)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)

    def _load(self, index):
        try:
            return super().__getitem__(index)
        except Exception as e:
            paths = self.paths[index % len(self.paths)] if self.paths else {}
            where = ', '.join(f'{k.replace("_path", "")}: {v}' for k, v in paths.items())
            backend = self.io_backend_opt.get('type', 'disk')
            first = str(e).strip().splitlines()[0] if str(e).strip() else ''
            raise DatasetSampleError(
                f'dataset {self.opt.get("name")}: sample {index} cannot be loaded ({backend}; {where}): '
                f'{type(e).__name__}: {first[:300]}. Run python -m rlfn_arch.prepare check --deep on the data, '
                'or set deep_check: true in the dataset section.') from e
