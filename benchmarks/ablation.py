"""Does the paper's training recipe help? Train RLFN-S x4 under several arms at equal total iterations
and equal data, over several seeds, and tabulate PSNR-Y on Set5, Set14 (paper protocol) and held-out
photographs.

    python benchmarks/ablation.py [--iters 3000] [--seeds 0 1 2] [--arms A B C D16 D64 E F G0.01 G0.1]
                                  [--precision auto] [--device cpu]

Every arm is an option file under ``options/ablation/`` (``base: _base.yml`` plus the arm's change); the
harness only sets the name, the seed (initialisation and data order) and the iterations: an arm of k
stages gets ``--iters // k`` per stage with its cosine period to match. Data: T91 + BSD200 from
``../shared/datasets`` (MATLAB-bicubic x4, 192-pixel sub-images, LMDBs, via ``rlfn_arch.prepare``), or the
embedded sample dataset when ../shared is absent; images smaller than a 128-pixel patch are left out.
Runs already finished are kept (rerun the command to continue after a stop). Every final model is
evaluated in fp32 on each validation set; the table gives, per arm and set, the mean and standard
deviation over seeds and the difference to arm A with its standard error
(sqrt(sd_A^2 / n_A + sd_X^2 / n_X)); a second table pairs every arm that shares C's first two stages (B,
D-G) with C at the same seed, so seed-to-seed spread cancels. Writes results/ablation.json and
results/ablation.md.
"""
import argparse
import glob
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time

import cv2
import numpy as np
import torch
from _common import RESULTS, SHARED

import rlfn_arch  # noqa: F401
from rlfn_arch.data.image_io import list_images
from rlfn_arch.utils.fs import atomic_write
from rlfn_arch.utils.options import load_options, yaml_dump
from rlfn_arch.utils.precision import PRECISIONS, describe, resolve_precision

from basicsr.metrics import calculate_psnr

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARMS = {'A': 'A_l1_single', 'B': 'B_warm_l1', 'C': 'C_warm_contrastive', 'D16': 'D_width16', 'D64': 'D_width64',
        'E': 'E_relu', 'F': 'F_deep', 'G0.01': 'G_weight0.01', 'G0.1': 'G_weight0.1',
        # the architecture steps RFDN -> RLFN (README "Why three convs?"; benchmarks/arch_study.py --train)
        'S0': 'S0_rfdn', 'S1': 'S1_rfdn_rlfb', 'S2': 'S2_rfdn_rlfb_esa1', 'S3': 'S3_rfdn_rlfb_esa1_nocat'}
DATA = os.path.join(REPO, 'datasets', 'ablation')
MIN_SIDE = 128  # the HR training patch


# ------------------------------------------------------------------------------------------- data
def prepare_data(workers=None):
    """Build datasets/ablation/{train,val} once. Returns the evaluation sets {name: (hr_dir, lr_dir)}."""
    from rlfn_arch.data import builders
    sets = {}
    for name in ('Set5', 'Set14'):
        root = os.path.join(SHARED, 'datasets', name)
        if os.path.isdir(root):
            sets[name] = (os.path.join(root, 'HR'), os.path.join(root, 'LR_bicubic', 'X4'))
    sample = os.path.join(REPO, 'datasets', 'sample')
    if not builders.sample_ready(sample):
        builders.build_sample_dataset(sample, workers)
    sets['held-out'] = (os.path.join(sample, 'val', 'HR'), os.path.join(sample, 'val', 'LR_bicubic', 'X4'))
    done = os.path.join(DATA, 'ready.json')
    if os.path.isfile(done):
        return sets
    import shutil
    shutil.rmtree(DATA, ignore_errors=True)
    train, val = os.path.join(DATA, 'train'), os.path.join(DATA, 'val')
    sources = [os.path.join(SHARED, 'datasets', n, 'HR') for n in ('T91', 'BSD200')]
    sources = [s for s in sources if os.path.isdir(s)] or [os.path.join(sample, 'train', 'HR')]
    hr = os.path.join(train, 'HR')
    items = []
    for src in sources:
        for n in list_images(src)[0]:
            h, w = cv2.imread(os.path.join(src, n), cv2.IMREAD_UNCHANGED).shape[:2]
            if min(h, w) >= MIN_SIDE:
                items.append((src, n))
    builders.modcrop_copy(items, hr, 4, workers or builders.default_workers())
    builders.make_bicubic_lr(hr, os.path.join(train, 'LR_bicubic'), [4], workers)
    work = os.path.join(train, '_sub')
    builders.make_subimages(hr, os.path.join(work, 'HR'), 192, 96, 24, os.path.join(train, 'LR_bicubic', 'X4'),
                          os.path.join(work, 'LR'), 4, workers)
    builders.build_lmdb(os.path.join(work, 'HR'), os.path.join(train, 'HR_sub.lmdb'), workers=workers)
    builders.build_lmdb(os.path.join(work, 'LR'), os.path.join(train, 'LR_bicubic_X4_sub.lmdb'), workers=workers)
    shutil.rmtree(work)
    shutil.copytree(os.path.join(sample, 'val'), val)  # in-training validation: the held-out photographs
    atomic_write(done, lambda f: json.dump({'sources': sources, 'images': len(items)}, f), binary=False)
    return sets


