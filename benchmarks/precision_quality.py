"""PSNR-Y / SSIM-Y of every official RLFN model on Set5 and Set14 in fp32 and in bf16, through the same
test pipeline users run (``python -m rlfn_arch.test -opt options/test/test_<model>.yml --precision P``).

    python benchmarks/precision_quality.py [--precisions fp32 bf16]

Needs ../shared (weights and benchmark sets). Converted weights go to weights/ (as the README's
results section does). Writes results/precision_quality.json and prints a table with the bf16 - fp32
change. bf16 on a CPU without AVX512_BF16/AMX is emulated: the numbers are the same, only slower.
"""
import argparse
import os
import re
import subprocess
import sys

from _common import SHARED, report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = [('rlfn_x2', 'RLFN_x2'), ('rlfn_x4', 'RLFN_x4'), ('rlfn_s_x2', 'RLFN_S_x2'), ('rlfn_s_x4', 'RLFN_S_x4')]


def run(*args):
    out = subprocess.run([sys.executable, '-m', *args], cwd=REPO, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f'{args}: exit {out.returncode}\n{out.stderr[-2000:]}')
    return out.stdout


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--precisions', nargs='+', default=['fp32', 'bf16'])
    p.add_argument('--models', nargs='+', default=[n for _, n in MODELS], choices=[n for _, n in MODELS])
    args = p.parse_args()
    rows = []
    for official, name in MODELS:
        if name not in args.models:
            continue
        weights = os.path.join(REPO, 'weights', f'{name}.pth')
        if not os.path.isfile(weights):
            run('rlfn_arch.convert', '--input', os.path.join(SHARED, 'weights', f'{official}.pth'), '--output', weights)
        res = {}
        for prec in args.precisions:
            out = run('rlfn_arch.test', '-opt', f'options/test/test_{name}.yml', '--datasets_root',
                      os.path.join(SHARED, 'datasets'), '--precision', prec)
            for ds, body in re.findall(r'Validation (\w+)\n((?:\s+# \w+: [\d.]+.*\n)+)', out):
                m = dict(re.findall(r'# (\w+): ([\d.]+)', body))
                res[(ds, prec)] = (float(m['psnr']), float(m['ssim']))
        for ds in ('Set5', 'Set14'):
            row = {'model': name, 'set': ds}
            for prec in args.precisions:
                if (ds, prec) in res:
                    row[f'{prec}_psnr'], row[f'{prec}_ssim'] = res[(ds, prec)]
            if 'fp32_psnr' in row and 'bf16_psnr' in row:
                row['bf16_change_dB'] = round(row['bf16_psnr'] - row['fp32_psnr'], 4)
            rows.append(row)
            print(row, flush=True)
    report('precision_quality', rows, ['model', 'set', 'fp32_psnr', 'fp32_ssim', 'bf16_psnr', 'bf16_ssim',
                                       'bf16_change_dB'])


if __name__ == '__main__':
    main()
