import contextlib
import io
import subprocess
import sys

import pytest
import torch
from torch.nn import functional as F

from rlfn_arch.losses import ContrastiveLoss

from basicsr.losses import build_loss


def _inputs(n=2, c=3, h=8, scale=2, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    lq = torch.rand(n, c, h, h, generator=g, dtype=dtype)
    hr = torch.rand(n, c, h * scale, h * scale, generator=g, dtype=dtype)
    sr = torch.rand(n, c, h * scale, h * scale, generator=g, dtype=dtype)
    return sr, hr, lq


def test_value_equals_the_formula_computed_independently():
    loss = ContrastiveLoss(loss_weight=0.5, layers=['tanh1', 'conv2'], layer_weights=[0.25, 1.0], eps=1e-3,
                           num_features=5, seed=3)
    sr, hr, lq = _inputs()
    ext = loss.extractor
    neg = F.interpolate(lq, scale_factor=2, mode='bicubic', align_corners=False).clamp(0, 1)

    def feats(x):
        t = torch.tanh(F.conv2d(x, ext.conv1.weight, ext.conv1.bias, padding=1))
        return [t, F.conv2d(t, ext.conv2.weight, ext.conv2.bias, padding=1)]

    expected = 0
    for w, a, p, n in zip([0.25, 1.0], feats(sr), feats(hr), feats(neg)):
        expected += w * (a - p).abs().mean() / ((a - n).abs().mean() + 1e-3)
    assert torch.allclose(loss(sr, hr, lq), 0.5 * expected, rtol=1e-5, atol=1e-7)


def test_built_from_options_through_basicsr():
    loss = build_loss({'type': 'ContrastiveLoss', 'loss_weight': 0.1, 'num_features': 4})
    assert isinstance(loss, ContrastiveLoss) and loss.loss_weight == 0.1


def test_sr_equal_hr_gives_zero_and_moving_towards_hr_lowers_the_loss():
    loss = ContrastiveLoss()
    sr, hr, lq = _inputs()
    assert loss(hr.clone(), hr, lq).item() == 0
    values = [loss(hr + t * (sr - hr), hr, lq).item() for t in (1.0, 0.5, 0.1)]
    assert values[0] > values[1] > values[2] > 0


def test_gradcheck_float64():
    loss = ContrastiveLoss(num_features=3).double()
    sr, hr, lq = _inputs(n=1, h=4, dtype=torch.float64)
    sr.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: loss(s, hr, lq), (sr, ), eps=1e-6, atol=1e-5)


def test_only_sr_receives_gradient_and_the_extractor_is_frozen():
    loss = ContrastiveLoss()
    sr, hr, lq = _inputs()
    for t in (sr, hr, lq):
        t.requires_grad_(True)
    loss(sr, hr, lq).backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert hr.grad is None and lq.grad is None
    assert not any(p.requires_grad for p in loss.parameters())
    assert all(p.grad is None for p in loss.parameters())


def test_moves_with_device_and_dtype():
    loss = ContrastiveLoss().to(torch.float64)
    sr, hr, lq = _inputs(dtype=torch.float64)
    assert loss(sr, hr, lq).dtype == torch.float64


_PRINT = ('import torch, rlfn_arch; from rlfn_arch.losses import ContrastiveLoss; torch.manual_seed({gseed});'
          'l = ContrastiveLoss(seed={seed}); g = torch.Generator().manual_seed(1);'
          'x = [torch.rand(1, 3, 16, 16, generator=g) for _ in range(2)] + [torch.rand(1, 3, 8, 8, generator=g)];'
          'print(repr(torch.cat([p.flatten() for p in l.parameters()]).tolist())); print(repr(l(*x).item()))')


def _here(seed, gseed):
    """What ``_PRINT`` prints, computed in this (long-running, RNG-consumed) test process."""
    out = io.StringIO()
    with torch.random.fork_rng(), contextlib.redirect_stdout(out):
        exec(_PRINT.format(seed=seed, gseed=gseed), {})
    return out.getvalue()


def test_extractor_is_a_pure_function_of_its_seed_across_processes():
    fresh = subprocess.run([sys.executable, '-c', _PRINT.format(seed=7, gseed=12345)], capture_output=True,
                           text=True, check=True).stdout  # another process, another global seed
    assert _here(7, 0) == fresh
    assert _here(8, 0).splitlines()[0] != fresh.splitlines()[0]  # the loss seed decides


@pytest.mark.parametrize('kwargs,shapes,match', [
    ({}, ((1, 3, 16, 16), (1, 3, 16, 12), (1, 3, 8, 8)), 'sr .* and hr .* differ'),
    ({'scale': 4}, ((1, 3, 16, 16), (1, 3, 16, 16), (1, 3, 8, 8)), 'option scale=4'),
    ({}, ((1, 3, 16, 16), (1, 3, 16, 16), (1, 3, 5, 5)), 'times the scale'),
    ({}, ((1, 1, 16, 16), (1, 1, 16, 16), (1, 1, 8, 8)), 'in_channels=3'),
])
def test_bad_inputs_name_the_option(kwargs, shapes, match):
    loss = ContrastiveLoss(**kwargs)
    with pytest.raises(ValueError, match=match):
        loss(*[torch.rand(*s) for s in shapes])


@pytest.mark.parametrize('kwargs,match', [
    ({'extractor': 'vgg16'}, 'extractor=.vgg16. unknown'),
    ({'layers': ['conv3']}, r"layers \['conv3'\] unknown"),
    ({'layers': ['conv1'], 'layer_weights': [1, 2]}, 'layer_weights has 2 entries'),
    ({'extractor': 'vgg19', 'layers': ['relu9_1'], 'vgg_weights': 'x'}, 'relu9_1'),
    ({'reduction': 'sum'}, 'reduction'),
])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ContrastiveLoss(**kwargs)


def test_vgg19_without_local_weights_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match='vgg_weights=.*not found.*nothing is downloaded'):
        ContrastiveLoss(extractor='vgg19', vgg_weights=str(tmp_path / 'missing.pth'))


def test_vgg19_with_local_weights(tmp_path):
    from torchvision.models import vgg19
    path = tmp_path / 'vgg19.pth'
    torch.save(vgg19(weights=None).state_dict(), path)
    loss = ContrastiveLoss(extractor='vgg19', vgg_weights=str(path), layers=['relu1_1', 'conv2_1'])
    sr, hr, lq = _inputs(n=1, h=8)
    assert loss(sr, hr, lq).item() > 0
