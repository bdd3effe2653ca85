"""Check paired datasets before training starts: every mismatch listed, not a crash hours in."""
import os
import sys
import tempfile

import cv2
import lmdb
import numpy as np
from tqdm import tqdm

from rlfn_arch.data.image_io import ImageReadError, decode_unchanged, header_size
from rlfn_arch.utils.runtime import worker_pool

from .image_io import list_images

#: The end marker each format must have near the end of a complete file (a cheap truncation test:
#: reads at most 1 KiB per file, no decoding). PNG: the IEND chunk; JPEG: the EOI marker, which
#: cannot occur inside entropy-coded data (0xFF there is always stuffed with 0x00 or a restart marker).
_END_MARKERS = {'.png': b'IEND', '.jpg': b'\xff\xd9', '.jpeg': b'\xff\xd9'}


def _size(path):
    """(w, h) from the header, or a string saying why the file is unusable (unreadable, truncated)."""
    size = header_size(path)
    if size is None:
        return 'unreadable (no image header that PIL can identify)'
    marker = _END_MARKERS.get(os.path.splitext(path)[1].lower())
    if marker:
        with open(path, 'rb') as f:
            f.seek(max(0, os.path.getsize(path) - 1024))
            if marker not in f.read():
                return 'truncated (no end marker; the file is incomplete)'
    return size


#: How many problems a check prints; the rest go to a file whose path is printed.
SHOWN_PROBLEMS = 20


def summarize(problems, shown=SHOWN_PROBLEMS):
    """At most ``shown`` problems, then one line with how many more there are and the file that lists
    every one of them (written to the temporary folder, never beside the data)."""
    if len(problems) <= shown:
        return list(problems)
    fd, path = tempfile.mkstemp(prefix='rlfn_dataset_problems_', suffix='.txt')
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
        f.write('\n'.join(problems) + '\n')
    return list(problems[:shown]) + [f'... and {len(problems) - shown:,} more ({len(problems):,} problems in all); '
                                     f'the full list is in {path}']


