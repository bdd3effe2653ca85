"""Warm start across scales (``path.cross_scale_g``): every body tensor bit for bit, the upsampler resampled or
fresh at the body's scale, any other mismatch refused by name; through the trainer and its dry run."""
import json

import pytest
import torch
from helpers import edit, run_module, shared_path, tiny_options
from torch.nn import functional as F

from rlfn_arch.archs.rlfn_arch import RLFN
from rlfn_arch.archs.rlfn_weights import cross_scale_state, resample_head, subpixel_resampling
from rlfn_arch.utils.checkpoint import CheckpointError, safe_load

TINY = dict(feature_channels=8, mid_channels=8, num_blocks=1)


def _net(scale, seed=0, **kw):
    torch.manual_seed(seed)
    return RLFN(upscale=scale, **dict(TINY, **kw))


def _body(sd):
    return {k: v for k, v in sd.items() if not k.startswith('upsampler.0.')}


@pytest.mark.parametrize('src', [2, 4])
@pytest.mark.parametrize('mode', ['resample', 'fresh'])
def test_every_body_tensor_is_loaded_bit_for_bit(src, mode):
    source = _net(src, seed=1).state_dict()
    target = _net(3, seed=2)
    sd, notes = cross_scale_state(source, target, mode=mode)
    assert all(torch.equal(sd[k], v) for k, v in _body(source).items())
    assert sd['upsampler.0.weight'].shape == (27, 8, 3, 3)
    assert [n.split(':')[0] for n in notes] == ['upsampler.0.weight', 'upsampler.0.bias']
    assert all(f'x{src}' in n and 'x3' in n for n in notes)
    if mode == 'fresh':  # a [0, 1] checkpoint: the network's own initialisation, unscaled
        assert torch.equal(sd['upsampler.0.weight'], target.state_dict()['upsampler.0.weight'])


def test_a_fresh_head_on_an_official_body_starts_at_the_body_scale():
    """The official [0, 255] file: its body is folded (conv_1 x 255, features 255 times a [0, 1] body's), so the
    fresh head is divided by 255 and the first outputs are of an image's size in [0, 1], not 255 times that."""
    path = shared_path('weights', 'rlfn_s_x4.pth')
    torch.manual_seed(0)
    target = RLFN(upscale=3, feature_channels=48, mid_channels=48)
    fresh_w, fresh_b = (target.state_dict()[f'upsampler.0.{k}'].clone() for k in ('weight', 'bias'))
    sd, notes = cross_scale_state(safe_load(path), target, path, mode='fresh')
    assert torch.equal(sd['upsampler.0.weight'], fresh_w / 255) and torch.equal(sd['upsampler.0.bias'], fresh_b / 255)
    assert 'divided by 255' in notes[0]
    target.load_state_dict(sd)
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        scaled = target(x).abs().mean()
        target.load_state_dict(dict(sd, **{'upsampler.0.weight': fresh_w, 'upsampler.0.bias': fresh_b}))
        unscaled = target(x).abs().mean()
    assert scaled < 2 and unscaled > 100 * scaled


def test_subpixel_resampling_interpolates_the_positions():
    m = subpixel_resampling(4, 3)  # x4 sub-pixels at -3/8 -1/8 1/8 3/8; x3 at -1/3 0 1/3
    assert torch.allclose(m.sum(1), torch.ones(3, dtype=m.dtype))
    assert torch.allclose(m[1], torch.tensor([0, 0.5, 0.5, 0], dtype=m.dtype))
    pos4 = torch.tensor([-3 / 8, -1 / 8, 1 / 8, 3 / 8], dtype=m.dtype)
    assert torch.allclose(m @ pos4, torch.tensor([-1 / 3, 0, 1 / 3], dtype=m.dtype))
    assert torch.equal(subpixel_resampling(3, 3), torch.eye(3, dtype=m.dtype))


def test_a_resampled_head_predicts_the_resampled_image():
    """A head whose x4 output is a linear ramp over the sub-pixels gives the same ramp at the x3 positions."""
    c, f = 3, 8
    w = torch.zeros(c * 16, f, 3, 3)
    b = torch.zeros(c * 16)
    for i in range(4):
        for j in range(4):
            b[torch.arange(c) * 16 + i * 4 + j] = (i + 0.5) / 4 + 2 * ((j + 0.5) / 4)  # y + 2x in LR pixel units
    w3, b3 = resample_head(w, b, 4, 3)
    out = F.pixel_shuffle(b3.reshape(1, c * 9, 1, 1), 3)[0, 0]
    expect = torch.tensor([[(i + 0.5) / 3 + 2 * ((j + 0.5) / 3) for j in range(3)] for i in range(3)])
    assert w3.shape == (c * 9, f, 3, 3) and torch.allclose(out, expect, atol=1e-6)


