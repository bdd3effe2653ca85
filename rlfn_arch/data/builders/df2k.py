"""DIV2K + Flickr2K as downloaded -> the HR/LR sub-image LMDBs of the paper recipes."""
import math
import os
import shutil
from functools import partial

from rlfn_arch.data.image_io import ImageReadError, list_images, read_image, write_png
from rlfn_arch.data.matlab_resize import modcrop

from .bicubic import make_bicubic_lr
from .common import PrepareError, Summary, default_workers, pool_map
from .lmdb import build_lmdb
from .subimages import make_subimages

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
    for err in pool_map(fn, names_dirs, workers, 'modcrop'):
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
    first.finish()
    done = Summary(f'DF2K LMDBs in {out_dir}')
    done.notes.append(f'the intermediate images are in {work} (safe to delete)')
    return summaries + [done.finish()]
