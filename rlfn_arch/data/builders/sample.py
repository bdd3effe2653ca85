"""The embedded default dataset: colour photographs shipped inside scikit-image (no download)."""
import json
import os
import shutil
import time

import cv2
import skimage.data

from rlfn_arch.data.image_io import write_png
from rlfn_arch.data.matlab_resize import modcrop
from rlfn_arch.utils.fs import atomic_write, is_inside

from .bicubic import make_bicubic_lr
from .common import PrepareError, Summary
from .df2k import _lcm
from .lmdb import build_lmdb
from .subimages import make_subimages

#: The embedded default dataset: colour photographs shipped inside scikit-image (no download).
SAMPLE_TRAIN = ['astronaut', 'rocket', 'hubble_deep_field', 'retina', 'immunohistochemistry', 'stereo_motorcycle']
SAMPLE_VAL = ['chelsea', 'coffee']  # held out: never cropped into the training LMDBs
SAMPLE_SCALES = (2, 3, 4)
SAMPLE_SUB = dict(crop=192, step=96, thresh=24)  # divisible by 2, 3 and 4
SAMPLE_VERSION = 2


def _skimage_images(name):
    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity)
        return {f'{name}_left': img[0], f'{name}_right': img[1]}
    return {name: img}


def sample_folder(root):
    """Where the embedded default dataset lives in a project: ``<root>/datasets/sample`` (the option files read
    it there; ``prepare sample`` builds it there by default)."""
    return os.path.join(root, 'datasets', 'sample')


def sample_ready(out_dir):
    """True when ``prepare sample`` completed in ``out_dir`` (it writes sample.json last)."""
    return _sample_info(out_dir).get('version') == SAMPLE_VERSION


def _sample_info(out_dir):
    """The contents of ``out_dir/sample.json`` when this builder wrote it ({} otherwise)."""
    try:
        with open(os.path.join(out_dir, 'sample.json'), encoding='utf-8') as f:
            info = json.load(f)
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) and info.get('source') == 'scikit-image data' else {}


SAMPLE_ENTRIES = ('train', 'val', 'sample.json')  # what the builder puts into its folder (sample.json last)
_BUILD_MARKER = '.rlfn_sample_build'  # inside the builder's own temporary folder


def _remove_stale_builds(parent, base):
    """Temporary folders of killed builds: ``.<base>.tmp-<pid>`` holding the builder's marker."""
    for name in os.listdir(parent):
        full = os.path.join(parent, name)
        if name.startswith(f'.{base}.tmp-') and os.path.isfile(os.path.join(full, _BUILD_MARKER)) \
                and not os.path.islink(full):
            shutil.rmtree(full)


def _plan_sample_folder(out_dir, overwrite):
    """How the finished build goes into ``out_dir``: ``(ours, clashes)``. Refuses (PrepareError) a folder
    this builder did not make that is not empty, unless ``overwrite``."""
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise PrepareError(f'{out_dir}: exists and is not a folder')
    entries = os.listdir(out_dir) if os.path.isdir(out_dir) else []
    ours = bool(_sample_info(out_dir))
    if entries and not ours and not overwrite:
        raise PrepareError(f'{out_dir} is not empty ({len(entries)} entries) and was not made by prepare sample (no '
                           'sample.json of ours); nothing was changed. Choose a new or empty folder, or pass '
                           '--overwrite to add the sample dataset to it (its own train/, val/ or sample.json, if any, '
                           'are renamed to *_archived_<time>; nothing is deleted)')
    return ours, [e for e in SAMPLE_ENTRIES if e in entries]


def _remove_own_files(old, out_dir, listed):
    """Delete, inside ``old`` (an entry of an earlier build in ``out_dir``), only the files that build listed in
    its sample.json, then the folders this left empty. Returns True when nothing else was there."""
    prefix = os.path.relpath(old, out_dir) + os.sep
    for rel in listed:
        full = os.path.join(out_dir, rel)
        if (rel + os.sep).startswith(prefix) and os.path.isfile(full) and not os.path.islink(full) \
                and is_inside(full, old):
            os.unlink(full)
    for d, _, _ in sorted(os.walk(old), key=lambda w: -len(w[0])):  # deepest first
        if not os.listdir(d) and not os.path.islink(d):
            os.rmdir(d)
    return not os.path.lexists(old)


