"""CPU inference paths side by side: plain eager fp32 PyTorch (the reference: the released code's
structure, NCHW, no compile), our fp32 fast path (channels_last + compile at this one shape), bf16
autocast + channels_last (emulated, and slower, on CPUs without AVX512_BF16/AMX: see native_bf16 in the
JSON), ONNX Runtime fp32 and int8, for RLFN, RLFN-S and the NTIRE 2022 model at x4, 256x256 LR input.

    python benchmarks/inference_cpu.py [--threads 2] [--runs 10]

For each: median ms per image, ratio to eager, max abs difference to eager (in [0, 1]), the share of
this CPU's measured fp32 convolution throughput, and for int8 and bf16 the PSNR-Y change on Set5 x4 (official
RLFN-S x4 weights, when ../shared is present).
"""
import argparse
import os
import tempfile

import torch
from _common import SHARED, benchmark_psnr_y, report
from torch.nn import functional as F

import rlfn_arch  # noqa: F401
from rlfn_arch.archs import PRESETS, RLFN
from rlfn_arch.deploy.efficiency import count_ntire, median_ms
from rlfn_arch.deploy.fast import optimize_for_inference
from rlfn_arch.deploy.onnx import export_onnx
from rlfn_arch.deploy.quantize import calibration_patches, quantize
from rlfn_arch.utils.precision import native_bf16


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
        fast = optimize_for_inference(net, precision='fp32', compile=True)
        fast_bf16 = optimize_for_inference(net, precision='bf16')  # channels_last + bf16 autocast, eager
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = export_onnx(net, os.path.join(tmp, 'fp32.onnx'))
            int8 = quantize(fp32, os.path.join(tmp, 'int8.onnx'), calibration_patches(n=16))
            s32, s8 = ort_session(fp32, args.threads), ort_session(int8, args.threads)
            xn = x.numpy()
            paths = {
                'eager': (lambda: net(x), lambda: ref),
                'fast fp32 (channels_last + compile)': (lambda: fast(x), lambda: fast(x)),
                'bf16 autocast + channels_last': (lambda: fast_bf16(x), lambda: fast_bf16(x)),
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
                if preset == 'rlfn_s' and name in ('onnxruntime int8', 'bf16 autocast + channels_last'):
                    run = (lambda a: s8.run(None, {'lq': a})[0]) if 'int8' in name else \
                        (lambda a: fast_bf16(torch.from_numpy(a)).numpy())
                    p_ref = benchmark_psnr_y(lambda a: net(torch.from_numpy(a)).detach().numpy(), 'Set5')
                    p_low = benchmark_psnr_y(run, 'Set5')
                    if p_ref is not None:
                        row['set5_psnr_y_eager'], row['set5_psnr_y_low'] = p_ref, p_low
                        row['psnr_change_dB'] = p_low - p_ref
                rows.append(row)
                print(rows[-1], flush=True)
    report('inference_cpu', rows, ['model', 'path', 'ms', 'x_eager', 'max_abs_diff', 'conv_peak_share_pct',
                                   'psnr_change_dB'],
           {'threads': args.threads, 'runs': args.runs, 'lr_size': args.size, 'conv_peak_gflops': peak,
            'native_bf16': native_bf16('cpu')})


if __name__ == '__main__':
    main()
