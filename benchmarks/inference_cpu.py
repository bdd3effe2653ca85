"""CPU inference paths side by side, on one CPU in one run: plain eager fp32 PyTorch (the reference: the
released code's structure, NCHW, no compile), our fp32 fast path (channels_last + compile), bf16 autocast +
channels_last, ONNX Runtime fp32 and int8 (post-training and, given a quantization-aware checkpoint, trained
for int8), and OpenVINO (a second CPU runtime, when ``pip install openvino`` has put it here) fp32, bf16 and
int8 on the same ONNX files. RLFN-S x4 at 256x256 LR by default; any trained RLFN with ``--model_path``.

    python benchmarks/inference_cpu.py [--threads 2] [--runs 10] [--rounds 5] [--models rlfn_s rlfn rlfn_ntire] \\
        [--qat experiments/RLFN_S_x4_int8_T91BSD200/net_g_final.pth ...] [--model_path FILE ...]

For each path: median ms per image, speed-up over eager, max abs difference to eager (in [0, 1]), the share of
this CPU's peak *in that path's precision* (2 x MACs / time over the best throughput any runtime here reached
on a stack of eight 3x3 convs, 64 -> 64 channels at 256x256, in fp32, bf16 or int8: measured, so it is the
peak this CPU shows, not a datasheet number), and for trained weights (RLFN-S with the official x4 weights from
``../shared``, every ``--model_path``) the PSNR-Y change on Set5 and Set14 at the model's scale against eager
fp32. The CPU's int8 and bf16 instruction sets are printed and saved.

``ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI python benchmarks/inference_cpu.py`` shows a newer CPU as an older class
would run (here: int8 dot products without bf16, as Cascade Lake and Ice Lake): oneDNN's cap holds PyTorch's and
OpenVINO's kernels; ONNX Runtime's own kernels ignore it (its rows say "not capped"). OpenVINO has no kernel
for some layers under an AVX2 cap; such rows are skipped with the reason.
"""
import argparse
import os
import statistics
import sys
import tempfile

import numpy as np
import torch
from _common import SHARED, benchmark_psnr_y, report

import rlfn_arch  # noqa: F401
from rlfn_arch.archs import PRESETS, RLFN
from rlfn_arch.archs.qat import int8_placement_of, int8_weight_bits_of
from rlfn_arch.archs.rlfn_weights import convert, load_model
from rlfn_arch.deploy.efficiency import count_ntire, median_ms
from rlfn_arch.deploy.fast import optimize_for_inference
from rlfn_arch.deploy.onnx import export_onnx, openvino_runner
from rlfn_arch.deploy.quantize import (
    calibration_patches,
    ptq_defaults,
    quantize,
    quantize_calibrated,
    quantize_checkpoint,
    trained_int8,
)
from rlfn_arch.utils.checkpoint import safe_load, select_weights
from rlfn_arch.utils.precision import cpu_instruction_sets, int8_saturates, native_bf16, onednn_isa_cap

QAT_DEFAULT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'experiments',
                           'RLFN_S_x4_int8_T91BSD200', 'net_g_final.pth')


def ort_runner(path, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, so, providers=['CPUExecutionProvider'])
    return lambda a: sess.run(None, {sess.get_inputs()[0].name: a})[0]


def openvino_path(path, threads, precision, shape):
    """OpenVINO on the CPU (:func:`rlfn_arch.deploy.onnx.openvino_runner`); ``precision``: its inference precision
    hint (``f32`` or ``bf16``: what the operations that are not int8 compute in), compiled for ``shape`` now.
    None when OpenVINO is not installed or cannot compile the model here (the row is skipped, with the reason)."""
    try:
        run = openvino_runner(path, threads, precision)
        run(np.zeros(shape, np.float32))
    except ImportError:
        return None
    except ValueError as e:  # e.g. a layer OpenVINO has no kernel for under an ONEDNN_MAX_CPU_ISA cap
        print(f'openvino {precision} {os.path.basename(path)}: not compiled here, row skipped ({e})', flush=True)
        return None
    return run


