"""One-shot structured pruning of the trained official RFDN and RLFN x4: which parts are redundant?

    python benchmarks/esa_pruning.py [--fractions 0.25 0.5 0.75] [--threads 2] [--runs 5]

The paper's second step: analyse ESA with one-shot structured pruning and cut the part that turns out
redundant. Here, with no fine-tuning, on the converted official weights (``../shared/weights``):

* filter cuts: for one conv (the same conv in every block), zero the given fraction of its output filters
  with the smallest L1 norm (weights and bias: the filters are removed as structured pruning removes them);
  each conv of ESA, and for comparison each 3x3 conv of the block body;
* whole-conv cuts: each 3x3 conv of ESA whose input and output shapes agree replaced by identity, and the
  whole group after the max pool (RFDN: conv_max, conv3, conv3_) replaced by identity.

For each cut: the change of PSNR-Y on Set5 and Set14 x4 (border 4, fp32, whole images) against the uncut
network, and what it saves: FLOPs by the NTIRE counter at a 256x256 LR input (a filter cut: the conv's own
multiply-accumulates times the fraction plus those of the convs that read only its output; a whole-conv
cut: the network recounted), and, for whole-conv cuts, CPU time (median, the cut network timed in this
run beside the uncut one; filter cuts done by zeroing take the same time). Writes results/esa_pruning.json.
"""
import argparse
import copy

import torch
from _common import SHARED, benchmark_psnr_y, report
from torch import nn

import rlfn_arch  # noqa: F401
from rlfn_arch.archs.rlfn_arch import RLFN
from rlfn_arch.archs.rlfn_weights import convert
from rlfn_arch.deploy.efficiency import count_ntire, median_ms

MODELS = {'RFDN_AIM x4': 'rfdn_aim_x4', 'RLFN x4': 'rlfn_x4'}
# convs whose output only one other conv reads, with the reader (a filter cut also saves the reader's input)
READERS = {'full': {'esa.conv1': ['esa.conv_f', 'esa.conv2'], 'esa.conv2': ['esa.conv_max'],
                    'esa.conv_max': ['esa.conv3'], 'esa.conv3': ['esa.conv3_']},
           'trimmed': {'esa.conv1': ['esa.conv_f', 'esa.conv2'], 'esa.conv2': ['esa.conv3']},
           'rfdb': {'c1_r': ['c2_d', 'c2_r'], 'c2_r': ['c3_d', 'c3_r'], 'c3_r': ['c4']},
           'rlfb': {'c1_r': ['c2_r'], 'c2_r': ['c3_r']}}


def load(file):
    sd, cfg = convert(f'{SHARED}/weights/{file}.pth')
    net = RLFN(**cfg).eval()
    net.load_state_dict(sd)
    return net, cfg


def psnr(net):
    def run(x):
        with torch.inference_mode():
            return net(torch.from_numpy(x)).numpy()
    return {s: benchmark_psnr_y(run, s) for s in ('Set5', 'Set14')}


def macs(net, names, hw=(256, 256)):
    """Multiply-accumulates of the named sub-modules (summed over blocks) at one LR input."""
    total = {'n': 0}
    mods = {m for n, m in net.named_modules() if any(n.endswith('.' + x) for x in names)}

    def hook(m, _i, out):
        total['n'] += m.kernel_size[0] * m.kernel_size[1] * m.in_channels * m.out_channels * out.shape[2] * out.shape[3]
    hs = [m.register_forward_hook(hook) for m in mods]
    with torch.inference_mode():
        net(torch.zeros(1, 3, *hw))
    for h in hs:
        h.remove()
    return total['n']


def filter_cut(net, conv, fraction):
    cut = copy.deepcopy(net)
    for block in cut.blocks():
        m = block.get_submodule(conv)
        k = int(round(m.out_channels * fraction))
        order = m.weight.detach().abs().sum(dim=(1, 2, 3)).argsort()[:k]  # smallest L1 norm first
        with torch.no_grad():
            m.weight[order] = 0
            m.bias[order] = 0
    return cut


def whole_cut(net, convs):
    cut = copy.deepcopy(net)
    for block in cut.blocks():
        esa = block.esa
        for c in convs:
            setattr(esa, c.split('.')[-1], nn.Identity())
    return cut


def _row(model, cut, q, base, saved_pct, ms):
    return {'model': model, 'cut': cut, 'Set5': round(q['Set5'], 3), 'Set14': round(q['Set14'], 3),
            'd_Set5': round(q['Set5'] - base['Set5'], 3), 'd_Set14': round(q['Set14'] - base['Set14'], 3),
            'flops_saved_pct': round(saved_pct, 2), 'cpu_ms': None if ms is None else round(ms, 1)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--fractions', type=float, nargs='+', default=[0.25, 0.5, 0.75])
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--runs', type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for label, file in MODELS.items():
        net, cfg = load(file)
        esa_kind = cfg.get('esa', 'trimmed')
        block_kind = cfg.get('block', 'rlfb')
        _, flops0, _, _ = count_ntire(net)
        base = psnr(net)
        x = torch.rand(1, 3, 256, 256)
        with torch.inference_mode():
            t0 = median_ms(lambda: net(x), args.runs)
        rows.append(_row(label, 'none', base, base, 0.0, t0))
        esa_convs = ['esa.conv1', 'esa.conv_f', 'esa.conv2'] + (
            ['esa.conv_max', 'esa.conv3', 'esa.conv3_'] if esa_kind == 'full' else ['esa.conv3']) + ['esa.conv4']
        body = ['c1_r', 'c2_r', 'c3_r'] + (['c4'] if block_kind == 'rfdb' else [])
        readers = dict(READERS[esa_kind], **READERS[block_kind])
        for conv in esa_convs + body:
            own = macs(net, [conv])
            read = macs(net, readers.get(conv, []))
            for f in args.fractions:
                q = psnr(filter_cut(net, conv, f))
                rows.append(_row(label, f'{conv} filters -{int(f * 100)}%', q, base,
                                 100 * f * (own + read) / flops0, None))
        group = ['esa.conv_max', 'esa.conv3', 'esa.conv3_'] if esa_kind == 'full' else ['esa.conv3']
        for convs in [[c] for c in group] + ([group] if len(group) > 1 else []):
            cut = whole_cut(net, convs)
            q = psnr(cut)
            _, flops, _, _ = count_ntire(cut)
            with torch.inference_mode():
                t = median_ms(lambda: cut(x), args.runs)
            rows.append(_row(label, ' + '.join(convs) + ' -> identity', q, base, 100 * (flops0 - flops) / flops0, t))
        print(f'{label}: {len(rows)} rows so far', flush=True)
    report('esa_pruning', rows, ['model', 'cut', 'Set5', 'Set14', 'd_Set5', 'd_Set14', 'flops_saved_pct', 'cpu_ms'],
           extra={'threads': args.threads, 'runs': args.runs, 'fractions': args.fractions, 'input': '1x3x256x256',
                  'precision': 'fp32', 'torch': torch.__version__})


if __name__ == '__main__':
    main()
