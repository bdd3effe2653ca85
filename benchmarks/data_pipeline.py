"""Training batches per second from the LMDB and from the plain folder backend (batch 16, HR patch 256,
x4, 2 workers), side by side in one run, against the batches per second RLFN-S x4 consumes in training;
each backend with basicsr's EnlargedSampler (before) and with the ResumableSampler and keyed per-sample
augmentation that training uses now (exact resume).

    python benchmarks/data_pipeline.py [--batches 40]

Uses the embedded sample dataset (built if missing): its LMDBs, and the same sub-images written to
folders, so both backends read identical data through basicsr's PairedImageDataset.
"""
import argparse
import os
import shutil
import tempfile
import time

import numpy as np
import torch
from _common import report

import rlfn_arch  # noqa: F401
from rlfn_arch.archs import PRESETS, RLFN
from rlfn_arch.data.builders import build_sample_dataset, sample_ready
from rlfn_arch.utils.runtime import project_root


def loader(gt, lq, backend, batch, workers, gt_size, resumable=False):
    """BasicSR's loader as training builds it: ``EnlargedSampler`` + ``PairedImageDataset`` (before), or
    ``ResumableSampler`` + keyed ``CheckedPairedImageDataset`` (what training runs now: exact resume)."""
    from rlfn_arch.data.checked_dataset import CheckedPairedImageDataset
    from rlfn_arch.data.sampler import ResumableSampler

    from basicsr.data import build_dataloader
    from basicsr.data.data_sampler import EnlargedSampler
    from basicsr.data.paired_image_dataset import PairedImageDataset
    opt = {'name': backend, 'type': 'PairedImageDataset', 'dataroot_gt': gt, 'dataroot_lq': lq,
           'io_backend': {'type': backend}, 'gt_size': gt_size, 'use_hflip': True, 'use_rot': True, 'phase': 'train',
           'scale': 4, 'num_worker_per_gpu': workers, 'batch_size_per_gpu': batch, 'filename_tmpl': '{}'}
    ds = (CheckedPairedImageDataset if resumable else PairedImageDataset)(opt)
    sampler = ResumableSampler(ds, 1, 0, 10, seed=0, batch_size=batch) if resumable else EnlargedSampler(ds, 1, 0, 10)
    return build_dataloader(ds, opt, num_gpu=0, dist=False, sampler=sampler, seed=0)


def batches_per_second(dl, n):
    it = iter(dl)
    next(it)  # start the workers
    t, k = time.perf_counter(), 0
    while k < n:
        try:
            next(it)
        except StopIteration:
            it = iter(dl)
            continue
        k += 1
    return n / (time.perf_counter() - t)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--batches', type=int, default=40)
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--gt_size', type=int, default=256)
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--threads', type=int, default=2, help='torch threads for the training step')
    args = p.parse_args()
    sample = os.path.join(project_root(), 'datasets', 'sample')
    if not sample_ready(sample):
        build_sample_dataset(sample)
    # the sample's sub-images are 192px; for 256px patches, cut larger ones into a temporary LMDB
    from rlfn_arch.data.builders import build_lmdb, make_subimages
    tmp = tempfile.mkdtemp(prefix='rlfn_bench_')
    try:
        train = os.path.join(sample, 'train')
        make_subimages(os.path.join(train, 'HR'), os.path.join(tmp, 'hr'), crop=384, step=192, thresh=48,
                      lr_dir=os.path.join(train, 'LR_bicubic', 'X4'), lr_out=os.path.join(tmp, 'lr'), scale=4)
        build_lmdb(os.path.join(tmp, 'hr'), os.path.join(tmp, 'hr.lmdb'))
        build_lmdb(os.path.join(tmp, 'lr'), os.path.join(tmp, 'lr.lmdb'))
        rows = []
        for backend, gt, lq in (('lmdb', 'hr.lmdb', 'lr.lmdb'), ('disk', 'hr', 'lr')):
            for resumable in (False, True):
                dl = loader(os.path.join(tmp, gt), os.path.join(tmp, lq), backend, args.batch, args.workers,
                            args.gt_size, resumable)
                what = 'ResumableSampler, keyed augmentation' if resumable else 'EnlargedSampler (basicsr)'
                rows.append({'source': f'{backend} ({args.workers} workers), {what}',
                             'batches_per_s': batches_per_second(dl, args.batches)})
        torch.set_num_threads(args.threads)
        net = RLFN(upscale=4, **PRESETS['rlfn_s'])
        opt = torch.optim.Adam(net.parameters(), 1e-4)
        lqb = torch.rand(args.batch, 3, args.gt_size // 4, args.gt_size // 4)
        gtb = torch.rand(args.batch, 3, args.gt_size, args.gt_size)
        times = []
        for i in range(6):
            t = time.perf_counter()
            opt.zero_grad()
            (net(lqb) - gtb).abs().mean().backward()
            opt.step()
            times.append(time.perf_counter() - t)
        consume = 1 / float(np.median(times[1:]))
        rows.append({'source': f'RLFN-S x4 training consumes ({args.threads} threads)', 'batches_per_s': consume})
        for r in rows[:-1]:
            r['x_consumption'] = r['batches_per_s'] / consume
        report('data_pipeline', rows, ['source', 'batches_per_s', 'x_consumption'],
               {'batch': args.batch, 'gt_size': args.gt_size, 'scale': 4})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