def conv_peaks(threads, runs, tmp, depth=8):
    """{precision: (GFLOP/s, who)}: the best throughput reached on a stack of ``depth`` 3x3 convs, 64 -> 64
    channels at 256x256 (a stack, so that an int8 runtime keeps its data in int8 between convs as it does in
    the network, and the float input and output cost little)."""
    torch.manual_seed(0)
    stack = torch.nn.Sequential(*[torch.nn.Conv2d(64, 64, 3, padding=1) for _ in range(depth)]).eval()
    x = torch.rand(1, 64, 256, 256)
    flop = 2 * 64 * 64 * 9 * 256 * 256 * depth
    xc = x.contiguous(memory_format=torch.channels_last)
    tries = {'fp32': {'pytorch NCHW': lambda: stack(x),
                      'pytorch channels_last': lambda m=stack.to(memory_format=torch.channels_last): m(xc)},
             'bf16': {}, 'int8': {}}
    if native_bf16('cpu'):
        tries['bf16']['pytorch channels_last'] = lambda: _bf16(stack, xc)
    fp32 = os.path.join(tmp, 'stack.onnx')
    torch.onnx.export(stack, (x, ), fp32, input_names=['lq'], output_names=['y'], dynamo=False)
    int8 = quantize(fp32, os.path.join(tmp, 'stack_int8.onnx'), [x.numpy()[0]], lambda m: (_conv_names(m), {}),
                    method='minmax')
    xn = x.numpy()
    tries['fp32']['onnxruntime'] = lambda run=ort_runner(fp32, threads): run(xn)
    tries['int8']['onnxruntime'] = lambda run=ort_runner(int8, threads): run(xn)
    for precision, path, hint in (('fp32', fp32, 'f32'), ('bf16', fp32, 'bf16'), ('int8', int8, 'f32')):
        run = openvino_path(path, threads, hint, xn.shape)
        if run is not None and (precision != 'bf16' or native_bf16('cpu')):
            tries[precision]['openvino'] = lambda run=run: run(xn)
    peaks = {}
    with torch.inference_mode():
        for precision, fns in tries.items():
            best = max(((flop / (median_ms(fn, runs) / 1000) / 1e9, who) for who, fn in fns.items()), default=None)
            if best:
                peaks[precision] = best
    return peaks


def _bf16(stack, x):
    with torch.autocast('cpu', dtype=torch.bfloat16):
        return stack(x)


def _conv_names(model):
    return [n.name for n in model.graph.node if n.op_type == 'Conv']


