"""Dataset builders (library; ``python -m rlfn_arch.prepare`` is their command-line front).

* :func:`make_bicubic_lr`   HR folder -> ``LR_bicubic/X{s}/<name>x{s}.png``, MATLAB
  ``imresize(modcrop(HR,s),1/s)`` bit for bit (see :mod:`rlfn_arch.data.matlab_resize`).
* :func:`make_subimages`    overlapping sub-images (BasicSR's DIV2K convention), HR and LR together.
* :func:`build_lmdb`        image folder -> ``*.lmdb`` with ``meta_info.txt`` (basicsr's ``lmdb_util``),
  built in a temporary folder and renamed when complete; keys that survive BasicSR's key derivation.
* :func:`build_df2k`        DIV2K + Flickr2K -> the HR/LR sub-image LMDBs of the paper recipes.
* :func:`build_sample_dataset` the embedded default dataset from the photographs inside scikit-image.
* :func:`check_pair`        an HR/LR pair (folders or LMDBs) as training reads it, every problem listed.

Every builder uses all CPU cores by default (``workers``), shows a progress bar on a terminal, returns a
:class:`Summary` (``failed`` inputs are listed; the rest is written) and raises :class:`PrepareError` for
input it cannot use at all. Nothing here exits the process.
"""
import errno
import json
import math
import multiprocessing
import os
import re
import shutil
import sys
import time
from functools import partial

import cv2
import lmdb
import skimage.data
from PIL import Image
from tqdm import tqdm

from rlfn_arch.basicsr_seam import quiet_lmdb_progress
from rlfn_arch.data.checks import check_paired_folders, check_paired_lmdb, dataset_items, deep_check, summarize
from rlfn_arch.data.image_io import ImageReadError, header_size, list_images, read_image, write_png
from rlfn_arch.data.matlab_resize import bicubic_lr, modcrop
from rlfn_arch.utils.fs import WriteError, atomic_write

from basicsr.utils import lmdb_util, sizeof_fmt


class PrepareError(ValueError):
    """Input that a preparation command cannot use (a bad path, no usable image, bad arguments)."""


class Summary:
    """Counts and problems of one command, printed at the end. ``failed``: inputs that could not be
    used (the command exits non-zero when there is any); ``skipped``: files that are not images."""

    def __init__(self, what):
        self.what, self.t0 = what, time.time()
        self.images = self.outputs = self.bytes = 0
        self.skipped, self.failed, self.notes = [], [], []

    def add_file(self, path):
        self.outputs += 1
        self.bytes += os.path.getsize(path)

    def print(self):
        print(f'\n{self.what}: {self.images} images in, {self.outputs} files out, {sizeof_fmt(self.bytes)}, '
              f'{time.time() - self.t0:.1f} s, {len(self.failed)} failed, {len(self.skipped)} skipped')
        for s in self.failed:
            print(f'  failed: {s}')
        for s in self.skipped:
            print(f'  skipped: {s}')
        for n in self.notes:
            print(f'  note: {n}')


def _pool_map(fn, items, workers, desc):
    bar = dict(total=len(items), desc=desc, unit='img', disable=not sys.stderr.isatty())
    if workers <= 1 or len(items) <= 1:
        yield from tqdm(map(fn, items), **bar)
        return
    with multiprocessing.get_context('fork' if os.name == 'posix' else 'spawn').Pool(workers) as pool:
        yield from tqdm(pool.imap(fn, items), **bar)


def default_workers():
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)


