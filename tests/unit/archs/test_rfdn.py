"""RFDN and the steps between RFDN and RLFN: the official RFDN file converts and
matches the official code's output, every step round-trips (build, save, detect, load strictly, same
outputs) and exports to ONNX, the RLFN side of every switch is RLFN exactly, and RFDN trains, resumes and
exports from an option file like RLFN."""
import json
import os

import pytest
import torch
from helpers import edit, run_module, shared_path, tiny_options, train_main

from rlfn_arch.archs.rlfn_arch import PRESETS, RFDN, RLFN, STEPS
from rlfn_arch.archs.rlfn_weights import detect_config, load_rlfn, preset_name
from rlfn_arch.utils.checkpoint import safe_load

from basicsr.utils.registry import ARCH_REGISTRY


def test_official_rfdn_converts_loads_strictly_and_matches_the_official_output(tmp_path):
    src = shared_path('weights', 'rfdn_aim_x4.pth')
    ref = torch.load(shared_path('reference', 'official_rfdn_io.pt'), map_location='cpu', weights_only=True)
    out = tmp_path / 'RFDN_AIM_x4.pth'
    proc = run_module('rlfn_arch.convert', '--input', src, '--output', out)
    assert 'rfdn x4, 433,448 parameters' in proc.stdout
    net = RFDN(upscale=4).eval()
    net.load_state_dict(safe_load(out)['params'], strict=True)
    assert sum(p.numel() for p in net.parameters()) == 433_448
    with torch.no_grad():
        y = net(ref['input'])
    assert (y - ref['out_255']['rfdn_aim_x4'] / 255).abs().max().item() <= 1e-5


def test_rfdn_test_pipeline_sr_image_equals_the_official_code_on_the_reference(tmp_path):
    """Our test pipeline (BasicSR's test_pipeline through python -m rlfn_arch.test) on the reference input,
    saved as an image, is the converted network's output on that image bit for bit; the test above ties the
    converted network to the official code's output (1e-5), so the pipeline's numbers are the official
    network's."""
    import cv2
    import numpy as np
    src = shared_path('weights', 'rfdn_aim_x4.pth')
    ref = torch.load(shared_path('reference', 'official_rfdn_io.pt'), map_location='cpu', weights_only=True)
    weights = tmp_path / 'RFDN_AIM_x4.pth'
    run_module('rlfn_arch.convert', '--input', src, '--output', weights)
    lq = (ref['input'][0].permute(1, 2, 0).numpy()[:, :, ::-1] * 255).round().astype(np.uint8)  # BGR uint8
    (tmp_path / 'hr').mkdir()
    (tmp_path / 'lr').mkdir()
    cv2.imwrite(str(tmp_path / 'lr' / 'ref.png'), lq)
    cv2.imwrite(str(tmp_path / 'hr' / 'ref.png'), np.zeros((256, 256, 3), np.uint8))
    opt = tmp_path / 'test.yml'
    opt.write_text(open(os.path.join(os.path.dirname(__file__), '..', '..', '..', 'options', 'test',
                                     'test_RFDN_AIM_x4.yml')).read())
    edit(opt, lambda o: (o['datasets'].clear(), o['datasets'].update(test_1={
        'name': 'ref', 'type': 'PairedImageDataset', 'dataroot_gt': str(tmp_path / 'hr'),
        'dataroot_lq': str(tmp_path / 'lr'), 'io_backend': {'type': 'disk'}}),
        o['path'].update(pretrain_network_g=str(weights), root=str(tmp_path)), o['val'].update(save_img=True),
        o.update(num_gpu=0)))
    run_module('rlfn_arch.test', '-opt', opt)
    got = cv2.imread(str(tmp_path / 'results' / 'test_RFDN_AIM_x4' / 'visualization' / 'ref' /
                         'ref_test_RFDN_AIM_x4.png'))
    x = torch.from_numpy(lq[:, :, ::-1].copy()).permute(2, 0, 1)[None].float()  # what the pipeline feeds, x255
    net = RFDN().eval()
    net.load_state_dict(safe_load(weights)['params'])
    with torch.no_grad():
        ours = net(x / 255)
    expected = (ours[0].clamp(0, 1).permute(1, 2, 0).numpy()[:, :, ::-1] * 255).round().astype(np.uint8)
    assert np.array_equal(got, expected)


