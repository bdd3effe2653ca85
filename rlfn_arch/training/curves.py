"""The run's training curves as a picture: validation PSNR and training loss against iteration, every
stage on one axis, with the stage boundaries and the bicubic line.

Each stage's model appends what it logs to ``<stage>/curves.jsonl``
(:data:`rlfn_arch.models.warmstart_model.CURVES_FILE`); :func:`write_plot` reads them at the end of a
run and writes ``training_curves.png`` beside ``stages.json``. matplotlib is optional
(``pip install "rlfn-basicsr[plot]"``): without it the run ends normally and says how to get the plot.
"""
import json
from os import path as osp

from rlfn_arch.models.warmstart_model import CURVES_FILE
from rlfn_arch.utils.fs import atomic_write

PLOT_FILE = 'training_curves.png'


def read_curves(path):
    """``(losses, vals)`` of one stage: ``{iter: {loss name: value}}`` and ``{iter: {metric: value}}`` (the
    first validation set). A resumed stage logged some iterations twice: the later line wins. Lines a kill
    cut short are skipped; a missing file gives two empty dicts."""
    losses, vals, first_set = {}, {}, None
    if not osp.isfile(path):
        return losses, vals
    with open(path, encoding='utf-8', errors='replace') as f:
        for line in f:
            try:
                entry = json.loads(line)
                it = int(entry['iter'])
            except (ValueError, KeyError, TypeError):
                continue
            if isinstance(entry.get('loss'), dict):
                losses[it] = entry['loss']
            elif isinstance(entry.get('metrics'), dict):
                first_set = first_set or entry.get('val')
                if entry.get('val') == first_set:
                    vals[it] = entry['metrics']
    return losses, vals


def _series(plans):
    """Per stage: (label, offset, total_iter, losses, vals) on the run's iteration axis."""
    out, offset = [], 0
    for plan in plans:
        total = int(plan.options['train']['total_iter'])
        losses, vals = read_curves(osp.join(plan.folder, CURVES_FILE))
        out.append((plan.label, offset, total, losses, vals))
        offset += total
    return out


def write_plot(plans, exp_root, baseline=None, scale=None):
    """Write ``<exp_root>/training_curves.png`` (atomically).

    Args:
        plans (list[StagePlan]): the run's stages, in order.
        exp_root (str): the experiment folder.
        baseline (dict | None): bicubic's validation metrics (``psnr``), drawn as a line.
        scale (int | None): for the bicubic line's label.

    Returns:
        str: the path written.

    Raises:
        ImportError: matplotlib is not installed (the caller says how to get it).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6.5), dpi=110)
    FigureCanvasAgg(fig)
    ax_psnr, ax_loss = fig.subplots(2, 1, sharex=True, gridspec_kw={'height_ratios': [3, 2]})
    colors = ['C0', 'C1', 'C2', 'C3', 'C4', 'C5']
    for k, (label, offset, total, losses, vals) in enumerate(_series(plans)):
        color = colors[k % len(colors)]
        pts = sorted((offset + min(it, total), m['psnr']) for it, m in vals.items() if 'psnr' in m)
        if pts:
            ax_psnr.plot(*zip(*pts), marker='o', ms=3, color=color, label=label)
        loss_pts = sorted((offset + it, v.get('l_total', v.get('l_pix'))) for it, v in losses.items()
                          if it <= total and v.get('l_total', v.get('l_pix')) is not None)
        if loss_pts:
            ax_loss.plot(*zip(*loss_pts), lw=0.8, color=color)
        if k:
            for ax in (ax_psnr, ax_loss):
                ax.axvline(offset, color='grey', lw=0.8, ls=':')
    if baseline and 'psnr' in baseline:
        ax_psnr.axhline(baseline['psnr'], color='black', lw=1, ls='--',
                        label=f'bicubic{f" x{scale}" if scale else ""} ({baseline["psnr"]:.2f} dB)')
    ax_psnr.set_ylabel('validation PSNR on Y (dB)')
    ax_psnr.legend(loc='lower right', fontsize=8)
    ax_psnr.grid(alpha=0.3)
    ax_loss.set_ylabel('training loss (l_total)')
    ax_loss.set_yscale('log')
    ax_loss.set_xlabel('iteration (all stages)')
    ax_loss.grid(alpha=0.3)
    ax_psnr.set_title(osp.basename(exp_root), fontsize=10)
    fig.tight_layout()
    out = osp.join(exp_root, PLOT_FILE)
    atomic_write(out, lambda f: fig.savefig(f, format='png'))
    return out