# ------------------------------------------------------------------------------------------- runs
def arm_options(arm, seed, iters, precision):
    """The option dict of one run: the arm's file with name, seed and iterations set."""
    path = os.path.join(REPO, 'options', 'ablation', ARMS[arm] + '.yml')
    opt = load_options(path)
    opt['name'] = f'ablation_{ARMS[arm]}_s{seed}'
    opt['manual_seed'] = seed
    opt['train']['precision'] = precision
    stages = opt.get('stages') or [None]
    per = [iters // len(stages) + (1 if i < iters % len(stages) else 0) for i in range(len(stages))]
    for st, n in zip(stages, per):
        target = opt['train'] if st is None else st.setdefault('train', {})
        target['total_iter'] = n
        target.setdefault('scheduler', {})['periods'] = [n]
    return opt


def run_one(arm, seed, iters, precision, device, log):
    """Train one (arm, seed) unless it already finished at these iterations: (experiment folder,
    training seconds or None)."""
    opt = arm_options(arm, seed, iters, precision)
    if device == 'cpu':
        opt['num_gpu'] = 0
    exp = os.path.join(REPO, 'experiments', opt['name'])
    records = os.path.join(exp, 'stages.json')
    if os.path.isfile(records) and json.load(open(records)).get('iters_total') == iters:
        return exp, None
    yml = os.path.join(RESULTS, 'ablation_options', opt['name'] + '.yml')
    os.makedirs(os.path.dirname(yml), exist_ok=True)
    atomic_write(yml, lambda f: f.write(yaml_dump(opt)), binary=False)
    t0 = time.time()
    with open(log, 'a') as f:
        proc = subprocess.run([sys.executable, '-m', 'rlfn_arch.train', '-opt', yml], cwd=REPO, stdout=f,
                              stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f'{opt["name"]}: training exited {proc.returncode}; see {log}')
    return exp, time.time() - t0


def evaluate(model_path, sets, device):
    """Mean PSNR-Y (border 4, BasicSR's calculate_psnr) of a model on each set, fp32, whole images."""
    from rlfn_arch.archs.rlfn_weights import load_model
    net, _ = load_model(model_path, device=device)
    out = {}
    for name, (hr_dir, lr_dir) in sets.items():
        vals = []
        for f in sorted(os.listdir(hr_dir)):
            stem, ext = os.path.splitext(f)
            hr = cv2.imread(os.path.join(hr_dir, f))
            lr = cv2.imread(os.path.join(lr_dir, f'{stem}x4{ext}'))
            x = torch.from_numpy(np.ascontiguousarray(lr[:, :, ::-1].transpose(2, 0, 1))).float()[None] / 255
            with torch.inference_mode():
                y = net(x.to(device)).clamp(0, 1)[0].cpu().numpy().transpose(1, 2, 0)[:, :, ::-1]
            sr = np.floor(y * 255 + 0.5).astype(np.uint8)
            vals.append(calculate_psnr(sr, hr[:sr.shape[0], :sr.shape[1]], crop_border=4, test_y_channel=True))
        out[name] = float(np.mean(vals))
    return out


# ------------------------------------------------------------------------------------------ table
def collect(experiments_dir):
    """{arm file name: {seed: {set: psnr}}} from every ``ablation_<arm>_s<seed>/stages.json`` with an
    ``eval`` entry."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(experiments_dir, 'ablation_*_s*', 'stages.json'))):
        m = re.fullmatch(r'ablation_(.+)_s(\d+)', os.path.basename(os.path.dirname(path)))  # not *_archived_*
        data = json.load(open(path))
        if m and 'eval' in data:
            runs.setdefault(m.group(1), {})[int(m.group(2))] = data['eval']
    return runs


def _sd(vals):
    return statistics.stdev(vals) if len(vals) > 1 else 0.0


def summarize(runs, reference='A_l1_single', paired='C_warm_contrastive'):
    """Rows per (arm, set): n, mean, sd (sample, n-1; 0 for one seed), the difference to the reference
    arm's mean and its standard error, and for every arm but those two the paired difference to arm
    ``paired`` over the seeds both ran (B and D-G share C's first two stages at the same seed, bit for
    bit on CPU, so this isolates what the third stage changes): its mean, sd and number of pairs."""
    rows = []
    ref = runs.get(reference, {})
    for arm, by_seed in runs.items():
        for name in next(iter(by_seed.values())):
            vals = [e[name] for e in by_seed.values() if name in e]
            mean, sd = statistics.fmean(vals), _sd(vals)
            row = {'arm': arm, 'set': name, 'n': len(vals), 'mean': mean, 'sd': sd}
            rvals = [e[name] for e in ref.values() if name in e]
            if rvals and arm != reference:
                row['diff'] = mean - statistics.fmean(rvals)
                row['diff_se'] = math.sqrt(sd ** 2 / len(vals) + _sd(rvals) ** 2 / len(rvals))
            pairs = [e[name] - runs[paired][s][name] for s, e in by_seed.items()
                     if arm not in (reference, paired) and s in runs.get(paired, {}) and name in e
                     and name in runs[paired][s]]
            if pairs:
                row.update(paired_diff=statistics.fmean(pairs), paired_sd=_sd(pairs), paired_n=len(pairs))
            rows.append(row)
    return rows


def markdown(rows):
    sets = list(dict.fromkeys(r['set'] for r in rows))
    arms = list(dict.fromkeys(r['arm'] for r in rows))
    by = {(r['arm'], r['set']): r for r in rows}
    head = '| arm | seeds | ' + ' | '.join(f'{s} PSNR-Y (mean ± sd) | {s} vs A' for s in sets) + ' |'
    lines = [head, '|' + '---|' * (2 + 2 * len(sets))]
    for arm in arms:
        cells = []
        for s in sets:
            r = by.get((arm, s))
            if r is None:
                cells += ['-', '-']
                continue
            cells.append(f'{r["mean"]:.3f} ± {r["sd"]:.3f}')
            cells.append(f'{r["diff"]:+.3f} ± {r["diff_se"]:.3f}' if 'diff' in r else '(reference)')
        n = by[(arm, sets[0])]['n'] if (arm, sets[0]) in by else 0
        lines.append(f'| {arm} | {n} | ' + ' | '.join(cells) + ' |')
    paired = [arm for arm in arms if any('paired_diff' in by.get((arm, s), {}) for s in sets)]
    if paired:
        lines += ['', 'Paired with C at the same seed (same first two stages), mean ± sd of the differences:', '',
                  '| arm | pairs | ' + ' | '.join(f'{s} vs C' for s in sets) + ' |', '|' + '---|' * (2 + len(sets))]
        for arm in paired:
            rs = [by.get((arm, s), {}) for s in sets]
            cells = [f'{r["paired_diff"]:+.3f} ± {r["paired_sd"]:.3f}' if 'paired_diff' in r else '-' for r in rs]
            lines.append(f'| {arm} | {max(r.get("paired_n", 0) for r in rs)} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--iters', type=int, default=3000, help='total iterations per arm (default 3000)')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--arms', nargs='+', default=list(ARMS), choices=list(ARMS))
    p.add_argument('--precision', default='auto', choices=PRECISIONS)
    p.add_argument('--device', default=None, help='cpu or cuda (default: cuda if available)')
    p.add_argument('--workers', type=int, default=None)
    args = p.parse_args()
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    precision = resolve_precision(args.precision, device)
    os.makedirs(RESULTS, exist_ok=True)
    log = os.path.join(RESULTS, 'ablation_train.log')
    sets = prepare_data(args.workers)
    t0 = time.time()
    for seed in args.seeds:  # seeds outermost: an interrupted run still has every arm at the first seeds
        for arm in args.arms:
            exp, seconds = run_one(arm, seed, args.iters, args.precision, device.type, log)
            records = os.path.join(exp, 'stages.json')
            data = json.load(open(records))
            if seconds is not None:  # freshly trained: evaluate and record
                data.update(eval=evaluate(os.path.join(exp, 'net_g_final.pth'), sets, device),
                            iters_total=args.iters, wall_s=round(seconds, 1))
                atomic_write(records, lambda f: json.dump(data, f, indent=1), binary=False)
            print(f'{arm} seed {seed}: ' + ', '.join(f'{k} {v:.3f}' for k, v in data['eval'].items()) +
                  f' ({time.time() - t0:.0f} s so far)', flush=True)
    runs = {k: v for k, v in collect(os.path.join(REPO, 'experiments')).items()
            if k in {ARMS[a] for a in args.arms}}
    rows = summarize(runs)
    table = markdown(rows)
    print('\n' + table)
    meta = {'iters': args.iters, 'seeds': args.seeds, 'arms': {a: ARMS[a] for a in args.arms},
            'precision': precision, 'device': describe(device), 'torch': torch.__version__,
            'data': json.load(open(os.path.join(DATA, 'ready.json'))), 'wall_s': round(time.time() - t0, 1)}
    atomic_write(os.path.join(RESULTS, 'ablation.json'), lambda f: json.dump({**meta, 'rows': rows}, f, indent=1),
                 binary=False)
    atomic_write(os.path.join(RESULTS, 'ablation.md'), lambda f: f.write(
        f'{table}\n\n{args.iters} iterations per arm, seeds {args.seeds}, {precision} on {describe(device)}\n'),
        binary=False)


if __name__ == '__main__':
    main()
