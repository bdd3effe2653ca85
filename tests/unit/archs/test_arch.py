import subprocess
import sys

import pytest
import torch

from rlfn_arch.archs import MIN_INPUT_SIZE, PRESETS, RLFN


@pytest.mark.parametrize('preset,scale,expected', [
    ('rlfn', 4, 543_740), ('rlfn', 2, 526_856), ('rlfn_s', 4, 470_208), ('rlfn_s', 2, 454_620),
    ('rlfn_ntire', 4, 317_218)])
def test_preset_parameter_counts(preset, scale, expected):
    net = RLFN(upscale=scale, **PRESETS[preset])
    assert sum(p.numel() for p in net.parameters()) == expected


def test_state_dict_keys_match_the_released_names():
    net = RLFN(upscale=4, feature_channels=8, num_blocks=2)
    expected = {'conv_1', 'conv_2', 'upsampler.0'}
    for b in (1, 2):
        expected |= {f'block_{b}.{m}' for m in ('c1_r', 'c2_r', 'c3_r', 'c5')}
        expected |= {f'block_{b}.esa.{m}' for m in ('conv1', 'conv_f', 'conv2', 'conv3', 'conv4')}
    keys = {k.rsplit('.', 1)[0] for k in net.state_dict()}
    assert keys == expected
    assert all(k.endswith(('.weight', '.bias')) for k in net.state_dict())


@pytest.mark.parametrize('scale', [2, 3, 4])
@pytest.mark.parametrize('hw', [(15, 15), (17, 23), (31, 16)])
def test_output_shape(scale, hw):
    net = RLFN(upscale=scale, feature_channels=8, num_blocks=1).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, *hw))
    assert out.shape == (2, 3, hw[0] * scale, hw[1] * scale)


def test_every_parameter_receives_a_gradient():
    net = RLFN(upscale=3, feature_channels=8, mid_channels=6, num_blocks=2)
    net(torch.rand(1, 3, 20, 18)).mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize('hw', [(1, 1), (5, 40), (14, 14), (40, 3)])
def test_small_inputs_are_padded_and_cropped(hw):
    net = RLFN(upscale=2, feature_channels=8, num_blocks=1).eval()
    x = torch.rand(1, 3, *hw)
    with torch.no_grad():
        out = net(x)
    assert out.shape == (1, 3, hw[0] * 2, hw[1] * 2)
    assert torch.isfinite(out).all()


def test_small_inputs_raise_a_clear_error_when_padding_is_off():
    net = RLFN(upscale=2, feature_channels=8, num_blocks=1, pad_small_input=False)
    with pytest.raises(ValueError, match=f'at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}.*got 14x20'):
        net(torch.rand(1, 3, 14, 20))


def test_padding_does_not_change_inputs_that_are_large_enough():
    net = RLFN(upscale=2, feature_channels=8, num_blocks=1).eval()
    x = torch.rand(1, 3, 15, 16)
    with torch.no_grad():
        assert torch.equal(net(x), net.forward_features(x))


@pytest.mark.parametrize('kwargs,match', [({'upscale': 5}, 'upscale'), ({'num_blocks': 0}, 'num_blocks')])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RLFN(**kwargs)


def test_unknown_keyword_fails_loudly():
    with pytest.raises(TypeError):
        RLFN(upscale=4, feature_channel=52)  # typo of feature_channels


def test_import_registers_everything_and_basicsr_works_on_current_torchvision_in_a_fresh_interpreter():
    """One fresh interpreter (the import order is the point): ``import rlfn_arch`` registers the three classes,
    and basicsr's modules that import the removed torchvision ``functional_tensor`` still import after it."""
    code = ('import rlfn_arch\n'
            'from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY\n'
            'from basicsr.data.degradations import rgb_to_grayscale\n'
            'print(ARCH_REGISTRY.get("RLFN").__name__, LOSS_REGISTRY.get("ContrastiveLoss").__name__, '
            'MODEL_REGISTRY.get("WarmStartModel").__name__)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ['RLFN', 'ContrastiveLoss', 'WarmStartModel']