def build_paths(net, x, tmp, threads, qat_sds, shape):
    """{name: (precision, run)}: every path for ``net``; ``run`` maps a numpy (1, 3, h, w) to numpy."""
    fast = optimize_for_inference(net, precision='fp32', compile=True)
    fast_bf16 = optimize_for_inference(net, precision='bf16')  # channels_last + bf16 autocast, eager
    fp32 = export_onnx(net, os.path.join(tmp, 'fp32.onnx'))
    patches = calibration_patches(n=16)
    ptq = ptq_defaults(net)[0]  # the convs `quantize` puts in int8 by default for this network
    models = {f'int8 post-training ({ptq})': quantize_calibrated(net, os.path.join(tmp, 'ptq.onnx'), patches),
              'int8 post-training (all)': quantize_calibrated(net, os.path.join(tmp, 'ptq_all.onnx'), patches, 'all')}
    if int8_saturates():  # no VNNI/AMX: 8-bit weights can saturate there, 7-bit ones cannot (docs/int8.md)
        models[f'int8 post-training ({ptq}, 7-bit weights)'] = quantize_calibrated(
            net, os.path.join(tmp, 'ptq7.onnx'), patches, weight_bits=7)
    for i, sd in enumerate(qat_sds):
        bits = '' if int8_weight_bits_of(sd) == 8 else f', {int8_weight_bits_of(sd)}-bit weights'
        where = '' if int8_placement_of(sd) == 'qlinear' else ', inputs placement'
        label = f'int8 trained ({trained_int8(sd)}{bits}{where})'
        models[label if label not in models else f'{label} #{i + 1}'] = quantize_checkpoint(
            sd, os.path.join(tmp, f'qat{i}.onnx'))
    # 8-bit conv inputs only (OpenVINO's placement; ONNX Runtime computes it in float): OpenVINO's rows only
    openvino_only = {f'int8 post-training ({ptq}, inputs placement)': quantize_calibrated(
        net, os.path.join(tmp, 'ptq_inputs.onnx'), patches, placement='inputs')}

    def torch_run(m):
        return lambda a: m(torch.from_numpy(a)).float().numpy()
    paths = {'eager fp32': ('fp32', torch_run(net)),
             'fast fp32 (channels_last + compile)': ('fp32', torch_run(fast)),
             'bf16 autocast + channels_last': ('bf16', torch_run(fast_bf16)),
             'onnxruntime fp32': ('fp32', ort_runner(fp32, threads))}
    paths.update({f'onnxruntime {k}': ('int8', ort_runner(p, threads)) for k, p in models.items()})
    ov = [('openvino fp32', 'fp32', fp32, 'f32'), ('openvino bf16', 'bf16', fp32, 'bf16')]
    ov += [(f'openvino {k}', 'int8', p, 'f32') for k, p in {**models, **openvino_only}.items()]
    if native_bf16('cpu'):  # the int8 model's float operations (the convs left float, ESA, additions) in bf16
        ov += [(f'openvino {k}, the rest bf16', 'int8', p, 'bf16') for k, p in {**models, **openvino_only}.items()
               if 'trained' in k or k == f'int8 post-training ({ptq})']  # what `infer --runtime openvino` runs
    for name, precision, path, hint in ov:
        run = openvino_path(path, threads, hint, shape)
        if run is not None:
            paths[name] = (precision, run)
    return paths


def models(args, official, qat_sds):
    """(label, fp32 network, has trained weights, quantization-aware states) for each model asked for."""
    for preset in args.models or ([] if args.model_path else ['rlfn_s']):
        torch.manual_seed(0)
        net = RLFN(upscale=4, **PRESETS[preset]).eval()
        real = preset == 'rlfn_s' and os.path.isfile(official)
        if real:
            net.load_state_dict(convert(official)[0])
        yield preset, net, real, qat_sds if preset == 'rlfn_s' else []
    for path in args.model_path:
        sd = select_weights(safe_load(path), path)[0]
        net = load_model(path)[0]  # float weights in [0, 1] (official files folded; a QAT file's float weights)
        label = os.path.join(os.path.basename(os.path.dirname(os.path.abspath(path))), os.path.basename(path))
        yield label, net, True, [sd] if trained_int8(sd) else []


