"""Overlapping sub-images (BasicSR's DIV2K convention), HR and LR together."""
import os
import re
from functools import partial

from rlfn_arch.data.image_io import IMG_EXTENSIONS, ImageReadError, header_size, list_images, read_image, write_png
from rlfn_arch.data.matlab_resize import modcrop

from .bicubic import check_outputs
from .common import PrepareError, map_folder


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
        for ext in IMG_EXTENSIONS:
            if os.path.isfile(os.path.join(lr_dir, cand + ext)):
                return cand + ext
    return None


def _subimages_one(name, hr_dir, out_dir, crop, step, thresh, lr_dir, lr_out, scale, min_size=0):
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
        if min(h, w) < min_size:
            notes.append(f'{name}: {w}x{h} is below --min_size {min_size}; no sub-image written')
            return name, written, notes, None
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


def _planned_subimages(hr_dir, out_dirs, crop, step, thresh, scale, min_size=0):
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
            if min(w, h) < min_size:
                continue
            k = len(crop_starts(h, crop, step, thresh)) * len(crop_starts(w, crop, step, thresh))
            planned += [os.path.join(d, f'{stem}_s{i:03d}.png') for i in range(1, k + 1)]
    return planned


def make_subimages(hr_dir, out_dir, crop=480, step=240, thresh=48, lr_dir=None, lr_out=None, scale=None, workers=None,
                   overwrite=False, min_size=0):
    """Crop ``hr_dir`` into sub-images; with ``lr_dir``, crop the matching LR images at ``crop/scale``.
    Images whose shorter HR side (after modcrop) is below ``min_size`` are left out with a note (a training
    patch of ``gt_size`` needs sub-images at least that large).

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
    planned = _planned_subimages(hr_dir, outs, crop, step, thresh, scale if lr_dir else None, min_size)
    check_outputs(hr_dir, outs, planned, overwrite, 'subimages')
    fn = partial(_subimages_one, hr_dir=hr_dir, out_dir=out_dir, crop=crop, step=step, thresh=thresh,
                 lr_dir=lr_dir, lr_out=lr_out, scale=scale, min_size=min_size)
    os.makedirs(out_dir, exist_ok=True)
    return map_folder('subimages', hr_dir, out_dir, fn, workers)