@pytest.mark.parametrize('change, tensor', [
    (dict(feature_channels=12, mid_channels=12), 'conv_1.weight'),
    (dict(num_blocks=2), 'block_2.c1_r.weight'),
    (dict(block='rfdb', esa='full', fuse='concat'), 'block_1.c1_d.weight'),
])
def test_any_other_mismatch_is_refused_naming_the_tensor(change, tensor):
    source = _net(4).state_dict()
    with pytest.raises(CheckpointError, match=tensor.replace('.', r'\.')):
        cross_scale_state(source, _net(3, **change), 'src.pth')


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match='resample or fresh|resample, fresh'):
        cross_scale_state(_net(4).state_dict(), _net(3), mode='zero')


def _cross_scale_yml(tmp_path, mode, ckpt_scale=4):
    yml, exp = tiny_options(tmp_path, stage_iters=(2, 1, 1), scale=3)
    src = tmp_path / 'x4.pth'
    torch.save({'params': _net(ckpt_scale, seed=5).state_dict()}, src)

    def cross(o):
        o['path'].update(pretrain_network_g=str(src), cross_scale_g=mode)
        o['stages'] = o['stages'][:2]
    edit(yml, cross)
    return yml, exp, src


def test_training_warm_starts_across_scales_and_the_dry_run_says_so(tmp_path):
    yml, exp, src = _cross_scale_yml(tmp_path, 'resample')
    dry = run_module('rlfn_arch.train', '-opt', yml, '--dry_run')
    assert 'across scales (upsampler.0: resample)' in dry.stdout
    assert dry.stdout.count('across scales') == 1  # stage 2 starts from stage 1 (same scale)
    run_module('rlfn_arch.train', '-opt', yml)
    init = safe_load(exp / 's1' / 'models' / 'net_g_init.pth')['params']
    source = safe_load(src)['params']
    assert all(torch.equal(init[k], v) for k, v in _body(source).items())
    w, b = resample_head(source['upsampler.0.weight'], source['upsampler.0.bias'], 4, 3)
    assert torch.equal(init['upsampler.0.weight'], w) and torch.equal(init['upsampler.0.bias'], b)
    log = '\n'.join(p.read_text() for p in (exp / 's1').glob('train_*.log'))
    assert 'Across scales: upsampler.0.weight: not loaded as is' in log
    assert json.loads((exp / 'stages.json').read_text())['stages']['s2']['status'] == 'done'


def test_a_width_mismatch_across_scales_is_refused_before_anything_is_written(tmp_path):
    yml, exp, src = _cross_scale_yml(tmp_path, 'fresh')
    torch.save({'params': _net(4, feature_channels=12, mid_channels=12).state_dict()}, src)
    proc = run_module('rlfn_arch.train', '-opt', yml, check=False)
    assert proc.returncode == 2
    assert 'conv_1.weight' in proc.stdout + proc.stderr and not exp.exists()


def test_cross_scale_value_is_checked(tmp_path):
    yml, exp, _ = _cross_scale_yml(tmp_path, 'yes')
    proc = run_module('rlfn_arch.train', '-opt', yml, '--dry_run', check=False)
    assert proc.returncode == 2 and 'path.cross_scale_g' in proc.stdout + proc.stderr


def test_official_x4_file_warm_starts_x3():
    """The official RLFN-S x4 file as released ([0, 255]): the body folded and loaded bit for bit."""
    path = shared_path('weights', 'rlfn_s_x4.pth')
    from rlfn_arch.archs.rlfn_weights import convert
    folded, _, factor = convert(path)
    assert factor == 255
    torch.manual_seed(0)
    net = RLFN(upscale=3, feature_channels=48, mid_channels=48)
    sd, notes = cross_scale_state(safe_load(path), net, path)
    assert all(torch.equal(sd[k], v) for k, v in _body(folded).items())
    assert 'resampled from x4 to x3' in notes[0]
    w, _ = resample_head(folded['upsampler.0.weight'], folded['upsampler.0.bias'], 4, 3)
    assert torch.equal(sd['upsampler.0.weight'], w)


def test_range_detection_keeps_the_networks_mode_and_device():
    """Loading weights into a network being set up for training leaves it in training mode (found on a GPU:
    the probe also runs on the network's own device)."""
    from rlfn_arch.archs.rlfn_weights import value_range
    net = _net(4).train()
    assert value_range(net) == 1 and net.training
    assert value_range(net.eval()) == 1 and not net.training


def test_trainable_g_trains_only_the_named_tensors(tmp_path):
    """``train: trainable_g: [upsampler.0.]``: the head learns, every body tensor stays bit for bit."""
    yml, exp, _ = _cross_scale_yml(tmp_path, 'resample')
    edit(yml, lambda o: (o['train'].update(trainable_g=['upsampler.0.']), o.update(stages=o['stages'][:1])))
    run_module('rlfn_arch.train', '-opt', yml)
    init = safe_load(exp / 's1' / 'models' / 'net_g_init.pth')['params']
    last = safe_load(exp / 's1' / 'models' / 'net_g_latest.pth')['params']
    assert all(torch.equal(init[k], v) for k, v in _body(last).items())
    assert not torch.equal(init['upsampler.0.weight'], last['upsampler.0.weight'])
    edit(yml, lambda o: o['train'].update(trainable_g=['nothing.']))
    proc = run_module('rlfn_arch.train', '-opt', yml, check=False)
    assert proc.returncode != 0 and 'trainable_g' in proc.stdout + proc.stderr