@pytest.mark.parametrize('name', sorted(PRESETS))
@pytest.mark.parametrize('scale', [2, 4])
def test_every_preset_and_step_round_trips(tmp_path, name, scale):
    torch.manual_seed(0)
    cfg = dict(upscale=scale, **PRESETS[name])
    net = RLFN(**cfg).eval()
    path = tmp_path / 'w.pth'
    torch.save({'params': net.state_dict()}, path)
    _, detected, loaded = load_rlfn(str(path))
    assert preset_name(detected) == name
    x = torch.rand(1, 3, 20, 17)
    with torch.no_grad():
        assert torch.equal(net(x), loaded.eval()(x))


def test_the_rlfn_side_of_every_switch_is_rlfn_exactly():
    explicit = RLFN(block='rlfb', esa='trimmed', fuse='none')
    assert list(explicit.state_dict()) == list(RLFN().state_dict())
    assert 'block_1.c1_d.weight' not in explicit.state_dict() and 'fuse.0.weight' not in explicit.state_dict()
    rfdn = RFDN().state_dict()
    assert {'block_1.c1_d.weight', 'block_1.esa.conv_max.weight', 'block_1.esa.conv3_.weight', 'fuse.0.weight'} <= \
        set(rfdn)


@pytest.mark.parametrize('switch,value', [('block', 'rfdb'), ('esa', 'full'), ('fuse', 'concat')])
def test_each_switch_alone_changes_only_its_part_and_is_detected(switch, value):
    cfg = dict(feature_channels=16, mid_channels=16, esa_channels=8, num_blocks=2)
    base, other = RLFN(**cfg).state_dict(), RLFN(**cfg, **{switch: value}).state_dict()
    changed = set(base) ^ set(other)
    part = {'block': '.c', 'esa': '.esa.', 'fuse': 'fuse.'}[switch]
    assert changed and all(part in k for k in changed), sorted(changed)
    assert detect_config(other)[switch] == value and switch not in detect_config(base)


def test_bad_switch_values_name_the_argument():
    with pytest.raises(ValueError, match='esa must be one of trimmed, full'):
        RLFN(esa='half')
    with pytest.raises(ValueError, match='even feature_channels'):
        RLFN(block='rfdb', feature_channels=51)


def test_rfdn_is_registered_and_the_steps_are_one_switch_apart():
    assert ARCH_REGISTRY.get('RFDN') is RFDN
    order = ['rfdn', 'rfdn_rlfb', 'rfdn_rlfb_esa1', 'rfdn_rlfb_esa1_nocat']
    assert list(STEPS) == order
    for a, b in zip(order, order[1:]):
        assert sum(STEPS[a][k] != STEPS[b][k] for k in ('block', 'esa', 'fuse')) == 1


@pytest.mark.parametrize('name', sorted(STEPS))
def test_every_step_exports_to_onnx_and_matches(tmp_path, name):
    from rlfn_arch.deploy.onnx import check_onnx, export_onnx
    torch.manual_seed(0)
    net = RLFN(upscale=2, **dict(STEPS[name], feature_channels=16, esa_channels=8, num_blocks=2)).eval()
    export_onnx(net, str(tmp_path / 'm.onnx'))
    assert max(d for _, _, d in check_onnx(net, str(tmp_path / 'm.onnx'), sizes=[(15, 15), (24, 31)])) <= 1e-4


def test_rfdn_trains_resumes_and_exports_from_an_option_file(tmp_path, capsys):
    yml, exp = tiny_options(tmp_path, stage_iters=(2, 2, 4), save_freq=2)
    edit(yml, lambda o: o.update(network_g={'type': 'RFDN', 'upscale': 4, 'feature_channels': 8, 'esa_channels': 4,
                                            'num_blocks': 2}))
    assert train_main('-opt', yml) == 0
    rec = json.loads((exp / 'stages.json').read_text())
    rec['stages']['s3']['status'] = 'running'  # as if killed after its iteration-2 checkpoint
    (exp / 'stages.json').write_text(json.dumps(rec))
    capsys.readouterr()
    assert train_main('-opt', yml, '--auto_resume') == 0
    assert '[s3] resuming from' in capsys.readouterr().out
    final = exp / 'net_g_final.pth'
    proc = run_module('rlfn_arch.export', '--model_path', final, '--output', tmp_path / 'rfdn.onnx')
    assert "'block': 'rfdb'" in proc.stdout and 'check passed' in proc.stdout
