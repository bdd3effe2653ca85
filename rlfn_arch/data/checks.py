"""Check paired datasets before training starts: every mismatch listed, not a crash hours in."""
import os

from .image_io import list_images


def _size(path):
    from PIL import Image
    try:
        with Image.open(path) as im:
            return im.size  # (w, h)
    except Exception as e:
        return f'unreadable ({type(e).__name__})'


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
            bad = name if isinstance(hs, str) else lr_name
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


def _meta(lmdb_dir):
    """{key: (h, w, c)} from an LMDB's ``meta_info.txt`` (basicsr's format: ``name.png (h,w,c) level``)."""
    path = os.path.join(lmdb_dir, 'meta_info.txt')
    if not os.path.isfile(path):
        return None
    out = {}
    with open(path, encoding='utf-8', errors='replace') as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.strip().split(' ')
            try:
                shape = tuple(int(v) for v in parts[1].strip('()').split(','))
                if len(shape) != 3 or min(shape) < 1:
                    raise ValueError
            except (IndexError, ValueError):
                raise MetaInfoError(f'{path}:{i}: malformed line {line.strip()[:80]!r}; expected "name.png (h,w,c) level"')
            out[os.path.splitext(parts[0])[0]] = shape
    return out


def check_paired_lmdb(gt_lmdb, lq_lmdb, scale):
    problems = []
    metas = {}
    for d in (gt_lmdb, lq_lmdb):
        if not os.path.isdir(d) or not os.path.isfile(os.path.join(d, 'data.mdb')):
            problems.append(f'{d}: not a complete LMDB (data.mdb missing); build it with python -m rlfn_arch.prepare lmdb')
            continue
        try:
            metas[d] = _meta(d)
        except MetaInfoError as e:
            problems.append(str(e))
            continue
        if metas[d] is None:
            problems.append(f'{d}: meta_info.txt missing')
    if problems:
        return problems, 0
    gt, lq = metas[gt_lmdb], metas[lq_lmdb]
    for k in sorted(set(gt) - set(lq)):
        problems.append(f'{gt_lmdb}: key {k} has no LR partner in {lq_lmdb}')
    for k in sorted(set(lq) - set(gt)):
        problems.append(f'{lq_lmdb}: key {k} has no HR partner in {gt_lmdb}')
    for k in sorted(set(gt) & set(lq)):
        (gh, gw), (lh, lw) = gt[k][:2], lq[k][:2]
        if (gh // scale, gw // scale) != (lh, lw) or gh % scale or gw % scale:
            problems.append(f'{lq_lmdb}: {k} LR {lw}x{lh} does not match HR {gw}x{gh} at x{scale}')
    return problems, len(gt)


def check_dataset_opt(dataset_opt, scale, min_lq=None):
    """Problems of one PairedImageDataset option block (resolved paths). Other dataset types: none."""
    if dataset_opt.get('type') not in ('PairedImageDataset', ):
        return []
    gt, lq = dataset_opt.get('dataroot_gt'), dataset_opt.get('dataroot_lq')
    backend = (dataset_opt.get('io_backend') or {}).get('type', 'disk')
    name = dataset_opt.get('name', '?')
    if backend == 'lmdb':
        problems, _ = check_paired_lmdb(gt, lq, scale)
        if not problems and min_lq:
            for k, shp in _meta(lq).items():
                if shp[0] < min_lq or shp[1] < min_lq:
                    problems.append(f'{lq}: {k} is {shp[1]}x{shp[0]}, smaller than the {min_lq}px LR patch')
    elif 'meta_info_file' in dataset_opt and dataset_opt['meta_info_file']:
        problems = []
    else:
        problems, _ = check_paired_folders(gt, lq, scale, dataset_opt.get('filename_tmpl', '{}'))
    return [f'dataset {name}: {p}' for p in problems]
