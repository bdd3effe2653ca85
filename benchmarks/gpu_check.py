"""Device check for a CUDA machine (one short script for a lent GPU):

1. the tiny two-stage warm-start recipe under ``torchrun --nproc_per_node=1 ... --launcher pytorch``
   (nccl chosen from the device), stage 2 an int8 quantization-aware stage (``train: qat``), killed during
   stage 2 and resumed with ``--auto_resume``; the run's int8 ONNX model (where onnxruntime is installed);
2. the quick start (``options/train/RLFN_S_x4_quickstart.yml``) on the GPU, with its wall time;
3. ``python -m rlfn_arch.benchmark`` for the three presets (CUDA events), fp32 and the fast path,
   and ``infer --half`` on one image.

    python benchmarks/gpu_check.py --out DIR [--skip_quickstart]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'tests'))
sys.path.insert(0, os.path.join(REPO, 'tests', 'system'))


def sh(cmd, log, timeout=900, check=True, env=None):
    t = time.time()
    e = dict(os.environ, PYTHONUNBUFFERED='1', **(env or {}))
    p = subprocess.run(cmd, cwd=REPO, env=e, text=True, capture_output=True, timeout=timeout)
    with open(log, 'a') as f:
        f.write(f'$ {" ".join(map(str, cmd))}\n{p.stdout}\n{p.stderr}\nexit {p.returncode} in {time.time() - t:.1f}s\n')
    if check and p.returncode:
        raise SystemExit(f'failed: {cmd}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}')
    return p, time.time() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', required=True)
    ap.add_argument('--skip_quickstart', action='store_true')
    ap.add_argument('--only_ddp', action='store_true')
    ap.add_argument('--s2_iters', type=int, default=400, help='stage 2 length (long enough to be killed in)')
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    log = os.path.join(args.out, 'gpu_check.log')
    import torch
    res = {'torch': torch.__version__, 'cuda': torch.cuda.is_available(),
           'device': torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}
    print(res, flush=True)
    import pathlib

    from helpers import tiny_options
    from test_ddp import kill_tree  # the same tiny recipe and kill as the CPU tests
    tmp = pathlib.Path(tempfile.mkdtemp(prefix='rlfn_gpu_'))
    yml, exp = tiny_options(tmp, stage_iters=(20, args.s2_iters, 1), save_freq=5)
    opt = yaml.safe_load(yml.read_text())
    opt['num_gpu'] = 'auto'
    opt['stages'] = opt['stages'][:2]
    opt['stages'][1]['train']['qat'] = {'convs': 'all'}  # fake quantization on CUDA, its state through a resume
    yml.write_text(yaml.safe_dump(opt, sort_keys=False))
    run = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=1',
           '-m', 'rlfn_arch.train', '-opt', str(yml), '--launcher', 'pytorch']
    t0 = time.time()
    p = subprocess.Popen(run, cwd=REPO, start_new_session=True, stdout=open(log, 'a'), stderr=subprocess.STDOUT,
                         env=dict(os.environ, PYTHONUNBUFFERED='1'))
    target = exp / 's2' / 'training_states' / '20.state'
    while not target.exists() and p.poll() is None and time.time() - t0 < 300:
        time.sleep(0.05)
    killed = target.exists()
    kill_tree(p, yml)
    p.wait()
    out, dt = sh(run + ['--auto_resume'], log, check=False)
    records = json.loads((exp / 'stages.json').read_text())['stages'] if (exp / 'stages.json').exists() else {}
    logs2 = ''.join(open(os.path.join(exp, 's2', f)).read() for f in os.listdir(exp / 's2') if f.endswith('.log'))
    res['ddp_nccl_tiny'] = {'killed_in_stage2': killed, 'resume_exit': out.returncode,
                            'resumed': '[s2] resuming from' in out.stdout,
                            'stages': {k: v.get('status') for k, v in records.items()},
                            'backend': ('nccl' if 'backend nccl' in out.stdout
                                        else 'gloo' if 'backend gloo' in out.stdout else '?'),
                            'iters_s2': max([int(x.replace(',', '')) for x in re.findall(r'iter:\s+([\d,]+)', logs2)]
                                            or [0]),
                            'seconds': round(time.time() - t0, 1),
                            'int8_onnx': (exp / 'net_g_final_int8.onnx').exists(),
                            'stdout_tail': out.stdout[-600:]}
    print(res['ddp_nccl_tiny'], flush=True)
    if args.only_ddp:
        return print(json.dumps(res, indent=1))
    if not args.skip_quickstart:
        p, dt = sh([sys.executable, '-m', 'rlfn_arch.train', '-opt', 'options/train/RLFN_S_x4_quickstart.yml'], log,
                   check=False)
        res['quickstart'] = {'exit': p.returncode, 'seconds': round(dt, 1),
                             'table': '\n'.join(ln for ln in p.stdout.splitlines() if ln.startswith('|'))}
        print(res['quickstart'], flush=True)
    p, dt = sh([sys.executable, 'benchmarks/train_throughput.py', '--shapes', 'paper', '--arms', 'b', 'c', 'd', 'e',
                'q', '--iters', '20', '--warmup', '5'], log, check=False)
    res['train_throughput_paper'] = [ln for ln in p.stdout.splitlines() if ln.startswith('|')]
    print('\n'.join(res['train_throughput_paper']), flush=True)
    bench = []
    for preset in ('rlfn', 'rlfn_s', 'rlfn_ntire'):
        j = os.path.join(args.out, f'bench_{preset}.json')
        p, _ = sh([sys.executable, '-m', 'rlfn_arch.benchmark', '--preset', preset, '--runs', '50', '--warmup', '10',
                   '--fast', '--json', j], log, check=False)
        if p.returncode == 0:
            bench += json.load(open(j))
    res['benchmark'] = bench
    import cv2
    import numpy as np
    img = os.path.join(tmp, 'img.png')
    cv2.imwrite(img, (np.random.default_rng(0).random((540, 960, 3)) * 255).astype(np.uint8))
    ckpt = os.path.join(tmp, 'ck.pth')
    from rlfn_arch.archs import PRESETS, RLFN
    torch.save({'params': RLFN(upscale=4, **PRESETS['rlfn_s']).state_dict()}, ckpt)
    p, dt = sh([sys.executable, '-m', 'rlfn_arch.infer', '-i', img, '-o', os.path.join(tmp, 'o.png'),
                '--model_path', ckpt, '--half', '--tile', '0'], log, check=False)
    res['infer_half'] = {'exit': p.returncode, 'seconds': round(dt, 1), 'stdout': p.stdout[-300:]}
    with open(os.path.join(args.out, 'gpu_check.json'), 'w') as f:
        json.dump(res, f, indent=1)
    print(json.dumps({k: v for k, v in res.items() if k != 'benchmark'}, indent=1))
    for b in bench:
        print(b['model'], b['path'], b['runtime_ms'], 'ms', b['peak_memory_MB'], 'MB', b['hardware'])


if __name__ == '__main__':
    main()
