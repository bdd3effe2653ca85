"""Training throughput of RLFN-S x4, side by side in one run: what a BasicSR user has today against our
WarmStartModel in each precision and layout, with and without the contrastive loss.

    python benchmarks/train_throughput.py [--threads 2] [--iters 6] [--shapes quick paper]

Arms: (a) basicsr SRModel, fp32 NCHW; (b) WarmStartModel fp32 NCHW; (c) + channels_last; (d) + bf16
autocast; (e) + fp16 autocast with GradScaler (CUDA only); (q) the int8 quantization-aware stage (``train: qat:
{convs: all}``, fp32 channels_last). Shapes: ``quick`` = the quick start's (batch
8, HR 128 / LR 32); ``paper`` = the paper's patch (HR 256 / LR 64; batch 16 on CPU, 64 on GPU). Each row:
median ms per iteration (forward, losses, backward, Adam step) over ``--iters`` after ``--warmup``,
iterations/s, images/s, and the ratio to arm (a) of the same shape and loss. Random data (the data
pipeline is measured by benchmarks/data_pipeline.py). Writes results/train_throughput.json.
"""
import argparse
import statistics
import tempfile
import time

import torch
from _common import report

import rlfn_arch  # noqa: F401  registers WarmStartModel, ContrastiveLoss
from rlfn_arch.utils.precision import describe, native_bf16

from basicsr.models import build_model

ARMS = [  # (label, model_type, precision, channels_last)
    ('a SRModel fp32', 'SRModel', 'fp32', False),
    ('b WarmStart fp32', 'WarmStartModel', 'fp32', False),
    ('c + channels_last', 'WarmStartModel', 'fp32', True),
    ('d + bf16', 'WarmStartModel', 'bf16', True),
    ('e + fp16 scaler', 'WarmStartModel', 'fp16', True),
    ('q int8 QAT (all convs)', 'WarmStartModel', 'fp32', True),  # train: qat (fake quantization runs in fp32)
]


def make_model(model_type, precision, channels_last, contrastive, device, folder, qat=False):
    train = {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 5e-4, 'betas': [0.9, 0.99]},
             'scheduler': {'type': 'MultiStepLR', 'milestones': [10**6], 'gamma': 0.5}, 'total_iter': 10**6,
             'warmup_iter': -1, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}}
    if model_type == 'WarmStartModel':
        train.update(precision=precision, channels_last=channels_last)
    if qat:
        train['qat'] = {'convs': 'all'}
    if contrastive:
        train['contrastive_opt'] = {'type': 'ContrastiveLoss', 'loss_weight': 0.001}
    opt = {'name': 'bench', 'model_type': model_type, 'scale': 4, 'num_gpu': int(device.type == 'cuda'),
           'is_train': True, 'dist': False, 'rank': 0, 'world_size': 1,
           'network_g': {'type': 'RLFN', 'upscale': 4, 'feature_channels': 48, 'mid_channels': 48,
                         'esa_channels': 16, 'num_blocks': 6},
           'path': {'pretrain_network_g': None, 'strict_load_g': True, 'models': folder,
                    'training_states': folder},
           'train': train}
    return build_model(opt)


def time_arm(model, batch, lr, iters, warmup, device):
    g = torch.Generator().manual_seed(0)
    data = {'lq': torch.rand(batch, 3, lr, lr, generator=g), 'gt': torch.rand(batch, 3, lr * 4, lr * 4, generator=g)}
    times = []
    for i in range(warmup + iters):
        model.feed_data(data)
        if device.type == 'cuda':
            torch.cuda.synchronize()
        t = time.perf_counter()
        model.optimize_parameters(i + 1)
        if device.type == 'cuda':
            torch.cuda.synchronize()
        if i >= warmup:
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--iters', type=int, default=6)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--device', default=None, help='cpu or cuda (default: cuda if available)')
    p.add_argument('--shapes', nargs='+', default=['quick', 'paper'], choices=['quick', 'paper'])
    p.add_argument('--arms', nargs='+', default=[a[0][0] for a in ARMS], help='arm letters (default all)')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    shapes = {'quick': (8, 32), 'paper': (64 if device.type == 'cuda' else 16, 64)}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for shape in args.shapes:
            batch, lr = shapes[shape]
            for contrastive in (False, True):
                base = None
                for label, model_type, precision, cl in ARMS:
                    if label[0] not in args.arms or (precision == 'fp16' and device.type != 'cuda'):
                        continue
                    model = make_model(model_type, precision, cl, contrastive, device, folder, qat=label[0] == 'q')
                    ms = time_arm(model, batch, lr, args.iters, args.warmup, device)
                    base = base or ms
                    rows.append({'arm': label, 'shape': f'{shape} b{batch} lr{lr}', 'contrastive': contrastive,
                                 'ms_per_iter': round(ms, 1), 'iter_per_s': round(1000 / ms, 2),
                                 'img_per_s': round(batch * 1000 / ms, 1), 'x_vs_a': round(base / ms, 2),
                                 'precision': precision, 'channels_last': cl})
                    print(rows[-1], flush=True)
    report('train_throughput', rows, ['arm', 'shape', 'contrastive', 'ms_per_iter', 'iter_per_s', 'img_per_s',
                                      'x_vs_a'],
           {'device': describe(device), 'native_bf16': native_bf16(device), 'threads': args.threads,
            'torch': torch.__version__})


if __name__ == '__main__':
    main()
