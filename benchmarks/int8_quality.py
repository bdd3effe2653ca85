"""How close an int8 model is to fp32, on real photographs: PSNR-Y on Set5 / Set14 x4 of the official fp32
model, of the quantization-aware checkpoint's float weights, of its int8 ONNX model, and of post-training
int8 (no training: ``quantize``'s default, and every conv); and, image by image, how the int8 images differ
from the fp32 images of the same weights and from the official fp32 images: the share of pixels within 1 grey
level, the mean brightness change (a darkened image shows here) and the contrast kept (a flat image shows here);
PyTorch's bf16 autocast against fp32 on the same measure, for scale.

    python benchmarks/int8_quality.py [--qat experiments/RLFN_S_x4_int8_T91BSD200/net_g_final.pth]

The int8 models run in ONNX Runtime, except a quantization-aware model whose convs write float
(``train.qat.placement: inputs``), which runs where it runs in int8: OpenVINO, fp32 float operations.

Needs ../shared (the official RLFN-S x4 weights and the benchmark sets) and onnxruntime (and openvino for an
``inputs`` model).
"""
import argparse
import os
import sys
import tempfile

import cv2
import numpy as np
import torch
from _common import SHARED, benchmark_psnr_y, report

import rlfn_arch  # noqa: F401
from rlfn_arch.archs import RLFN
from rlfn_arch.archs.qat import int8_placement_of
from rlfn_arch.archs.rlfn_weights import convert, detect_config
from rlfn_arch.deploy.onnx import export_onnx, openvino_runner
from rlfn_arch.deploy.quantize import (
    calibration_patches,
    ptq_defaults,
    quantize_calibrated,
    quantize_checkpoint,
    trained_int8,
)
from rlfn_arch.utils.checkpoint import safe_load, select_weights, split_quant_state

QAT_DEFAULT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'experiments',
                           'RLFN_S_x4_int8_T91BSD200', 'net_g_final.pth')


def ort(path, threads):
    import onnxruntime as rt
    so = rt.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sess = rt.InferenceSession(path, so, providers=['CPUExecutionProvider'])
    return lambda a: sess.run(None, {'lq': a})[0]


def lr_images(sets):
    for name in sets:
        folder = os.path.join(SHARED, 'datasets', name, 'LR_bicubic', 'X4')
        for f in sorted(os.listdir(folder)):
            img = cv2.imread(os.path.join(folder, f))[:, :, ::-1]
            yield f'{name}/{f}', np.ascontiguousarray(img.transpose(2, 0, 1)[None].astype(np.float32) / 255)


def to_u8(y):
    return (np.clip(y[0], 0, 1) * 255).round().astype(np.int16)


