"""The published RLFN numbers through BasicSR's test pipeline with the converted official weights."""
import glob
import re

import pytest
from helpers import run_module, shared_path

PAPER = {  # Kong et al., CVPRW 2022: PSNR / SSIM on Y, border = scale
    ('rlfn_x4', 4): {'Set5': (32.24, 0.8952), 'Set14': (28.62, 0.7813)},
    ('rlfn_x2', 2): {'Set5': (38.07, 0.9607), 'Set14': (33.72, 0.9187)},
}


def _metrics(text):
    out = {}
    for name, body in re.findall(r'Validation (\w+)\n((?:\s+# \w+: [\d.]+.*\n)+)', text):
        out[name] = {m: float(v) for m, v in re.findall(r'# (\w+): ([\d.]+)', body)}
    return out


@pytest.mark.parametrize('weights,scale', list(PAPER))
def test_published_numbers(weights, scale, tmp_path):
    src = shared_path('weights', f'{weights}.pth')
    datasets = shared_path('datasets')
    ckpt = tmp_path / f'{weights}.pth'
    run_module('rlfn_arch.convert', '--input', src, '--output', ckpt)
    proc = run_module('rlfn_arch.test', '-opt', f'options/test/test_RLFN_x{scale}.yml', '--datasets_root', datasets,
                      '--force_yml', f'path:pretrain_network_g={ckpt}', f'path:root={tmp_path}')
    on_stdout = _metrics(proc.stdout)
    logs = glob.glob(str(tmp_path / 'results' / f'test_RLFN_x{scale}' / 'test_*.log'))
    assert len(logs) == 1
    in_log = _metrics(open(logs[0]).read())
    for dataset, (psnr, ssim) in PAPER[(weights, scale)].items():
        assert on_stdout[dataset] == in_log[dataset]
        assert abs(on_stdout[dataset]['psnr'] - psnr) <= 0.01, (dataset, on_stdout[dataset])
        assert abs(on_stdout[dataset]['ssim'] - ssim) <= 0.001, (dataset, on_stdout[dataset])
