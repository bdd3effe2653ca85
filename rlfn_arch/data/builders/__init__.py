"""Dataset builders (library; ``python -m rlfn_arch.prepare`` is their command-line front).

* :func:`make_bicubic_lr`   HR folder -> ``LR_bicubic/X{s}/<name>x{s}.png``, MATLAB
  ``imresize(modcrop(HR,s),1/s)`` bit for bit (see :mod:`rlfn_arch.data.matlab_resize`).
* :func:`make_subimages`    overlapping sub-images (BasicSR's DIV2K convention), HR and LR together.
* :func:`build_lmdb`        image folder -> ``*.lmdb`` with ``meta_info.txt`` (basicsr's ``lmdb_util``),
  built in a temporary folder and renamed when complete; keys that survive BasicSR's key derivation.
* :func:`build_df2k`        DIV2K + Flickr2K -> the HR/LR sub-image LMDBs of the paper recipes.
* :func:`build_sample_dataset` the embedded default dataset from the photographs inside scikit-image.
* :func:`check_pair`        an HR/LR pair (folders or LMDBs) as training reads it, every problem listed.

One module per builder; they share :mod:`.common` (the process pool and the :class:`Summary` it fills).
Every builder uses all CPU cores by default (``workers``), shows a progress bar on a terminal, returns
its summaries (``failed`` inputs are listed; the rest is written) and raises :class:`PrepareError` for
input it cannot use at all. Nothing here prints a result or exits: ``python -m rlfn_arch.prepare`` prints.
"""
from .bicubic import check_outputs, make_bicubic_lr  # noqa: F401
from .check import check_pair  # noqa: F401
from .common import PrepareError, Summary, default_workers  # noqa: F401
from .df2k import DF2K_LAYOUT, build_df2k, modcrop_copy  # noqa: F401
from .lmdb import build_lmdb, lmdb_keys  # noqa: F401
from .sample import SAMPLE_SCALES, SAMPLE_SUB, SAMPLE_TRAIN, SAMPLE_VAL, build_sample_dataset, sample_ready  # noqa: F401
from .subimages import crop_starts, make_subimages  # noqa: F401