def agreement(run_a, run_b, sets):
    """Per image: share of pixels within 1 grey level, mean brightness change b - a, contrast kept (std b / std a)."""
    rows = []
    for name, x in lr_images(sets):
        a, b = to_u8(run_a(x)), to_u8(run_b(x))
        rows.append({'image': name, 'within_1_pct': 100 * float((np.abs(a - b) <= 1).mean()),
                     'brightness_change': float(b.mean() - a.mean()), 'contrast_kept': float(b.std() / a.std())})
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--qat', default=QAT_DEFAULT, help='a quantization-aware RLFN-S x4 checkpoint (train: qat)')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--sets', nargs='+', default=['Set5', 'Set14'])
    args = p.parse_args()
    official = os.path.join(SHARED, 'weights', 'rlfn_s_x4.pth')
    if not os.path.isfile(official) or not os.path.isfile(args.qat):
        sys.exit(f'needs {official} and a quantization-aware checkpoint ({args.qat}; see options/train/'
                 'RLFN_S_x4_int8_T91BSD200.yml)')
    torch.set_num_threads(args.threads)
    qat_sd = select_weights(safe_load(args.qat), args.qat)[0]
    convs = trained_int8(qat_sd)
    if not convs:
        sys.exit(f'{args.qat}: not a quantization-aware checkpoint')
    # a model whose convs write float (placement inputs) runs in int8 in OpenVINO only (ONNX Runtime: in float)
    inputs = int8_placement_of(qat_sd) == 'inputs'
    runner = (lambda path, threads: openvino_runner(path, threads, 'f32')) if inputs else ort
    trained = f'int8 trained ({convs}{", inputs placement, OpenVINO" if inputs else ""})'
    weights = split_quant_state(qat_sd)[0]
    tuned = RLFN(**detect_config(weights)).eval()
    tuned.load_state_dict(weights)
    base = RLFN(**detect_config(weights)).eval()
    base.load_state_dict(convert(official)[0])
    rows = []
    ptq_name = 'official int8 post-training ({}, {} calibration)'.format(*ptq_defaults(base))  # `quantize`'s default
    with tempfile.TemporaryDirectory() as tmp:
        runs = {'official fp32': ort(export_onnx(base, os.path.join(tmp, 'base.onnx')), args.threads),
                ptq_name: ort(quantize_calibrated(
                    base, os.path.join(tmp, 'ptq.onnx'), calibration_patches(n=32)), args.threads),
                'official int8 post-training (all)': ort(quantize_calibrated(
                    base, os.path.join(tmp, 'ptq_all.onnx'), calibration_patches(n=32), 'all'), args.threads),
                'fine-tuned fp32 (its float weights)': ort(export_onnx(tuned, os.path.join(tmp, 'tuned.onnx')),
                                                           args.threads),
                trained: runner(quantize_checkpoint(qat_sd, os.path.join(tmp, 'qat.onnx')), args.threads)}
        ref = {s: benchmark_psnr_y(runs['official fp32'], s) for s in args.sets}
        for name, run in runs.items():
            row = {'model': name}
            for s in args.sets:
                v = benchmark_psnr_y(run, s)
                row[f'{s}_psnr_y'], row[f'{s}_vs_official_fp32'] = round(v, 4), round(v - ref[s], 3)
            rows.append(row)
            print(row, flush=True)
        images = agreement(runs['fine-tuned fp32 (its float weights)'], runs[trained], args.sets)
        vs_official = agreement(runs['official fp32'], runs[trained], args.sets)
        ptq = agreement(runs['official fp32'], runs[ptq_name], args.sets)
        bf16 = agreement(runs['official fp32'], bf16_run(base), args.sets)
    summary = {'int8_vs_its_fp32': _summary(images), 'int8_vs_official_fp32': _summary(vs_official),
               'ptq_vs_official_fp32': _summary(ptq), 'bf16_autocast_vs_official_fp32': _summary(bf16)}
    print('\nint8 trained vs the fp32 images of the same weights, per image:')
    report('int8_quality', rows, ['model'] + [f'{s}_{k}' for s in args.sets for k in ('psnr_y', 'vs_official_fp32')],
           {'qat_checkpoint': args.qat, 'images': images, 'images_vs_official': vs_official, 'ptq_images': ptq,
            'bf16_images': bf16, 'summary': summary,
            'threads': args.threads})
    for k, v in summary.items():
        print(f'{k}: ' + ', '.join(f'{m} {x}' for m, x in v.items()))


def bf16_run(net):
    """The official model in PyTorch's bf16 autocast (``infer``'s default where bf16 is native): how far the other
    fast path's images are from fp32, for scale."""
    def run(a):
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
            return net(torch.from_numpy(a)).float().numpy()
    return run


def _summary(images):
    return {'pixels_within_1_grey_level_pct': round(float(np.mean([r['within_1_pct'] for r in images])), 3),
            'worst_image_within_1_pct': round(min(r['within_1_pct'] for r in images), 3),
            'largest_brightness_change': round(max((r['brightness_change'] for r in images), key=abs), 3),
            'lowest_contrast_kept': round(min(r['contrast_kept'] for r in images), 4)}


if __name__ == '__main__':
    main()
