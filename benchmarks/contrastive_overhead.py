"""Cost of the contrastive loss: one RLFN-S x4 training iteration (batch 16, LR 64x64) with L1 alone
and with L1 + contrastive, measured side by side (interleaved) in one run.

    python benchmarks/contrastive_overhead.py [--threads 2] [--iters 10]
"""
import argparse
import statistics
import time

import torch
from _common import report

import rlfn_arch  # noqa: F401
from rlfn_arch.archs import PRESETS, RLFN
from rlfn_arch.losses import ContrastiveLoss


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--iters', type=int, default=20)
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--widths', type=int, nargs='*', default=[4, 8, 16], help='other extractor widths, timed after')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = RLFN(upscale=4, **PRESETS['rlfn_s'])
    opt = torch.optim.Adam(net.parameters(), 1e-4)
    lq, hr = torch.rand(args.batch, 3, 64, 64), torch.rand(args.batch, 3, 256, 256)
    l1 = torch.nn.L1Loss()
    # the default (width 3) is timed interleaved with L1 alone: pairs, so drift hits both alike
    variants = {'L1': None, 'L1 + contrastive (default, width 3)': ContrastiveLoss(loss_weight=0.1)}
    others = {f'L1 + contrastive (width {w})': ContrastiveLoss(num_features=w, loss_weight=0.1) for w in args.widths}

    def step(loss):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out = net(lq)
        total = l1(out, hr) + (loss(out, hr, lq) if loss is not None else 0)
        total.backward()
        opt.step()
        return time.perf_counter() - t

    times = {k: [] for k in list(variants) + list(others)}
    for k, loss in variants.items():  # warm-up
        step(loss)
    for _ in range(args.iters):
        for k, loss in variants.items():
            times[k].append(step(loss))
    for k, loss in others.items():
        step(loss)
        times[k] = [step(loss) for _ in range(max(3, args.iters // 4))]
    base = statistics.median(times['L1'])
    rows = [{'loss': k, 'ms_per_iter': statistics.median(v) * 1000,
             'overhead_pct': (statistics.median(v) / base - 1) * 100} for k, v in times.items()]
    report('contrastive_overhead', rows, ['loss', 'ms_per_iter', 'overhead_pct'],
           {'threads': args.threads, 'batch': args.batch, 'lr_size': 64, 'iters': args.iters})


if __name__ == '__main__':
    main()
