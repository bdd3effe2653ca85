"""Post-training int8 (no training) of the official and shipped RLFN models: which convs, which calibration.
PSNR-Y change against each model's own fp32 on Set5 / Set14 at its scale (border = scale, MATLAB bicubic LR),
from ONNX Runtime's int8 kernels; calibration on 32 LR patches of the sample dataset, as ``quantize`` does.

    python benchmarks/int8_post_training.py [--models rlfn_s_x4 rlfn_x4 rlfn_s_x3 rlfn_s_x2 rlfn_x2]
        [--arms entropy/blocks stage/blocks stage/block_3x3 stage/body stage/all stage/block_3x3/inputs]

``stage``: the int8 stage's own quantizers without training (``quantize``'s default); ``entropy`` (and
``minmax``, ``percentile``): ONNX Runtime's calibration. A third part, ``inputs``, quantizes each int8 conv's
input only (``quantize --placement inputs``, OpenVINO's form), and those files run in OpenVINO, where they are
int8. Needs ../shared (official weights, Set5, Set14) and onnxruntime (openvino for ``inputs``); a speed
comparison of the same files is ``benchmarks/inference_cpu.py``.
"""
import argparse
import os
import sys
import tempfile

import torch
from _common import SHARED, benchmark_psnr_y, report
from int8_quality import ort

import rlfn_arch  # noqa: F401
from rlfn_arch.archs import RLFN
from rlfn_arch.archs.qat import INT8_CONVS
from rlfn_arch.archs.rlfn_weights import convert, detect_config
from rlfn_arch.archs.zoo import model_file
from rlfn_arch.deploy.onnx import openvino_runner
from rlfn_arch.deploy.quantize import CALIBRATIONS, calibration_patches, quantize_calibrated
from rlfn_arch.utils.options.schema import QAT_PLACEMENTS

#: name -> (weights, scale): the official files in ../shared and the shipped x3 model.
MODELS = {'rlfn_s_x4': (os.path.join(SHARED, 'weights', 'rlfn_s_x4.pth'), 4),
          'rlfn_x4': (os.path.join(SHARED, 'weights', 'rlfn_x4.pth'), 4),
          'rlfn_s_x3': (None, 3),
          'rlfn_s_x2': (os.path.join(SHARED, 'weights', 'rlfn_s_x2.pth'), 2),
          'rlfn_x2': (os.path.join(SHARED, 'weights', 'rlfn_x2.pth'), 2)}
SETS = ('Set5', 'Set14')


def arm(text):
    parts = text.split('/')
    method, convs, placement = (parts + ['qlinear'])[:3] if len(parts) in (2, 3) else ('', '', '')
    if method not in CALIBRATIONS or convs not in INT8_CONVS or placement not in QAT_PLACEMENTS:
        raise argparse.ArgumentTypeError(f'{text!r}: expected CALIBRATION/CONVS[/PLACEMENT], CALIBRATION one of '
                                         f'{", ".join(CALIBRATIONS)}, CONVS one of {", ".join(INT8_CONVS)}, '
                                         f'PLACEMENT one of {", ".join(QAT_PLACEMENTS)}')
    return method, convs, placement


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--models', nargs='+', choices=list(MODELS), default=list(MODELS))
    p.add_argument('--arms', nargs='+', type=arm, default=[arm(a) for a in (
        'entropy/blocks', 'stage/blocks', 'stage/block_3x3', 'stage/body', 'stage/all')])
    p.add_argument('--num_patches', type=int, default=32)
    p.add_argument('--threads', type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    patches = calibration_patches(n=args.num_patches)
    rows = []
    for name in args.models:
        path, scale = MODELS[name]
        path = path or model_file(name)
        if not os.path.isfile(path) or not all(os.path.isdir(os.path.join(SHARED, 'datasets', s)) for s in SETS):
            sys.exit(f'needs {path} and {SHARED}/datasets/Set5, Set14')
        sd = convert(path)[0]
        net = RLFN(**detect_config(sd)).eval()
        net.load_state_dict(sd)
        with torch.no_grad():
            fp32 = {s: benchmark_psnr_y(lambda x: net(torch.from_numpy(x)).numpy(), s, scale) for s in SETS}
        with tempfile.TemporaryDirectory() as tmp:
            for method, convs, placement in args.arms:
                path = quantize_calibrated(net, os.path.join(tmp, f'{method}_{convs}_{placement}.onnx'), patches,
                                           convs, method, placement=placement)
                # an inputs model is int8 in OpenVINO only (ONNX Runtime computes it in float)
                run = openvino_runner(path, args.threads, 'f32') if placement == 'inputs' else ort(path, args.threads)
                row = {'model': name, 'calibration': method, 'convs': convs, 'placement': placement}
                for s in SETS:
                    row[f'{s}_fp32'] = round(fp32[s], 4)
                    row[f'{s}_dB'] = round(benchmark_psnr_y(run, s, scale) - fp32[s], 3)
                rows.append(row)
                print(row, flush=True)
    report('int8_post_training', rows, ['model', 'calibration', 'convs', 'placement'] + [
        f'{s}_{k}' for s in SETS for k in ('fp32', 'dB')],
           {'num_patches': args.num_patches, 'threads': args.threads})


if __name__ == '__main__':
    main()
