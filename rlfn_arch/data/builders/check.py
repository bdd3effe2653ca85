"""Check an HR/LR pair (two folders or two LMDBs) as training reads it, every problem listed."""
import os

from rlfn_arch.data.checks import check_paired_folders, check_paired_lmdb, dataset_items, deep_check, summarize

from .common import PrepareError


def check_pair(hr, lr, scale, filename_tmpl='{}x{s}', deep=False, workers=None):
    """Check an HR/LR pair as training would read it: two folders, or two LMDBs (``*.lmdb``). ``deep``
    decodes every image once. Returns (number of problems, the report's lines: at most 20 problems, then
    where the full list was written).

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
    head = f'{n} {what} checked against {lr}{" (every image decoded)" if deep else ""}: {len(problems)} problem(s)'
    return len(problems), [head] + [f'  {p}' for p in summarize(problems)]