def check_paired_folders(hr_dir, lr_dir, scale, filename_tmpl='{}'):
    """Compare an HR and an LR folder as basicsr's ``paired_paths_from_folder`` pairs them.

    Returns:
        (list[str], int): the problems (each naming the file) and the number of HR images.
    """
    problems = []
    for d in (hr_dir, lr_dir):
        if not os.path.isdir(d):
            return [f'{d}: folder not found'], 0
    hr_names, _ = list_images(hr_dir)
    lr_names, _ = list_images(lr_dir)
    lr_set = set(lr_names)
    used = set()
    for name in hr_names:
        stem, ext = os.path.splitext(name)
        lr_name = filename_tmpl.format(stem) + ext
        if lr_name not in lr_set:
            problems.append(f'{os.path.join(hr_dir, name)}: no LR image {lr_name} in {lr_dir}')
            continue
        used.add(lr_name)
        hs, ls = _size(os.path.join(hr_dir, name)), _size(os.path.join(lr_dir, lr_name))
        if isinstance(hs, str) or isinstance(ls, str):
            bad = os.path.join(hr_dir, name) if isinstance(hs, str) else os.path.join(lr_dir, lr_name)
            problems.append(f'{bad}: {hs if isinstance(hs, str) else ls}')
            continue
        if (hs[0] // scale, hs[1] // scale) != tuple(ls):
            problems.append(f'{os.path.join(lr_dir, lr_name)}: LR {ls[0]}x{ls[1]} does not match HR {name} '
                            f'{hs[0]}x{hs[1]} at x{scale} (expected {hs[0] // scale}x{hs[1] // scale})')
    for extra in sorted(lr_set - used):
        problems.append(f'{os.path.join(lr_dir, extra)}: LR image without an HR partner')
    return problems, len(hr_names)


class MetaInfoError(ValueError):
    """A malformed ``meta_info.txt`` line, with the file and line number."""


def lmdb_key(name):
    """The key BasicSR's ``paired_paths_from_lmdb`` derives from a ``meta_info.txt`` name: everything
    before the first dot (``a.b.png`` -> ``a``)."""
    return name.split('.')[0]


def read_meta_info(lmdb_dir):
    """{key: (h, w, c)} from an LMDB's ``meta_info.txt`` (basicsr's format: ``name.png (h,w,c) level``),
    keys derived exactly as BasicSR derives them; None when the file is missing.

    Raises:
        MetaInfoError: a malformed line, or two lines that BasicSR would read as the same key.
    """
    path = os.path.join(lmdb_dir, 'meta_info.txt')
    if not os.path.isfile(path):
        return None
    out = {}
    with open(path, encoding='utf-8', errors='replace') as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.strip().rsplit(' ', 2)
            try:
                shape = tuple(int(v) for v in parts[1].strip('()').split(','))
                if len(parts) != 3 or len(shape) != 3 or min(shape) < 1:
                    raise ValueError
            except (IndexError, ValueError):
                raise MetaInfoError(f'{path}:{i}: malformed line {line.strip()[:80]!r}; '
                                    'expected "name.png (h,w,c) level"')
            key = lmdb_key(parts[0])
            if key in out:
                raise MetaInfoError(f'{path}:{i}: {parts[0]!r} gives the key {key!r} a second time (BasicSR keys '
                                    'are the names up to the first dot); rebuild with python -m rlfn_arch.prepare lmdb')
            out[key] = shape
    return out


def lmdb_problems(lmdb_dir, keys):
    """Open an LMDB read-only and check it without touching a page beyond the end of ``data.mdb``: a
    truncated file (which would kill a DataLoader worker with a bus error) and every key of ``keys``
    that the database lacks are reported, naming the file."""
    data = os.path.join(lmdb_dir, 'data.mdb')
    try:
        size = os.path.getsize(data)
        with lmdb.open(lmdb_dir, readonly=True, lock=False, readahead=False, subdir=True) as env:
            needed = (env.info()['last_pgno'] + 1) * env.stat()['psize']
            if needed > size:
                return [f'{data}: truncated ({size:,} bytes; the database needs {needed:,}); rebuild it with '
                        'python -m rlfn_arch.prepare lmdb']
            problems = []
            with env.begin() as txn:
                for k in keys:
                    try:
                        found = txn.get(k.encode('ascii')) is not None
                    except UnicodeEncodeError:
                        problems.append(f'{lmdb_dir}: key {k!r} is not ASCII (BasicSR encodes keys as ASCII)')
                        continue
                    if not found:
                        problems.append(f'{lmdb_dir}: key {k!r} is listed in meta_info.txt but missing from data.mdb')
            return problems
    except (lmdb.Error, OSError) as e:
        return [f'{data}: cannot be opened as an LMDB ({type(e).__name__}: {e})']


def check_paired_lmdb(gt_lmdb, lq_lmdb, scale):
    """Compare an HR and an LR LMDB as BasicSR pairs them (keys from ``meta_info.txt``), check that
    each opens cleanly and holds every listed key. Returns (problems, number of HR keys)."""
    problems = []
    metas = {}
    for d in (gt_lmdb, lq_lmdb):
        if not os.path.isdir(d) or not os.path.isfile(os.path.join(d, 'data.mdb')):
            problems.append(f'{d}: not a complete LMDB (data.mdb missing); '
                            'build it with python -m rlfn_arch.prepare lmdb')
            continue
        try:
            metas[d] = read_meta_info(d)
        except MetaInfoError as e:
            problems.append(str(e))
            continue
        if metas[d] is None:
            problems.append(f'{d}: meta_info.txt missing')
    if problems:
        return problems, 0
    gt, lq = metas[gt_lmdb], metas[lq_lmdb]
    for d in dict.fromkeys((gt_lmdb, lq_lmdb)):
        problems += lmdb_problems(d, sorted(metas[d]))
    for k in sorted(set(gt) - set(lq)):
        problems.append(f'{gt_lmdb}: key {k} has no LR partner in {lq_lmdb}')
    for k in sorted(set(lq) - set(gt)):
        problems.append(f'{lq_lmdb}: key {k} has no HR partner in {gt_lmdb}')
    for k in sorted(set(gt) & set(lq)):
        (gh, gw), (lh, lw) = gt[k][:2], lq[k][:2]
        if (gh // scale, gw // scale) != (lh, lw) or gh % scale or gw % scale:
            problems.append(f'{lq_lmdb}: {k} LR {lw}x{lh} does not match HR {gw}x{gh} at x{scale}')
    return problems, len(gt)


# ------------------------------------------------------------------------------------ deep check
def _decode_lmdb_chunk(args):
    lmdb_dir, keys = args
    bad = []
    with lmdb.open(lmdb_dir, readonly=True, lock=False, readahead=False) as env, env.begin() as txn:
        for k in keys:
            buf = txn.get(k.encode('ascii'))
            img = None if buf is None else cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_UNCHANGED)
            if img is None:
                bad.append(f'{lmdb_dir}: key {k}: the stored image cannot be decoded')
    return bad


def _decode_file(path):
    try:
        decode_unchanged(path)
        return None
    except ImageReadError as e:
        return str(e)


def deep_check(items, workers=None, desc='decoding'):
    """Decode every image once, in parallel, with a progress bar on a terminal. ``items``: file paths
    and (lmdb_dir, [keys]) pairs. Returns the problems, each naming the file or the key."""

    files = [i for i in items if isinstance(i, str)]
    jobs = [(d, keys[j:j + 256]) for d, keys in (i for i in items if not isinstance(i, str))
            for j in range(0, len(keys), 256)]
    total = len(files) + sum(len(k) for _, k in jobs)
    problems = []
    with tqdm(total=total, desc=desc, unit='img', disable=not sys.stderr.isatty()) as bar, worker_pool(workers) as pool:
        for res in pool.imap(_decode_file, files, chunksize=16):
            bar.update(1)
            if res:
                problems.append(res)
        for (_, keys), res in zip(jobs, pool.imap(_decode_lmdb_chunk, jobs)):
            bar.update(len(keys))
            problems += res
    return problems


def dataset_items(dataset_opt):
    """What a deep check decodes for one PairedImageDataset block: file paths or (lmdb, keys)."""
    gt, lq = dataset_opt.get('dataroot_gt'), dataset_opt.get('dataroot_lq')
    if (dataset_opt.get('io_backend') or {}).get('type', 'disk') == 'lmdb':
        return [(d, sorted(read_meta_info(d) or {})) for d in (gt, lq)]
    return [os.path.join(d, n) for d in (gt, lq) for n in list_images(d)[0]]


def check_dataset_opt(dataset_opt, scale, min_lq=None, deep=None):
    """Problems of one PairedImageDataset option block (resolved paths). Other dataset types: none.

    ``deep`` (default: the block's ``deep_check`` option) also decodes every image once."""
    if dataset_opt.get('type') not in ('PairedImageDataset', 'CheckedPairedImageDataset'):
        return []
    deep = dataset_opt.get('deep_check', False) if deep is None else deep
    gt, lq = dataset_opt.get('dataroot_gt'), dataset_opt.get('dataroot_lq')
    backend = (dataset_opt.get('io_backend') or {}).get('type', 'disk')
    name = dataset_opt.get('name', '?')
    if backend == 'lmdb':
        problems, _ = check_paired_lmdb(gt, lq, scale)
        if not problems and min_lq:
            for k, shp in read_meta_info(lq).items():
                if shp[0] < min_lq or shp[1] < min_lq:
                    problems.append(f'{lq}: {k} is {shp[1]}x{shp[0]}, smaller than the {min_lq}px LR patch')
    elif 'meta_info_file' in dataset_opt and dataset_opt['meta_info_file']:
        problems = []
    else:
        problems, _ = check_paired_folders(gt, lq, scale, dataset_opt.get('filename_tmpl', '{}'))
    if deep and not problems:
        problems = deep_check(dataset_items(dataset_opt), desc=f'deep check {name}')
    return [f'dataset {name}: {p}' for p in problems]


def count_pairs(dataset_opt):
    """How many samples a PairedImageDataset block holds (BasicSR's pairing: LMDB keys, meta_info_file lines
    or HR images); None for other dataset types or unreadable sources (the checks above report those)."""
    if dataset_opt.get('type') not in ('PairedImageDataset', 'CheckedPairedImageDataset'):
        return None
    try:
        if (dataset_opt.get('io_backend') or {}).get('type', 'disk') == 'lmdb':
            meta = read_meta_info(dataset_opt['dataroot_gt'])
            return None if meta is None else len(meta)
        if dataset_opt.get('meta_info_file'):
            with open(dataset_opt['meta_info_file'], encoding='utf-8', errors='replace') as f:
                return sum(1 for line in f if line.strip())
        return len(list_images(dataset_opt['dataroot_gt'])[0])
    except (OSError, MetaInfoError):
        return None
