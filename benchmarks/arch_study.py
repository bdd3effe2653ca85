"""Why three convs? RFDN, each step of the derivation RFDN -> RLFN, and RLFN, side by side in one run.

    python benchmarks/arch_study.py [--threads 2] [--runs 10] [--size 256] [--train-results]

For every network (RFDN at its AIM size, the three steps at RFDN's size, RLFN, RLFN-S and the NTIRE 2022
model; x4): parameters, FLOPs, activations and convs by the NTIRE 2022 counter, and CPU time at one
256x256 LR input (median of ``--runs`` after 3 warm-up runs, all networks in this one process): eager
fp32 (NCHW) and the fast path (channels_last, and bf16 autocast where the CPU computes bf16 natively:
AVX512_BF16 or AMX, else fp32). Random weights (the time does not depend on them). Then the official
trained weights (RFDN_AIM, RLFN x4, the NTIRE model) on Set5 and Set14 x4: PSNR-Y (border 4, BasicSR's
calculate_psnr, fp32, whole images) next to their CPU time. With ``--train-results``, the quality at an
equal training budget from benchmarks/ablation.py's arms A and S0-S3 (run that first:
``python benchmarks/ablation.py --arms A S0 S1 S2 S3 --iters 1000 --seeds 0 1 2``). GPU time: run
benchmarks/gpu_check.py where a GPU is lent. Writes results/arch_study.json.
"""
import argparse
import json
import os

import torch
from _common import RESULTS, SHARED, benchmark_psnr_y, report

import rlfn_arch  # noqa: F401
from rlfn_arch.archs.rlfn_arch import PRESETS, RLFN
from rlfn_arch.archs.rlfn_weights import convert
from rlfn_arch.deploy.efficiency import count_ntire, median_ms
from rlfn_arch.deploy.fast import optimize_for_inference
from rlfn_arch.utils.precision import describe, native_bf16, resolve_precision

NETWORKS = ['rfdn', 'rfdn_rlfb', 'rfdn_rlfb_esa1', 'rfdn_rlfb_esa1_nocat', 'rlfn', 'rlfn_s', 'rlfn_ntire']
WHAT = {'rfdn': 'RFDN (RFDB, full ESA, concat)', 'rfdn_rlfb': 'step 1: RLFB blocks',
        'rfdn_rlfb_esa1': 'step 2: + ESA 1 conv', 'rfdn_rlfb_esa1_nocat': 'step 3: + no concat (RLFN layout)',
        'rlfn': 'RLFN', 'rlfn_s': 'RLFN-S', 'rlfn_ntire': 'RLFN NTIRE 2022'}
OFFICIAL = {'rfdn': 'rfdn_aim_x4', 'rlfn': 'rlfn_x4', 'rlfn_ntire': 'rlfn_ntire_x4'}
ARM_OF = {'rfdn': 'S0_rfdn', 'rfdn_rlfb': 'S1_rfdn_rlfb', 'rfdn_rlfb_esa1': 'S2_rfdn_rlfb_esa1',
          'rfdn_rlfb_esa1_nocat': 'S3_rfdn_rlfb_esa1_nocat', 'rlfn_s': 'A_l1_single'}


def timings(net, size, runs, precision):
    x = torch.rand(1, 3, size, size)
    with torch.inference_mode():
        eager = median_ms(lambda: net(x), runs)
        fast_net = optimize_for_inference(net, precision=precision, channels_last=True)
        fast = median_ms(lambda: fast_net(x), runs)
    return eager, fast


def train_results():
    """{arm: {set: (mean, sd, n)}} from benchmarks/results/ablation.json (benchmarks/ablation.py)."""
    path = os.path.join(RESULTS, 'ablation.json')
    if not os.path.isfile(path):
        return {}, None
    data = json.load(open(path))
    out = {}
    for r in data['rows']:
        out.setdefault(r['arm'], {})[r['set']] = (r['mean'], r['sd'], r['n'])
    return out, data


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--runs', type=int, default=10)
    p.add_argument('--size', type=int, default=256, help='LR input side (default 256, the NTIRE setting)')
    p.add_argument('--train-results', action='store_true', help='add the equal-budget training quality')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    precision = resolve_precision('auto', 'cpu')
    rows = []
    for name in NETWORKS:
        torch.manual_seed(0)
        net = RLFN(upscale=4, **PRESETS[name]).eval()
        params, flops, acts, convs = count_ntire(net, (args.size, args.size))
        eager, fast = timings(net, args.size, args.runs, precision)
        rows.append({'network': WHAT[name], 'preset': name, 'params': params, 'flops_G': round(flops / 1e9, 2),
                     'acts_M': round(acts / 1e6, 2), 'convs': convs, 'cpu_fp32_ms': round(eager, 1),
                     f'cpu_fast_{precision}_ms': round(fast, 1)})
    cols = ['network', 'preset', 'params', 'flops_G', 'acts_M', 'convs', 'cpu_fp32_ms', f'cpu_fast_{precision}_ms']
    trained, meta = train_results() if args.train_results else ({}, None)
    if trained:
        for r in rows:
            arm = trained.get(ARM_OF.get(r['preset']), {})
            for s in ('Set5', 'Set14'):
                if s in arm:
                    mean, sd, n = arm[s]
                    r[f'{s}_trained'] = f'{mean:.3f} ± {sd:.3f} (n={n})'
        cols += ['Set5_trained', 'Set14_trained']
    print(f'Networks at a {args.size}x{args.size} LR input, x4; CPU: {describe("cpu")}, {args.threads} threads, '
          f'fast path = channels_last + {precision} (native bf16: {native_bf16("cpu")})')
    report_rows = list(rows)
    print()
    official = []
    for name, file in OFFICIAL.items():
        src = os.path.join(SHARED, 'weights', f'{file}.pth')
        if not os.path.isfile(src):
            continue
        sd, cfg = convert(src)
        net = RLFN(**cfg).eval()
        net.load_state_dict(sd)
        with torch.inference_mode():
            def run(x):
                return net(torch.from_numpy(x)).numpy()
            psnr = {s: benchmark_psnr_y(run, s) for s in ('Set5', 'Set14')}
        eager, fast = timings(net, args.size, args.runs, precision)
        official.append({'weights': file, 'params': sum(v.numel() for v in sd.values()),
                         'Set5_psnr_y': round(psnr['Set5'], 4) if psnr['Set5'] else None,
                         'Set14_psnr_y': round(psnr['Set14'], 4) if psnr['Set14'] else None,
                         'cpu_fp32_ms': round(eager, 1), f'cpu_fast_{precision}_ms': round(fast, 1)})
    report('arch_study', report_rows, cols, extra={
        'official': official, 'threads': args.threads, 'size': args.size, 'runs': args.runs,
        'fast_precision': precision, 'torch': torch.__version__, 'train_meta': meta and {
            k: meta[k] for k in ('iters', 'seeds', 'precision', 'device') if k in meta}})
    if official:
        print()
        from rlfn_arch.utils.report import format_table
        print(format_table(official, ['weights', 'params', 'Set5_psnr_y', 'Set14_psnr_y', 'cpu_fp32_ms',
                                      f'cpu_fast_{precision}_ms']))


if __name__ == '__main__':
    main()
