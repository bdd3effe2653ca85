"""MATLAB-exact bicubic LR images: HR folder -> ``X{s}/<name>x{s}.png``."""
import os
from functools import partial

from rlfn_arch.data.image_io import ImageReadError, list_images, read_image, write_png
from rlfn_arch.data.matlab_resize import bicubic_lr

from .common import PrepareError, map_folder


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
    return map_folder('bicubic', hr_dir, out_dir, fn, workers)
