"""NTIRE-style efficiency report: ``python -m rlfn_arch.benchmark --preset rlfn_ntire`` (or a model).

Counts, at a 256x256 LR input by default, the way the NTIRE 2022 efficient-SR challenge did:
parameters; FLOPs = conv multiply-accumulates k*k*Cin/groups*Cout*Hout*Wout (no bias) plus one per
output element of every activation-function module (the challenge's module-hook counter does this:
with it the published 19.70 G / 33.99 G come out exactly; conv MACs alone give 19.66 G / 33.93 G);
activations = elements of every conv output; the number of conv layers. Then runtime (warm-up, median of N runs;
CUDA events on GPU, a monotonic clock on CPU; threads stated) and peak memory. Prints a table and
writes JSON.
"""
import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time

import torch
from torch import nn

import rlfn_arch  # noqa: F401
from rlfn_arch.fast import optimize_for_inference
from rlfn_arch.utils.fs import atomic_write
from rlfn_arch.utils.precision import PRECISIONS, resolve_precision

SCHEMA_KEYS = ('model', 'scale', 'input', 'params', 'flops_G', 'activations_M', 'convs', 'device', 'threads',
               'runtime_ms', 'runs', 'warmup', 'peak_memory_MB', 'memory_kind', 'path', 'hardware', 'precision',
               'layout')


