"""The models that ship: reached by name in every tool and in spandrel, the file matches its card, the card
holds the fields a model zoo uses, and the quality the card states is what ``test`` measures."""
import json
import os

import pytest
import torch
from helpers import random_images, run_module, shared_path

from rlfn_arch.archs.zoo import WEIGHTS_DIR, UnknownModelError, model_cards, model_file, sha256
from rlfn_arch.utils.checkpoint import read_safetensors

CARD_FIELDS = {'name', 'license', 'licenseReasoning', 'architecture', 'scale', 'inputChannels', 'outputChannels',
               'resources', 'trainingIterations', 'trainingBatchSize', 'trainingHRSize', 'dataset', 'hardware',
               'trainingHours', 'metrics', 'pretrainedModelG'}


def test_rlfn_s_x3_ships_with_a_complete_card():
    cards = model_cards()
    assert 'rlfn_s_x3' in cards
    card = cards['rlfn_s_x3']
    assert CARD_FIELDS <= set(card) and card['scale'] == 3
    res = card['resources'][0]
    path = model_file('rlfn_s_x3')
    assert sha256(path) == res['sha256'] and os.path.getsize(path) == res['size'] < 2.5 * 2**20
    tensors, meta = read_safetensors(path)
    assert meta['scale'] == '3' and meta['value_range'] == '[0, 1]'
    assert sum(v.numel() for v in tensors.values()) == card['parameters']


def test_an_unknown_or_damaged_model_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(UnknownModelError, match='rlfn_s_x3'):
        model_file('rlfn_x9')
    proc = run_module('rlfn_arch.infer', '-i', tmp_path, '-o', tmp_path / 'o', '--model', 'rlfn_x9', check=False)
    assert proc.returncode == 2 and 'available: rlfn_s_x3' in proc.stderr
    import shutil

    import rlfn_arch.archs.zoo as zoo
    for f in os.listdir(WEIGHTS_DIR):
        shutil.copy(os.path.join(WEIGHTS_DIR, f), tmp_path / f)
    data = bytearray((tmp_path / 'rlfn_s_x3.safetensors').read_bytes())
    data[-1] ^= 1
    (tmp_path / 'rlfn_s_x3.safetensors').write_bytes(bytes(data))
    monkeypatch.setattr(zoo, 'WEIGHTS_DIR', str(tmp_path))
    with pytest.raises(ValueError, match='damaged'):
        model_file('rlfn_s_x3')


def test_the_model_is_reached_by_name_in_infer_export_and_spandrel(tmp_path):
    random_images(tmp_path / 'in', [(20, 16)])
    run_module('rlfn_arch.infer', '-i', tmp_path / 'in', '-o', tmp_path / 'out', '--model', 'rlfn_s_x3',
               '--precision', 'fp32')
    import cv2
    assert cv2.imread(str(tmp_path / 'out' / 'im0.png')).shape == (48, 60, 3)
    proc = run_module('rlfn_arch.export', '--model', 'rlfn_s_x3', '--output', tmp_path / 'm.onnx')
    assert 'check passed' in proc.stdout
    random_images(tmp_path / 'calib', [(40, 40)])
    run_module('rlfn_arch.quantize', '--model', 'rlfn_s_x3', '--output', tmp_path / 'q.onnx', '--calib',
               tmp_path / 'calib', '--num_patches', '2')
    bench = run_module('rlfn_arch.benchmark', '--model', 'rlfn_s_x3', '--size', '24', '24', '--runs', '1',
                       '--warmup', '0', '--json', tmp_path / 'b.json', '--precision', 'fp32')
    assert 'rlfn_s_x3' in bench.stdout
    import rlfn_arch.integrations.spandrel as rlfn_spandrel
    desc = rlfn_spandrel.load('rlfn_s_x3')
    assert desc.scale == 3 and desc.architecture.id == 'RLFN'
    with torch.no_grad():
        assert desc(torch.rand(1, 3, 16, 16)).shape == (1, 3, 48, 48)
    listing = run_module('rlfn_arch.zoo')
    assert 'rlfn_s_x3' in listing.stdout and 'Apache-2.0' in listing.stdout
    assert json.loads(run_module('rlfn_arch.zoo', '--card', 'rlfn_s_x3').stdout)['scale'] == 3


def test_test_with_the_model_gives_the_cards_numbers():
    """The card's Set5/Set14 numbers are what ``python -m rlfn_arch.test --model rlfn_s_x3`` prints."""
    root = shared_path('datasets')
    proc = run_module('rlfn_arch.test', '-opt', 'options/test/test_RLFN_S_x3.yml', '--datasets_root', root,
                      '--model', 'rlfn_s_x3')
    out = proc.stdout + proc.stderr
    card = model_cards()['rlfn_s_x3']['metrics']
    for name in ('Set5', 'Set14'):
        block = out.split(f'Validation {name}')[1]
        psnr = float(block.split('# psnr:')[1].split()[0])
        ssim = float(block.split('# ssim:')[1].split()[0])
        assert (psnr, ssim) == (card[name]['psnr'], card[name]['ssim'])
    assert card['Set5']['psnr'] >= 34.25 and card['Set14']['psnr'] >= 30.20