# ------------------------------------------------------------------------------------------ bicubic
def _bicubic_one(name, hr_dir, out_dir, scales):
    notes = []
    try:
        hr = read_image(os.path.join(hr_dir, name), notes)
    except ImageReadError as e:
        return name, [], notes, str(e)
    stem = os.path.splitext(name)[0]
    written = []
    for s in scales:
        if hr.shape[0] < s or hr.shape[1] < s:
            return name, written, notes, (f'{os.path.join(hr_dir, name)}: {hr.shape[1]}x{hr.shape[0]} is smaller '
                                          f'than scale {s}')
        if hr.shape[0] % s or hr.shape[1] % s:
            notes.append(f'{name}: {hr.shape[1]}x{hr.shape[0]} not divisible by {s}, modcropped')
        path = os.path.join(out_dir, f'X{s}', f'{stem}x{s}.png')
        write_png(path, bicubic_lr(hr, s))
        written.append(path)
    return name, written, notes, None


def check_outputs(in_dir, out_dirs, planned, overwrite, what):
    """Refuse (PrepareError) an output folder equal to or inside ``in_dir``, and, without ``overwrite``,
    outputs that would replace existing files (counted, the first few named). Nothing is written."""
    real_in = os.path.realpath(in_dir)
    for d in out_dirs:
        real = os.path.realpath(d)
        if real == real_in or os.path.commonpath([real, real_in]) == real_in:
            where = 'the input folder' if real == real_in else f'inside the input folder {in_dir}'
            raise PrepareError(f'{what}: the output folder {d} is {where}; choose an output folder outside the input')
    existing = [p for p in planned if os.path.lexists(p)]
    if existing and not overwrite:
        shown = ', '.join(existing[:3]) + (f' and {len(existing) - 3} more' if len(existing) > 3 else '')
        raise PrepareError(f'{what}: {len(existing)} existing file(s) would be replaced ({shown}); nothing was '
                           'written. Pass --overwrite to replace them, or choose an empty output folder')


def make_bicubic_lr(hr_dir, out_dir=None, scales=(2, 3, 4), workers=None, overwrite=False):
    """HR folder -> ``out_dir/X{s}/<stem>x{s}.png``. Default ``out_dir``: ``<HR>/../LR_bicubic``.

    Raises:
        PrepareError: ``out_dir`` is (inside) ``hr_dir``, or files would be replaced without ``overwrite``.
    """
    out_dir = out_dir or os.path.join(os.path.dirname(os.path.abspath(hr_dir)), 'LR_bicubic')
    names = list_images(hr_dir)[0]
    check_outputs(hr_dir, [out_dir], [os.path.join(out_dir, f'X{s}', f'{os.path.splitext(n)[0]}x{s}.png')
                                      for n in names for s in scales], overwrite, 'bicubic')
    fn = partial(_bicubic_one, hr_dir=hr_dir, out_dir=out_dir, scales=tuple(scales))
    return _map_folder('bicubic', hr_dir, out_dir, fn, workers)


def _map_folder(what, in_dir, out_dir, fn, workers):
    """Apply ``fn(name) -> (name, written, notes, error)`` to every image of ``in_dir`` in a process
    pool; collect the summary (non-image files and failed images are listed as skipped)."""
    names, others = list_images(in_dir)
    summ = Summary(f'{what} {in_dir} -> {out_dir}')
    summ.skipped += [f'{os.path.join(in_dir, o)}: not an image file' for o in others]
    for _name, written, notes, err in _pool_map(fn, names, workers or default_workers(), what):
        summ.images += 1
        summ.notes += notes
        for p in written:
            summ.add_file(p)
        if err:
            summ.failed.append(err)
    summ.print()
    return summ


# ---------------------------------------------------------------------------------------- subimages
def crop_starts(length, crop, step, thresh):
    """Start offsets of the crops along one axis.

    BasicSR's convention: every ``step`` pixels, plus one crop aligned to the end when more than
    ``thresh`` pixels would be left over. Where 0 < leftover <= thresh, BasicSR's script drops those
    border pixels; we shift the last crop to the end instead (by at most ``thresh`` pixels), so the
    crops cover every pixel. An axis shorter than ``crop`` gives one crop of the whole axis.
    """
    if length <= crop:
        return [0]
    starts = list(range(0, length - crop + 1, step))
    left = length - (starts[-1] + crop)
    if left > thresh or (left > 0 and len(starts) == 1):  # a lone crop cannot shift without a gap
        starts.append(length - crop)
    elif left > 0:
        starts[-1] = length - crop
    return starts