def count_ntire(net, lr_hw=(256, 256), in_channels=3):
    """(params, flops, activations, convs) of ``net`` on one (1, C, H, W) input, NTIRE 2022 counter."""
    stats = {'flops': 0, 'acts': 0, 'convs': 0}

    def hook(m, _inp, out):
        k = m.kernel_size[0] * m.kernel_size[1]
        stats['flops'] += k * (m.in_channels // m.groups) * m.out_channels * out.shape[2] * out.shape[3]
        stats['acts'] += out.numel()
        stats['convs'] += 1

    def act_hook(m, _inp, out):
        stats['flops'] += out.numel()

    acts = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.ReLU6, nn.GELU, nn.SiLU)
    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
    handles += [m.register_forward_hook(act_hook) for m in net.modules() if isinstance(m, acts)]
    try:
        with torch.inference_mode():
            net(torch.zeros(1, in_channels, *lr_hw, device=next(net.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    params = sum(p.numel() for p in net.parameters())
    return params, stats['flops'], stats['acts'], stats['convs']


def time_model(net, x, runs=10, warmup=3):
    """Median milliseconds of ``net(x)`` after ``warmup`` calls."""
    cuda = x.is_cuda
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                net(x)
                end.record()
                torch.cuda.synchronize()
                ms = start.elapsed_time(end)
            else:
                t = time.perf_counter()
                net(x)
                ms = (time.perf_counter() - t) * 1000
            if i >= warmup:
                times.append(ms)
    return statistics.median(times)


def cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def benchmark(net, name, scale, lr_hw=(256, 256), runs=10, warmup=3, device=None, threads=None, path=None):
    device = device or next(net.parameters()).device
    if threads:
        torch.set_num_threads(threads)
    params, flops, acts, convs = count_ntire(net, lr_hw)
    x = torch.rand(1, 3, *lr_hw, device=device)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    ms = time_model(net, x, runs, warmup)
    if device.type == 'cuda':
        peak, kind = torch.cuda.max_memory_allocated(device) / 2**20, 'CUDA max_memory_allocated'
        hw = torch.cuda.get_device_name(device)
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 'process peak RSS'
        hw = cpu_name()
    return {'model': name, 'scale': scale, 'input': f'1x3x{lr_hw[0]}x{lr_hw[1]}', 'params': params,
            'flops_G': round(flops / 1e9, 2), 'activations_M': round(acts / 1e6, 2), 'convs': convs,
            'device': str(device), 'threads': torch.get_num_threads(), 'runtime_ms': round(ms, 2), 'runs': runs,
            'warmup': warmup, 'peak_memory_MB': round(peak, 1), 'memory_kind': kind, 'path': path or 'eager',
            'hardware': hw, 'precision': getattr(net, 'precision', 'fp32'), 'layout': getattr(net, 'layout', 'nchw')}


def print_table(rows):
    cols = ['model', 'scale', 'params', 'flops_G', 'activations_M', 'convs', 'runtime_ms', 'peak_memory_MB',
            'device', 'threads', 'path', 'precision', 'layout']
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    print('| ' + ' | '.join(c.ljust(w) for c, w in zip(cols, widths)) + ' |')
    print('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
    for r in rows:
        print('| ' + ' | '.join(str(r[c]).ljust(w) for c, w in zip(cols, widths)) + ' |')
    print(f'hardware: {rows[0]["hardware"]}')


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m rlfn_arch.benchmark', description=__doc__.split('\n\n')[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--preset', choices=['rlfn', 'rlfn_s', 'rlfn_ntire'], help='a published configuration')
    src.add_argument('--model_path', help='a checkpoint (settings read from its tensors)')
    p.add_argument('--opt', default=None, help='option file whose network_g to use with --model_path')
    p.add_argument('--scale', type=int, default=4, choices=[2, 3, 4], help='upscale for --preset (default 4)')
    p.add_argument('--size', type=int, nargs=2, default=[256, 256], metavar=('H', 'W'), help='LR input (256 256)')
    p.add_argument('--runs', type=int, default=10)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--threads', type=int, default=None, help='CPU threads (default: torch default)')
    p.add_argument('--device', default=None)
    p.add_argument('--precision', default='auto', choices=PRECISIONS,
                   help='auto (default): bf16 where the device runs it natively, else fp32; fp16 on CUDA only')
    p.add_argument('--fast', action='store_true', help='time the fastest path for that precision as well '
                   '(channels_last + torch.compile at this one input shape)')
    p.add_argument('--onnx', nargs='+', default=[], help='also time these ONNX models (fp32 or int8) with ONNX Runtime')
    p.add_argument('--json', default='benchmark.json', help='output JSON (default benchmark.json)')
    args = p.parse_args(argv)
    from rlfn_arch.utils.model_io import load_model, pick_device
    device = pick_device(args.device)
    try:
        net, cfg = load_model(args.model_path, args.opt, preset=args.preset, scale=args.scale, device=device)
    except (ValueError, OSError) as e:  # CheckpointError (missing, unsafe, non-finite) is a ValueError
        print(f'error: {e}', file=sys.stderr)
        return 2
    name = args.preset or os.path.basename(args.model_path)
    precision = resolve_precision(args.precision, device)
    if precision == 'fp16' and device.type != 'cuda':
        print('error: --precision fp16 needs a CUDA device', file=sys.stderr)
        return 2
    eager = net if precision == 'fp32' else optimize_for_inference(net, precision, channels_last=False)
    rows = [benchmark(eager, name, cfg['upscale'], tuple(args.size), args.runs, args.warmup, device, args.threads)]
    if args.fast:
        fast = optimize_for_inference(net, precision, compile=True)
        rows.append(benchmark(fast, name, cfg['upscale'], tuple(args.size), args.runs, args.warmup, device,
                              args.threads, path='fast'))
        rows[-1].update({k: rows[0][k] for k in ('params', 'flops_G', 'activations_M', 'convs')})
    for path in args.onnx:
        from rlfn_arch.export import OnnxRLFN
        sess = OnnxRLFN(path, threads=args.threads)
        x = torch.rand(1, 3, *args.size)
        row = dict(rows[0], path=f'onnxruntime {os.path.basename(path)}', device='cpu',
                   runtime_ms=round(time_model(sess, x, args.runs, args.warmup), 2))
        rows.append(row)
    print_table(rows)
    atomic_write(args.json, lambda f: json.dump(rows, f, indent=1), binary=False)
    print(f'wrote {args.json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
