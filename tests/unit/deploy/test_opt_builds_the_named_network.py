"""``--opt FILE`` builds the network its ``network_g`` names (any registered type: RLFN, RFDN, the derivation
steps) in every tool that takes a model, for every shipped option file that names a network."""
import glob
import json
import os

import pytest
import torch
import yaml
from helpers import REPO, make_pairs, random_images, run_module

from rlfn_arch.utils.options import load_options

from basicsr.archs import build_network


def _distinct_networks():
    """One shipped option file per distinct network_g (their weights are all built the same way)."""
    seen = {}
    for path in sorted(glob.glob(os.path.join(REPO, 'options', '**', '*.yml'), recursive=True)):
        if os.path.basename(path).startswith('_'):
            continue
        net = load_options(path).get('network_g')
        if net:
            seen.setdefault(json.dumps(net, sort_keys=True), os.path.relpath(path, REPO))
    return sorted(seen.values())


def _weights(opt_file, path):
    net_opt = dict(load_options(os.path.join(REPO, opt_file))['network_g'])
    torch.manual_seed(0)
    net = build_network(net_opt)
    torch.save({'params': net.state_dict()}, path)
    return net_opt


def test_every_shipped_network_is_covered():
    files = _distinct_networks()
    types = {load_options(os.path.join(REPO, f))['network_g']['type'] for f in files}
    assert {'RLFN', 'RFDN'} <= types and len(files) >= 5


@pytest.mark.parametrize('opt_file', _distinct_networks())
def test_infer_builds_the_network_of_the_option_file(tmp_path, opt_file):
    _weights(opt_file, tmp_path / 'w.pth')
    random_images(tmp_path / 'in', [(16, 16)])
    proc = run_module('rlfn_arch.infer', '-i', tmp_path / 'in', '-o', tmp_path / 'out', '--model_path',
                      tmp_path / 'w.pth', '--opt', opt_file, '--precision', 'fp32')
    assert '1 image(s) upscaled' in proc.stdout


def test_rfdn_option_file_works_in_every_tool(tmp_path):
    opt_file = 'options/test/test_RFDN_AIM_x4.yml'
    net_opt = _weights(opt_file, tmp_path / 'rfdn.pth')
    assert net_opt['type'] == 'RFDN'
    w = tmp_path / 'rfdn.pth'
    run_module('rlfn_arch.export', '--model_path', w, '--opt', opt_file, '--output', tmp_path / 'm.onnx')
    run_module('rlfn_arch.benchmark', '--model_path', w, '--opt', opt_file, '--runs', '1', '--warmup', '0',
               '--size', '24', '24', '--json', tmp_path / 'b.json')
    hr, lr = make_pairs(str(tmp_path / 'data'), n=1, size=(64, 64), scale=4)
    run_module('rlfn_arch.compare', '--hr', hr, '--lr', lr, '--model_path', w, '--opt', opt_file, '-o', tmp_path / 'c')
    test_opt = load_options(os.path.join(REPO, opt_file))
    test_opt['datasets'] = {'test_1': {'name': 'tiny', 'type': 'PairedImageDataset', 'dataroot_gt': hr,
                                       'dataroot_lq': lr, 'filename_tmpl': '{}x4', 'io_backend': {'type': 'disk'}}}
    test_opt['path'] = {'root': str(tmp_path), 'pretrain_network_g': str(w), 'strict_load_g': True}
    (tmp_path / 't.yml').write_text(yaml.safe_dump(json.loads(json.dumps(test_opt))))
    proc = run_module('rlfn_arch.test', '-opt', tmp_path / 't.yml')
    assert '# psnr' in proc.stdout + proc.stderr
