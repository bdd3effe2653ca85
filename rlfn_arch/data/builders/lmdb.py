"""Image folder -> LMDB (basicsr's ``lmdb_util``), built in a temporary folder and renamed when complete."""
import errno
import os
import re
import shutil
import sys

import lmdb
from PIL import Image

from rlfn_arch.basicsr_seam import quiet_lmdb_progress
from rlfn_arch.data.image_io import ImageReadError, list_images, read_image
from rlfn_arch.utils.fs import WriteError, is_inside, same_file

from basicsr.utils import lmdb_util

from .common import PrepareError, Summary, default_workers


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


#: What an LMDB written by :func:`build_lmdb` (BasicSR's ``make_lmdb_from_imgs``) holds, and nothing else.
LMDB_FILES = {'data.mdb', 'lock.mdb', 'meta_info.txt'}


def is_our_lmdb(path):
    """True when ``path`` is a real folder holding exactly an LMDB of the kind this builder writes
    (``data.mdb`` and ``meta_info.txt``, optionally ``lock.mdb``, all regular files, nothing else)."""
    if os.path.islink(path) or not os.path.isdir(path):
        return False
    entries = set(os.listdir(path))
    return {'data.mdb', 'meta_info.txt'} <= entries <= LMDB_FILES and \
        all(os.path.isfile(os.path.join(path, e)) and not os.path.islink(os.path.join(path, e)) for e in entries)


def _check_target(folder, lmdb_path, overwrite):
    """Refuse an output that holds the input, exists without ``overwrite``, or is not an LMDB of ours."""
    if same_file(lmdb_path, folder) or is_inside(folder, lmdb_path):
        raise PrepareError(f'{lmdb_path}: the input folder {folder} is, or lies inside, the output LMDB; refusing '
                           '(replacing it would delete the input images). Choose another --output')
    if os.path.lexists(lmdb_path) and not overwrite:
        raise FileExistsError(f'{lmdb_path} already exists; pass --overwrite to replace it')
    if os.path.lexists(lmdb_path) and not is_our_lmdb(lmdb_path):
        raise PrepareError(f'{lmdb_path} exists and is not an LMDB this command wrote (expected only data.mdb, '
                           'lock.mdb and meta_info.txt in a folder); --overwrite replaces only such LMDBs, so '
                           'nothing was changed. Move it aside or choose another --output')


def _install(tmp, lmdb_path):
    """Move the finished LMDB ``tmp`` to ``lmdb_path``, replacing an old one of ours (checked by the caller)."""
    if os.path.exists(lmdb_path):
        old = lmdb_path + f'.old-{os.getpid()}'
        os.rename(lmdb_path, old)
        os.rename(tmp, lmdb_path)
        shutil.rmtree(old)
    else:
        os.rename(tmp, lmdb_path)


def build_lmdb(folder, lmdb_path, overwrite=False, compress_level=1, workers=None):
    """Folder -> LMDB (keys = file stems, ``meta_info.txt`` as BasicSR expects), atomically.

    ``overwrite`` replaces only an LMDB of this builder's kind (:func:`is_our_lmdb`), never a folder holding the
    input.

    Raises:
        FileExistsError: ``lmdb_path`` exists and ``overwrite`` is False.
        PrepareError: ``lmdb_path`` is not ours to replace, or the input lies inside it.
    """
    if not lmdb_path.endswith('.lmdb'):
        raise PrepareError(f'{lmdb_path}: the LMDB folder name must end with .lmdb')
    lmdb_path = os.path.abspath(lmdb_path.rstrip('/'))
    _check_target(folder, lmdb_path, overwrite)
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
        _install(tmp, lmdb_path)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    summ.images = len(names)
    for f in os.listdir(lmdb_path):
        summ.add_file(os.path.join(lmdb_path, f))
    return summ.finish()
