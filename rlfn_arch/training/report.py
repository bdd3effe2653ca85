"""The end of a run: bicubic on the validation set as the baseline, and the summary table."""
import copy
from os import path as osp

from rlfn_arch.data.image_io import ImageReadError, list_images, read_bgr
from rlfn_arch.data.matlab_resize import bicubic_upsample
from rlfn_arch.utils.report import format_table

from basicsr.metrics import calculate_metric


def bicubic_baseline(opt):
    """PSNR/SSIM of MATLAB-bicubic upsampling on the first validation set, with the val metrics' settings."""

    val = next((d for p, d in opt['datasets'].items() if p.startswith('val')), None)
    metrics = (opt.get('val') or {}).get('metrics')
    if not val or not metrics or (val.get('io_backend') or {}).get('type', 'disk') != 'disk':
        return {}
    s = opt['scale']
    tmpl = val.get('filename_tmpl', '{}')
    sums, n = {k: 0.0 for k in metrics}, 0
    for name in list_images(val['dataroot_gt'])[0]:
        stem, ext = osp.splitext(name)
        try:
            gt = read_bgr(osp.join(val['dataroot_gt'], name))
            lq = read_bgr(osp.join(val['dataroot_lq'], tmpl.format(stem) + ext))
        except ImageReadError:
            continue
        up = bicubic_upsample(lq, s)
        gt = gt[:lq.shape[0] * s, :lq.shape[1] * s]
        for k, mopt in metrics.items():
            sums[k] += calculate_metric({'img': up, 'img2': gt}, copy.deepcopy(mopt))
        n += 1
    return {k: v / n for k, v in sums.items()} if n else {}


def print_summary(records, stage_names, baseline, scale):
    """Each stage's iterations, wall seconds and last validation PSNR/SSIM, and bicubic's, as a table."""
    rows = []
    for name in stage_names:
        r = records.get(name)
        m = r.get('metrics', {})
        rows.append((name, str(r.get('iters', '-')), f'{r.get("seconds", 0):.0f}',
                     f'{m["psnr"]:.3f}' if 'psnr' in m else '-', f'{m["ssim"]:.4f}' if 'ssim' in m else '-'))
    if baseline:
        rows.append((f'bicubic x{scale}', '-', '-', f'{baseline["psnr"]:.3f}' if 'psnr' in baseline else '-',
                     f'{baseline["ssim"]:.4f}' if 'ssim' in baseline else '-'))
    print('\n' + format_table(rows, ('stage', 'iters', 'wall s', 'PSNR-Y', 'SSIM-Y')), flush=True)
