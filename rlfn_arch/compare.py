"""Visual comparison: ``python -m rlfn_arch.compare --hr DIR --lr DIR --model_path FILE -o OUT``.

Writes, per test image, one PNG with the same zoomed crop of bicubic | model | (second model) | HR,
each labelled with its PSNR-Y on the whole image (border crop = scale). The crop is centred on the
region where the model differs most from bicubic, unless ``--crop x y size`` is given.
"""
import argparse
import os
import sys

import cv2
import numpy as np
import torch

import rlfn_arch  # noqa: F401
from rlfn_arch.data.image_io import ImageReadError, list_images, read_bgr, write_png
from rlfn_arch.data.matlab_resize import bicubic_upsample
from rlfn_arch.deploy.fast import optimize_for_inference
from rlfn_arch.deploy.source import add_model_args, open_model

from basicsr.metrics import calculate_psnr


def _sr(net, lr_bgr, device):
    x = torch.from_numpy(np.ascontiguousarray(lr_bgr[:, :, ::-1].transpose(2, 0, 1))).float().div(255)[None]
    with torch.inference_mode():
        y = net(x.to(device)).clamp(0, 1)[0].cpu().numpy().transpose(1, 2, 0)[:, :, ::-1]
    return (y * 255).round().astype(np.uint8)


def _panel(img, label, zoom):
    big = cv2.resize(img, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
    bar = np.full((28, big.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, label, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([big, bar])


def compare_one(hr, lr, scale, models, crop=None, size=48, zoom=4):
    """Return the comparison image (uint8 BGR) and the PSNR-Y of each column."""
    hr = hr[:lr.shape[0] * scale, :lr.shape[1] * scale]
    cols = [('bicubic', bicubic_upsample(lr, scale))] + [(name, _sr(net, lr, dev)) for name, net, dev in models]
    psnr = {n: calculate_psnr(img, hr, crop_border=scale, test_y_channel=True) for n, img in cols}
    if crop is None:
        diff = np.abs(cols[1][1].astype(np.float32) - cols[0][1].astype(np.float32)).mean(axis=2)
        diff = cv2.blur(diff, (size, size))
        h, w = diff.shape
        half = size // 2
        inner = diff[half:h - half, half:w - half] if h > size and w > size else diff
        y, x = np.unravel_index(np.argmax(inner), inner.shape)
        x0, y0 = int(x), int(y)
    else:
        x0, y0, size = crop
    x0, y0 = min(max(0, x0), max(0, hr.shape[1] - size)), min(max(0, y0), max(0, hr.shape[0] - size))
    panels = [_panel(img[y0:y0 + size, x0:x0 + size], f'{n} {psnr[n]:.2f} dB', zoom) for n, img in cols]
    panels.append(_panel(hr[y0:y0 + size, x0:x0 + size], 'HR', zoom))
    sep = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
    out = panels[0]
    for p in panels[1:]:
        out = np.hstack([out, sep, p])
    return out, psnr


def _out(folder, hr_name):
    return os.path.join(folder, f'{os.path.splitext(hr_name)[0]}_compare.png')


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m rlfn_arch.compare', description=__doc__.split('\n\n')[0])
    p.add_argument('--hr', required=True)
    p.add_argument('--lr', required=True)
    add_model_args(p, precision='fp32')
    p.add_argument('--name', default='RLFN')
    p.add_argument('--model_path2', default=None, help='an optional second model')
    p.add_argument('--name2', default='model 2')
    p.add_argument('--filename_tmpl', default='{}x{s}')
    p.add_argument('--crop', type=int, nargs=3, default=None, metavar=('X', 'Y', 'SIZE'), help='HR crop')
    p.add_argument('-o', '--output', required=True, help='folder for <name>_compare.png')
    p.add_argument('--overwrite', action='store_true', help='replace comparison images that exist')
    args = p.parse_args(argv)
    try:
        clash = [n for n in list_images(args.hr)[0] if os.path.lexists(_out(args.output, n))] \
            if os.path.isdir(args.hr) else []
        if clash and not args.overwrite:
            raise ValueError(f'{_out(args.output, clash[0])} exists (and {len(clash) - 1} more); nothing was written. '
                             'Pass --overwrite to replace them, or choose another -o')
        model = open_model(args)
        nets = [(args.name, model.net)]
        if args.model_path2:
            nets.append((args.name2, open_model(args, args.model_path2).net))
    except (ValueError, OSError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    cfg, device, precision = model.cfg, model.device, model.precision
    models = [(n, m if precision == 'fp32' else optimize_for_inference(m, precision), device) for n, m in nets]
    s = cfg['upscale']
    os.makedirs(args.output, exist_ok=True)
    for name in list_images(args.hr)[0]:
        stem, ext = os.path.splitext(name)
        try:
            lr = read_bgr(os.path.join(args.lr, args.filename_tmpl.replace('{s}', str(s)).format(stem) + ext))
            hr = read_bgr(os.path.join(args.hr, name))
        except ImageReadError as e:
            print(f'skipped {name}: no readable LR/HR pair ({e})', file=sys.stderr)
            continue
        img, psnr = compare_one(hr, lr, s, models, args.crop)
        write_png(_out(args.output, name), img)
        print(f'{stem}: ' + ', '.join(f'{k} {v:.2f} dB' for k, v in psnr.items()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