def _lr_name(lr_dir, stem, scale):
    for cand in (f'{stem}x{scale}', stem):
        for ext in ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp'):
            if os.path.isfile(os.path.join(lr_dir, cand + ext)):
                return cand + ext
    return None


def _subimages_one(name, hr_dir, out_dir, crop, step, thresh, lr_dir, lr_out, scale):
    notes, written = [], []
    try:
        hr = read_image(os.path.join(hr_dir, name), notes)
        stem = os.path.splitext(name)[0]
        lr = None
        if lr_dir:
            lr_name = _lr_name(lr_dir, stem, scale)
            if lr_name is None:
                raise ImageReadError(f'{os.path.join(hr_dir, name)}: no LR file {stem}x{scale}.* or {stem}.* '
                                     f'in {lr_dir}')
            lr = read_image(os.path.join(lr_dir, lr_name), notes)
            hr = modcrop(hr, scale)
            if (lr.shape[0] * scale, lr.shape[1] * scale) != hr.shape[:2]:
                raise ImageReadError(f'{os.path.join(lr_dir, lr_name)}: LR {lr.shape[1]}x{lr.shape[0]} x{scale} does '
                                     f'not match HR {hr.shape[1]}x{hr.shape[0]} (after modcrop)')
        h, w = hr.shape[:2]
        if h < crop or w < crop:
            notes.append(f'{name}: {w}x{h} is smaller than the {crop}px crop; kept whole along the short side')
        k = 0
        for y in crop_starts(h, crop, step, thresh):
            for x in crop_starts(w, crop, step, thresh):
                k += 1
                sub = f'{stem}_s{k:03d}.png'
                path = os.path.join(out_dir, sub)
                write_png(path, hr[y:y + crop, x:x + crop, ...])
                written.append(path)
                if lr is not None:
                    s = scale
                    path = os.path.join(lr_out, sub)
                    write_png(path, lr[y // s:(y + crop) // s, x // s:(x + crop) // s, ...])
                    written.append(path)
        return name, written, notes, None
    except ImageReadError as e:
        return name, written, notes, str(e)


def _planned_subimages(hr_dir, out_dirs, crop, step, thresh, scale):
    """The sub-image files a run would write (crop counts from the image headers; an unreadable header
    counts every existing ``<stem>_sNNN.png``)."""
    planned = []
    for name in list_images(hr_dir)[0]:
        stem = os.path.splitext(name)[0]
        size = header_size(os.path.join(hr_dir, name))
        for d in out_dirs:
            if size is None:
                pat = re.compile(rf'^{re.escape(stem)}_s\d{{3,}}\.png$')
                planned += [os.path.join(d, f) for f in (os.listdir(d) if os.path.isdir(d) else []) if pat.match(f)]
                continue
            w, h = (size[0] - size[0] % scale, size[1] - size[1] % scale) if scale else size
            k = len(crop_starts(h, crop, step, thresh)) * len(crop_starts(w, crop, step, thresh))
            planned += [os.path.join(d, f'{stem}_s{i:03d}.png') for i in range(1, k + 1)]
    return planned


def make_subimages(hr_dir, out_dir, crop=480, step=240, thresh=48, lr_dir=None, lr_out=None, scale=None, workers=None,
                   overwrite=False):
    """Crop ``hr_dir`` into sub-images; with ``lr_dir``, crop the matching LR images at ``crop/scale``.

    Raises:
        PrepareError: an output folder is (inside) the input, or files would be replaced without ``overwrite``.
    """
    if lr_dir:
        if not scale or not lr_out:
            raise PrepareError('--lr needs --scale and --lr_output')
        for name, v in (('crop', crop), ('step', step), ('thresh', thresh)):
            if v % scale:
                raise PrepareError(f'--{name} {v} must be divisible by --scale {scale}')
    outs = [out_dir] + ([lr_out] if lr_dir else [])
    for d in outs:
        if lr_dir:
            check_outputs(lr_dir, [d], [], True, 'subimages')
    check_outputs(hr_dir, outs, _planned_subimages(hr_dir, outs, crop, step, thresh, scale if lr_dir else None),
                  overwrite, 'subimages')
    fn = partial(_subimages_one, hr_dir=hr_dir, out_dir=out_dir, crop=crop, step=step, thresh=thresh,
                 lr_dir=lr_dir, lr_out=lr_out, scale=scale)
    os.makedirs(out_dir, exist_ok=True)
    return _map_folder('subimages', hr_dir, out_dir, fn, workers)


# --------------------------------------------------------------------------------------------- lmdb
def _estimate_map_size(folder, names):
    """LMDB map size from the data: raw pixel bytes (PNG level 1 never exceeds them by much) x 1.5 + 64 MiB.

    basicsr's estimate (first image's PNG size x count x 10) fails with MDB_MAP_FULL on small sets
    with one small first image. The map is only reserved address space, so a generous bound is free.
    """
    total = 0
    for n in names:
        try:
            with Image.open(os.path.join(folder, n)) as im:
                total += im.size[0] * im.size[1] * max(3, len(im.getbands()))
        except Exception:
            total += os.path.getsize(os.path.join(folder, n)) * 4
    return int(total * 1.5) + (64 << 20)


def lmdb_keys(names, folder, notes):
    """LMDB keys for image file names that survive BasicSR's key derivation unchanged.

    BasicSR reads the keys back from ``meta_info.txt`` by cutting each name at its first dot and encodes
    them as ASCII, so a stem holding a dot (``a.b``), a space, or a non-ASCII letter would be read back
    as another key, collide, or crash. Such stems are renamed deterministically (every other character
    becomes ``_``; the HR and LR LMDBs built from the same names get the same keys), each rename noted.

    Raises:
        PrepareError: two names that would get the same key, naming both.
    """
    keys, seen = [], {}
    for n in names:
        stem = os.path.splitext(n)[0]
        key = re.sub(r'[^A-Za-z0-9_-]', '_', stem) or '_'
        if key != stem:
            notes.append(f'{os.path.join(folder, n)}: stored under the key {key!r} (BasicSR keys are ASCII, '
                         'without dots or spaces)')
        if key in seen:
            raise PrepareError(f'{os.path.join(folder, seen[key])} and {os.path.join(folder, n)} would both be '
                               f'stored under the key {key!r}; rename one of them')
        seen[key] = n
        keys.append(key)
    return keys


def build_lmdb(folder, lmdb_path, overwrite=False, compress_level=1, workers=None):
    """Folder -> LMDB (keys = file stems, ``meta_info.txt`` as BasicSR expects), atomically.

    Raises:
        FileExistsError: ``lmdb_path`` exists and ``overwrite`` is False.
    """
    if not lmdb_path.endswith('.lmdb'):
        raise PrepareError(f'{lmdb_path}: the LMDB folder name must end with .lmdb')
    lmdb_path = os.path.abspath(lmdb_path.rstrip('/'))
    if os.path.exists(lmdb_path) and not overwrite:
        raise FileExistsError(f'{lmdb_path} already exists; pass --overwrite to replace it')
    names, others = list_images(folder)
    summ = Summary(f'lmdb {folder} -> {lmdb_path}')
    summ.skipped += [f'{os.path.join(folder, o)}: not an image file' for o in others]
    good = []
    for n in names:  # basicsr's reader would crash on a bad file half-way; check first
        try:
            read_image(os.path.join(folder, n), summ.notes)
            good.append(n)
        except ImageReadError as e:
            summ.failed.append(str(e))
    if not good:
        raise PrepareError(f'{folder}: no readable images ({len(summ.failed)} failed, {len(others)} not images)')
    keys = lmdb_keys(good, folder, summ.notes)
    parent, base = os.path.split(lmdb_path)
    os.makedirs(parent, exist_ok=True)
    for stale in os.listdir(parent):  # leftovers of interrupted runs
        if stale.startswith(f'.{base[:-5]}.tmp-') and stale.endswith('.lmdb'):
            shutil.rmtree(os.path.join(parent, stale), ignore_errors=True)
    tmp = os.path.join(parent, f'.{base[:-5]}.tmp-{os.getpid()}.lmdb')
    quiet = not sys.stdout.isatty()  # basicsr's per-image bars flood logs and CI output
    try:
        try:
            with quiet_lmdb_progress(quiet):
                lmdb_util.make_lmdb_from_imgs(
                    folder, tmp, good, keys, compress_level=compress_level,
                    multiprocessing_read=(workers or default_workers()) > 1, n_thread=workers or default_workers(),
                    map_size=_estimate_map_size(folder, good))
        except lmdb.Error as e:  # mdb_txn_commit on a full disk, a read-only folder, ...
            previous = 'the previous LMDB there is intact' if os.path.exists(lmdb_path) else 'nothing was written there'
            raise WriteError(lmdb_path, getattr(e, 'errno', None) or errno.EIO,
                             f'{type(e).__name__}: {e} ({previous}; free space or fix permissions and run '
                             'again)') from e
        if os.path.exists(lmdb_path):
            old = lmdb_path + f'.old-{os.getpid()}'
            os.rename(lmdb_path, old)
            os.rename(tmp, lmdb_path)
            shutil.rmtree(old)
        else:
            os.rename(tmp, lmdb_path)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    summ.images = len(names)
    for f in os.listdir(lmdb_path):
        summ.add_file(os.path.join(lmdb_path, f))
    summ.print()
    return summ


# --------------------------------------------------------------------------------------------- df2k
DF2K_LAYOUT = """Expected input (unpack the archives as downloaded):
  DIV2K_train_HR.zip  -> <div2k>/DIV2K_train_HR/0001.png ... 0800.png
  Flickr2K.tar        -> <flickr2k>/Flickr2K_HR/000001.png ... 002650.png
LR images are made here with MATLAB-exact bicubic (identical to the provided *_LR_bicubic files)."""


def _find_hr(root, names):
    for n in names:
        if os.path.isdir(os.path.join(root, n)):
            return os.path.join(root, n)
    if os.path.isdir(root) and list_images(root)[0]:
        return root
    raise PrepareError(f'{root}: none of {names} found.\n{DF2K_LAYOUT}')


def _lcm(values):
    out = 1
    for v in values:
        out = out * v // math.gcd(out, v)
    return out


def modcrop_copy(names_dirs, dst_dir, multiple, workers):
    """Write each HR image modcropped to ``multiple`` (the lcm of the scales) into ``dst_dir``, so
    every scale crops the same HR sub-images and one HR LMDB serves all scales."""
    os.makedirs(dst_dir, exist_ok=True)
    fn = partial(_modcrop_one, dst_dir=dst_dir, multiple=multiple)
    skipped = []
    for err in _pool_map(fn, names_dirs, workers, 'modcrop'):
        if err:
            skipped.append(err)
    return skipped


def _modcrop_one(item, dst_dir, multiple):
    src_dir, name = item
    try:
        img = read_image(os.path.join(src_dir, name))
    except ImageReadError as e:
        return str(e)
    dst = os.path.join(dst_dir, os.path.splitext(name)[0] + '.png')
    if not os.path.exists(dst):
        write_png(dst, modcrop(img, multiple))
    return None


def build_df2k(div2k, flickr2k, out_dir, scales=(2, 4), crop=480, step=240, thresh=48, workers=None, overwrite=False):
    """DIV2K (+ Flickr2K) -> ``out_dir/DF2K_HR_sub.lmdb`` and ``out_dir/DF2K_LR_bicubic_X{s}_sub.lmdb``."""
    hr_dirs = [_find_hr(div2k, ['DIV2K_train_HR'])]
    if flickr2k:
        hr_dirs.append(_find_hr(flickr2k, ['Flickr2K_HR', os.path.join('Flickr2K', 'Flickr2K_HR')]))
    work = os.path.join(out_dir, '_work')
    hr_all = os.path.join(work, 'HR')
    # one flat HR folder (names do not collide: 0001 vs 000001), modcropped to lcm(scales)
    items = [(d, n) for d in hr_dirs for n in list_images(d)[0]]
    first = Summary(f'modcrop to {_lcm(scales)} -> {hr_all}')
    first.failed = modcrop_copy(items, hr_all, _lcm(scales), workers or default_workers())
    # _work is this command's own folder: its intermediate files are replaced on a rerun
    summaries = [first, make_bicubic_lr(hr_all, os.path.join(work, 'LR_bicubic'), scales, workers, overwrite=True)]
    hr_sub = os.path.join(work, 'HR_sub')
    for i, s in enumerate(scales):
        lr_sub = os.path.join(work, f'LR_bicubic_X{s}_sub')
        summaries.append(make_subimages(hr_all, hr_sub if i == 0 else os.path.join(work, f'HR_sub_tmp{s}'), crop, step,
                                       thresh, os.path.join(work, 'LR_bicubic', f'X{s}'), lr_sub, s, workers,
                                       overwrite=True))
        summaries.append(build_lmdb(lr_sub, os.path.join(out_dir, f'DF2K_LR_bicubic_X{s}_sub.lmdb'), overwrite,
                                  workers=workers))
        if i:
            shutil.rmtree(os.path.join(work, f'HR_sub_tmp{s}'))
    summaries.append(build_lmdb(hr_sub, os.path.join(out_dir, 'DF2K_HR_sub.lmdb'), overwrite, workers=workers))
    for summ in summaries[:1]:
        for err in summ.failed:
            print(f'  failed: {err}')
    print(f'\nDF2K LMDBs in {out_dir}; the intermediate images are in {work} (safe to delete)')
    return summaries


# ------------------------------------------------------------------------------------------- sample
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


def _install_sample(tmp, out_dir, ours, clashes):
    """Move the finished build from ``tmp`` into ``out_dir``: entries of an earlier sample build are replaced
    (sample.json first, so a kill in between leaves no complete-looking folder); anyone else's are archived."""
    os.makedirs(out_dir, exist_ok=True)
    stamp = time.strftime('%Y%m%d_%H%M%S')
    for entry in sorted(clashes, key=lambda e: e != 'sample.json'):
        old = os.path.join(out_dir, entry)
        if ours:
            shutil.rmtree(old) if os.path.isdir(old) and not os.path.islink(old) else os.unlink(old)
        else:
            os.rename(old, f'{old}_archived_{stamp}')
            print(f'{old} renamed to {old}_archived_{stamp} (--overwrite; nothing deleted)')
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
    if sample_ready(out_dir) and not overwrite:
        print(f'{out_dir} is complete (sample.json); pass --overwrite to rebuild')
        return
    ours, clashes = _plan_sample_folder(out_dir, overwrite)
    t0 = time.time()
    parent, base = os.path.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    _remove_stale_builds(parent, base)
    tmp = os.path.join(parent, f'.{base}.tmp-{os.getpid()}')
    os.makedirs(tmp)
    open(os.path.join(tmp, _BUILD_MARKER), 'w').close()
    try:
        _build_sample_into(tmp, workers)
        _install_sample(tmp, out_dir, ours, clashes)
    finally:
        if os.path.isdir(tmp) and os.path.isfile(os.path.join(tmp, _BUILD_MARKER)):
            shutil.rmtree(tmp)
    print(f'\nsample dataset ready in {out_dir} ({time.time() - t0:.1f} s)')


def _build_sample_into(out_dir, workers):
    for split, names in (('train', SAMPLE_TRAIN), ('val', SAMPLE_VAL)):
        for name in names:
            for key, rgb in _skimage_images(name).items():
                bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
                if split == 'train':  # one HR sub-image set serves x2, x3 and x4
                    bgr = modcrop(bgr, _lcm(SAMPLE_SCALES))
                write_png(os.path.join(out_dir, split, 'HR', f'{key}.png'), bgr)
        make_bicubic_lr(os.path.join(out_dir, split, 'HR'), os.path.join(out_dir, split, 'LR_bicubic'), SAMPLE_SCALES,
                        workers)
    train = os.path.join(out_dir, 'train')
    work = os.path.join(train, '_sub')
    for i, s in enumerate(SAMPLE_SCALES):
        hr_sub = os.path.join(work, 'HR_sub' if i == 0 else f'HR_sub_x{s}')
        make_subimages(os.path.join(train, 'HR'), hr_sub, lr_dir=os.path.join(train, 'LR_bicubic', f'X{s}'),
                       lr_out=os.path.join(work, f'LR_X{s}_sub'), scale=s, workers=workers, **SAMPLE_SUB)
        build_lmdb(os.path.join(work, f'LR_X{s}_sub'), os.path.join(train, f'LR_bicubic_X{s}_sub.lmdb'),
                   workers=workers)
    build_lmdb(os.path.join(work, 'HR_sub'), os.path.join(train, 'HR_sub.lmdb'), workers=workers)
    shutil.rmtree(work)  # made by this build, inside its own temporary folder
    info = {'version': SAMPLE_VERSION, 'source': 'scikit-image data', 'train': SAMPLE_TRAIN, 'val': SAMPLE_VAL,
            'scales': list(SAMPLE_SCALES), 'subimages': SAMPLE_SUB}
    atomic_write(os.path.join(out_dir, 'sample.json'), lambda f: json.dump(info, f, indent=1), binary=False)


# -------------------------------------------------------------------------------------------- check
def check_pair(hr, lr, scale, filename_tmpl='{}x{s}', deep=False, workers=None):
    """Check an HR/LR pair as training would read it: two folders, or two LMDBs (``*.lmdb``). Prints
    every problem; returns their number. ``deep`` decodes every image once.

    Raises:
        PrepareError: the inputs are neither two folders of images nor two LMDBs.
    """
    kinds = ['lmdb' if str(p).rstrip('/').endswith('.lmdb') else 'folder' for p in (hr, lr)]
    if kinds[0] != kinds[1]:
        raise PrepareError(f'--hr {hr} is a {kinds[0]} but --lr {lr} is a {kinds[1]}; give two folders or two LMDBs')
    for p in (hr, lr):
        if not os.path.isdir(p):
            raise PrepareError(f'{p}: not a folder (expected an image folder or an .lmdb folder)')
    tmpl = filename_tmpl.replace('{s}', str(scale))
    if kinds[0] == 'lmdb':
        problems, n = check_paired_lmdb(hr, lr, scale)
        what, opt = 'HR keys', {'io_backend': {'type': 'lmdb'}, 'dataroot_gt': hr, 'dataroot_lq': lr}
    else:
        problems, n = check_paired_folders(hr, lr, scale, tmpl)
        what, opt = 'HR images', {'io_backend': {'type': 'disk'}, 'dataroot_gt': hr, 'dataroot_lq': lr}
    if n == 0 and not problems:
        problems.append(f'{hr}: no images to check')
    if deep and not problems:
        problems = deep_check(dataset_items(opt), workers)
    print(f'{n} {what} checked against {lr}{" (every image decoded)" if deep else ""}: {len(problems)} problem(s)')
    for p in summarize(problems):
        print(f'  {p}')
    return len(problems)