def _install_sample(tmp, out_dir, ours, clashes, notes):
    """Move the finished build from ``tmp`` into ``out_dir``. Of an earlier sample build, exactly the files its
    sample.json lists are replaced (sample.json first, so a kill in between leaves no complete-looking folder);
    anything else in its folders (files a user put there) and everyone else's entries are archived, never
    deleted."""
    os.makedirs(out_dir, exist_ok=True)
    stamp = time.strftime('%Y%m%d_%H%M%S')
    listed = _sample_info(out_dir).get('files') if ours else None
    for entry in sorted(clashes, key=lambda e: e != 'sample.json'):
        old = os.path.join(out_dir, entry)
        if ours and entry == 'sample.json':
            os.unlink(old)
            continue
        if ours and isinstance(listed, list) and os.path.isdir(old) and not os.path.islink(old) \
                and _remove_own_files(old, out_dir, listed):
            continue
        target, n = f'{old}_archived_{stamp}', 1
        while os.path.lexists(target):  # two rebuilds within one second
            target, n = f'{old}_archived_{stamp}_{n}', n + 1
        os.rename(old, target)
        what = 'files that prepare sample did not write' if ours else 'an entry that is not ours'
        notes.append(f'{old} held {what}: renamed to {target} (--overwrite; nothing of yours deleted)')
    for entry in SAMPLE_ENTRIES:  # sample.json last: it marks the folder complete
        os.rename(os.path.join(tmp, entry), os.path.join(out_dir, entry))
    os.unlink(os.path.join(tmp, _BUILD_MARKER))
    os.rmdir(tmp)


def build_sample_dataset(out_dir, workers=None, overwrite=False):
    """Build ``out_dir`` (train/val HR, MATLAB-exact LR x2/x3/x4, training LMDBs). Deterministic.

    The dataset is built in a temporary folder beside ``out_dir`` and moved in when complete. The builder
    only ever deletes what it made itself: an earlier sample build (``sample.json`` of ours) or its own
    temporary folders. A non-empty folder it did not make is refused unless ``overwrite``.

    Raises:
        PrepareError: ``out_dir`` is a file, or a non-empty folder of someone else's without ``overwrite``.
    """
    out_dir = os.path.abspath(out_dir)
    summ = Summary(f'sample dataset {out_dir}')
    if sample_ready(out_dir) and not overwrite:
        summ.notes.append(f'{out_dir} is complete (sample.json); pass --overwrite to rebuild')
        return [summ.finish()]
    ours, clashes = _plan_sample_folder(out_dir, overwrite)
    t0 = time.time()
    parent, base = os.path.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    _remove_stale_builds(parent, base)
    tmp = os.path.join(parent, f'.{base}.tmp-{os.getpid()}')
    os.makedirs(tmp)
    open(os.path.join(tmp, _BUILD_MARKER), 'w').close()
    try:
        parts = _build_sample_into(tmp, workers)
        _install_sample(tmp, out_dir, ours, clashes, summ.notes)
    finally:
        if os.path.isdir(tmp) and os.path.isfile(os.path.join(tmp, _BUILD_MARKER)):
            shutil.rmtree(tmp)
    summ.notes.append(f'sample dataset ready in {out_dir} ({time.time() - t0:.1f} s)')
    return parts + [summ.finish()]


def _build_sample_into(out_dir, workers):
    """Build the sample dataset's content into ``out_dir`` (a fresh folder); returns the builders' summaries."""
    parts = []
    for split, names in (('train', SAMPLE_TRAIN), ('val', SAMPLE_VAL)):
        for name in names:
            for key, rgb in _skimage_images(name).items():
                bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
                if split == 'train':  # one HR sub-image set serves x2, x3 and x4
                    bgr = modcrop(bgr, _lcm(SAMPLE_SCALES))
                write_png(os.path.join(out_dir, split, 'HR', f'{key}.png'), bgr)
        parts.append(make_bicubic_lr(os.path.join(out_dir, split, 'HR'), os.path.join(out_dir, split, 'LR_bicubic'),
                                     SAMPLE_SCALES, workers))
    train = os.path.join(out_dir, 'train')
    work = os.path.join(train, '_sub')
    for i, s in enumerate(SAMPLE_SCALES):
        hr_sub = os.path.join(work, 'HR_sub' if i == 0 else f'HR_sub_x{s}')
        lr_dir = os.path.join(train, 'LR_bicubic', f'X{s}')
        parts.append(make_subimages(os.path.join(train, 'HR'), hr_sub, lr_dir=lr_dir,
                                    lr_out=os.path.join(work, f'LR_X{s}_sub'), scale=s, workers=workers, **SAMPLE_SUB))
        parts.append(build_lmdb(os.path.join(work, f'LR_X{s}_sub'), os.path.join(train, f'LR_bicubic_X{s}_sub.lmdb'),
                                workers=workers))
    parts.append(build_lmdb(os.path.join(work, 'HR_sub'), os.path.join(train, 'HR_sub.lmdb'), workers=workers))
    shutil.rmtree(work)  # made by this build, inside its own temporary folder
    files = sorted(os.path.relpath(os.path.join(d, f), out_dir) for d, _, fs in os.walk(out_dir) for f in fs
                   if f != _BUILD_MARKER)
    info = {'version': SAMPLE_VERSION, 'source': 'scikit-image data', 'train': SAMPLE_TRAIN, 'val': SAMPLE_VAL,
            'scales': list(SAMPLE_SCALES), 'subimages': SAMPLE_SUB, 'files': files}  # what --overwrite may replace
    atomic_write(os.path.join(out_dir, 'sample.json'), lambda f: json.dump(info, f, indent=1), binary=False)
    return parts