def quality(run, ref_psnr, scale=4):
    """PSNR-Y change on Set5 and Set14 at ``scale`` against eager fp32 (``ref_psnr``)."""
    out = {}
    for name in ('Set5', 'Set14'):
        p = benchmark_psnr_y(run, name, scale)
        if p is not None and ref_psnr.get(name) is not None:
            out[f'{name.lower()}_dB'] = p - ref_psnr[name]
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--runs', type=int, default=10)
    p.add_argument('--rounds', type=int, default=1, help='time every path this many times, interleaved (a round '
                   'times each path once, median of --runs); ms: the median over rounds, ms_range: the spread')
    p.add_argument('--size', type=int, default=256)
    p.add_argument('--models', nargs='+', default=None, choices=['rlfn_s', 'rlfn', 'rlfn_ntire'],
                   help='presets (default rlfn_s without --model_path): RLFN-S with the official x4 weights when '
                   '../shared has them (quality rows too), the others with random weights (speed only)')
    p.add_argument('--model_path', nargs='+', default=[],
                   help='trained RLFN checkpoints of any scale (ours, official files, or a quantization-aware one, '
                   'which adds its "int8 trained" rows): every path for each, quality on Set5/Set14 at its scale')
    p.add_argument('--qat', nargs='+', default=[QAT_DEFAULT], help='quantization-aware RLFN-S x4 checkpoints (train: '
                   'qat) for the "int8 trained" rows (default: the int8 recipe\'s final model, when it is there)')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    isa = cpu_instruction_sets()
    cap = onednn_isa_cap()
    print(f'CPU: int8 dot products {", ".join(isa["int8"]) or "none"}; bf16 {", ".join(isa["bf16"]) or "none"}; '
          f'widest SIMD {isa["simd"]}' + (f' (ONEDNN_MAX_CPU_ISA={cap}: PyTorch and OpenVINO use at most {cap}; '
                                          'ONNX Runtime\'s own kernels are not capped)' if cap else ''), flush=True)
    official = os.path.join(SHARED, 'weights', 'rlfn_s_x4.pth')
    qat_paths = [q for q in args.qat if os.path.isfile(q) or q != QAT_DEFAULT]  # the default only when it is there
    qat_sds = [select_weights(safe_load(q), q)[0] for q in qat_paths]
    for q, sd in zip(qat_paths, qat_sds):
        if not trained_int8(sd):
            sys.exit(f'{q}: not a quantization-aware checkpoint (no int8 quantizer state)')
    x = torch.rand(1, 3, args.size, args.size)
    xn = x.numpy()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        peaks = conv_peaks(args.threads, args.runs, tmp)
        print('peak (eight 64->64 3x3 convs at 256x256): ' + ', '.join(f'{k} {v:.0f} GFLOP/s ({who})'
                                                                    for k, (v, who) in peaks.items()), flush=True)
        for preset, net, real, model_qat in models(args, official, qat_sds):
            scale = net.upscale
            macs = count_ntire(net, (args.size, args.size))[1]
            with torch.inference_mode():
                ref = net(x).numpy()
                ref_psnr = {s: benchmark_psnr_y(lambda a: net(torch.from_numpy(a)).numpy(), s, scale)
                            for s in ('Set5', 'Set14')} if real else {}
            paths = build_paths(net, x, tmp, args.threads, model_qat, xn.shape)
            times = {name: [] for name in paths}
            with torch.inference_mode():
                for _ in range(args.rounds):  # every path once per round: a slow spell of the host hits them all
                    for name, (_, run) in paths.items():
                        times[name].append(median_ms(lambda: run(xn), args.runs))
            base = None
            for name, (precision, run) in paths.items():
                with torch.inference_mode():
                    out = run(xn)
                    q = quality(run, ref_psnr, scale) if real else {}
                ms = statistics.median(times[name])
                base = base or ms
                peak = peaks.get(precision, (None, ''))[0]
                label = f'{name} (not capped)' if cap and name.startswith('onnxruntime') else name
                rows.append({'model': preset, 'path': label, 'precision': precision, 'ms': round(ms, 1),
                             'ms_range': f'{min(times[name]):.1f}-{max(times[name]):.1f}',
                             'ms_rounds': [round(t, 1) for t in times[name]],
                             'x_eager': round(base / ms, 2), 'max_abs_diff': round(float(np.abs(out - ref).max()), 4),
                             'peak_share_pct': round(100 * 2 * macs / (ms / 1000) / 1e9 / peak) if peak else None,
                             **{k: round(v, 3) for k, v in q.items()}})
                print(rows[-1], flush=True)
    columns = ['model', 'path', 'ms'] + (['ms_range'] if args.rounds > 1 else []) + [
        'x_eager', 'max_abs_diff', 'peak_share_pct', 'set5_dB', 'set14_dB']
    name = 'inference_cpu' + (f'_{cap.lower()}' if cap else '') + ('_models' if args.model_path else '')
    report(name, rows, columns,
           {'threads': args.threads, 'runs': args.runs, 'rounds': args.rounds, 'lr_size': args.size,
            'instruction_sets': isa, 'onednn_max_cpu_isa': cap,
            'peak_gflops': {k: {'gflops': round(v, 1), 'runtime': who} for k, (v, who) in peaks.items()},
            'native_bf16': native_bf16('cpu'), 'qat_checkpoints': qat_paths,
            'model_paths': args.model_path,
            'torch_threads': torch.get_num_threads()})


if __name__ == '__main__':
    main()
