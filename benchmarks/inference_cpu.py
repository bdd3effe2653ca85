"""CPU inference paths side by side: plain eager PyTorch (the reference, structured like the released
code), our fast path, ONNX Runtime fp32 and ONNX Runtime int8, for RLFN, RLFN-S and the NTIRE 2022
model at x4 with a 256x256 LR input.

    python benchmarks/inference_cpu.py [--threads 2] [--runs 10]

For each: median ms per image, ratio to eager, max abs difference to eager (in [0, 1]), the share of
this CPU's measured fp32 convolution throughput, and for int8 the PSNR-Y change on Set5 x4 (official
RLFN-S x4 weights, when ../shared is present).
"""
import argparse
import os
import statistics
import tempfile
import time

import torch
from _common import SHARED, benchmark_psnr_y, report
from torch.nn import functional as F

import rlfn_arch  # noqa: F401
from rlfn_arch.archs import PRESETS, RLFN
from rlfn_arch.deploy.efficiency import count_ntire
from rlfn_arch.deploy.fast import optimize_for_inference
from rlfn_arch.deploy.onnx import export_onnx
from rlfn_arch.deploy.quantize import calibration_patches, quantize


def median_ms(fn, runs, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def conv_peak_gflops(threads, runs):
    """fp32 throughput of one large 3x3 conv (64 -> 64 channels, 256x256): 2 x MACs / time."""
    x, w = torch.rand(1, 64, 256, 256), torch.rand(64, 64, 3, 3)
    with torch.inference_mode():
        ms = median_ms(lambda: F.conv2d(x, w, padding=1), runs)
    return 2 * 64 * 64 * 9 * 256 * 256 / (ms / 1000) / 1e9


def ort_session(path, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=['CPUExecutionProvider'])


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--runs', type=int, default=10)
    p.add_argument('--size', type=int, default=256)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    peak = conv_peak_gflops(args.threads, args.runs)
    print(f'fp32 3x3 conv throughput: {peak:.1f} GFLOP/s ({args.threads} threads)')
    x = torch.rand(1, 3, args.size, args.size)
    rows = []
    official = os.path.join(SHARED, 'weights', 'rlfn_s_x4.pth')
    for preset in ('rlfn', 'rlfn_s', 'rlfn_ntire'):
        torch.manual_seed(0)
        net = RLFN(upscale=4, **PRESETS[preset]).eval()
        if preset == 'rlfn_s' and os.path.isfile(official):
            from rlfn_arch.archs.rlfn_weights import convert
            net.load_state_dict(convert(official)[0])
        macs = count_ntire(net, (args.size, args.size))[1]
        with torch.inference_mode():
            ref = net(x)
        fast = optimize_for_inference(net)
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = export_onnx(net, os.path.join(tmp, 'fp32.onnx'))
            int8 = quantize(fp32, os.path.join(tmp, 'int8.onnx'), calibration_patches(n=16))
            s32, s8 = ort_session(fp32, args.threads), ort_session(int8, args.threads)
            xn = x.numpy()
            paths = {
                'eager': (lambda: net(x), lambda: ref),
                'fast': (lambda: fast(x), lambda: fast(x)),
                'onnxruntime fp32': (lambda: s32.run(None, {'lq': xn}),
                                     lambda: torch.from_numpy(s32.run(None, {'lq': xn})[0])),
                'onnxruntime int8': (lambda: s8.run(None, {'lq': xn}),
                                     lambda: torch.from_numpy(s8.run(None, {'lq': xn})[0])),
            }
            base = None
            for name, (call, output) in paths.items():
                with torch.inference_mode():
                    ms = median_ms(call, args.runs)
                    diff = float((output() - ref).abs().max())
                base = base or ms
                row = {'model': preset, 'path': name, 'ms': ms, 'x_eager': base / ms, 'max_abs_diff': diff,
                       'conv_peak_share_pct': 100 * 2 * macs / (ms / 1000) / 1e9 / peak}
                if preset == 'rlfn_s' and name == 'onnxruntime int8':
                    p_ref = benchmark_psnr_y(lambda a: net(torch.from_numpy(a)).detach().numpy(), 'Set5')
                    p_int8 = benchmark_psnr_y(lambda a: s8.run(None, {'lq': a})[0], 'Set5')
                    if p_ref is not None:
                        row['set5_psnr_y_eager'], row['set5_psnr_y_int8'] = p_ref, p_int8
                        row['psnr_change_dB'] = p_int8 - p_ref
                rows.append(row)
                print(rows[-1], flush=True)
    report('inference_cpu', rows, ['model', 'path', 'ms', 'x_eager', 'max_abs_diff', 'conv_peak_share_pct',
                                   'psnr_change_dB'],
           {'threads': args.threads, 'runs': args.runs, 'lr_size': args.size, 'conv_peak_gflops': peak})


if __name__ == '__main__':
    main()
