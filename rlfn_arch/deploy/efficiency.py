"""Efficiency as the NTIRE 2022 efficient-SR challenge counted it, and runtime (library of
``python -m rlfn_arch.benchmark``).

Counts, at a 256x256 LR input by default, the way the NTIRE 2022 efficient-SR challenge did:
parameters; FLOPs = conv multiply-accumulates k*k*Cin/groups*Cout*Hout*Wout (no bias) plus one per
output element of every activation-function module (the challenge's module-hook counter does this:
with it the published 19.70 G / 33.99 G come out exactly; conv MACs alone give 19.66 G / 33.93 G);
activations = elements of every conv output; the number of conv layers. Then runtime (warm-up, median of N runs;
CUDA events on GPU, a monotonic clock on CPU; threads stated) and peak memory. Prints a table and
writes JSON.
"""
import resource
import statistics
import time

import torch
from torch import nn

from rlfn_arch.utils.report import cpu_name

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


def median_ms(fn, runs, warmup=3):
    """Median wall time of ``fn()`` in ms over ``runs`` calls after ``warmup`` (CPU work; for a network on a
    GPU use :func:`time_model`, which times with CUDA events)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


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
