"""Mixed precision and channels_last: selection from the hardware, training in bf16 / fp16 with loss
scaling, fp32 checkpoints, resume of the scaler, validation precision, and low-precision inference."""
import copy
import os
import re
import warnings

import cv2
import numpy as np
import pytest
import torch
import yaml
from helpers import make_pairs, run_module, tiny_options

from rlfn_arch.archs.rlfn_arch import RLFN
from rlfn_arch.utils import precision as P
from rlfn_arch.utils.checkpoint import safe_load


@pytest.fixture
def onednn_bf16(monkeypatch):
    """Simulate oneDNN's answer to 'does this CPU run bf16 natively?'."""
    def set_answer(value):
        monkeypatch.setattr(torch.ops.mkldnn, '_is_mkldnn_bf16_supported', lambda: value)
        P._warned.clear()
    yield set_answer
    P._warned.clear()


def test_auto_picks_bf16_only_where_the_cpu_reports_native_bf16(onednn_bf16):
    onednn_bf16(True)
    assert P.resolve_precision('auto', 'cpu') == 'bf16'
    assert P.resolve_precision(None, 'cpu') == 'bf16'
    onednn_bf16(False)
    assert P.resolve_precision('auto', 'cpu') == 'fp32'
    assert P.resolve_precision('fp32', 'cpu') == 'fp32'
    with pytest.raises(ValueError, match='expected one of'):
        P.resolve_precision('int8', 'cpu')


def test_explicit_bf16_on_a_cpu_without_native_bf16_runs_but_warns_once(onednn_bf16):
    onednn_bf16(False)
    with pytest.warns(RuntimeWarning, match='no native bf16'):
        assert P.resolve_precision('bf16', 'cpu') == 'bf16'
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        P.resolve_precision('bf16', 'cpu')  # once only
    onednn_bf16(True)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert P.resolve_precision('bf16', 'cpu') == 'bf16'  # native: no warning
    with pytest.warns(RuntimeWarning, match='fp16 is native on CUDA'):
        P.resolve_precision('fp16', 'cpu')


def _model(tmp_path, precision, contrastive=False, loss_weight=1.0, max_nonfinite=10, val_precision=None):
    from basicsr.models import build_model
    train = {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 2e-3, 'betas': [0.9, 0.99]},
             'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5}, 'total_iter': 100,
             'warmup_iter': -1, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': loss_weight, 'reduction': 'mean'},
             'precision': precision, 'max_nonfinite': max_nonfinite}
    if contrastive:
        train['contrastive_opt'] = {'type': 'ContrastiveLoss', 'loss_weight': 0.01}
    opt = {'name': 'p', 'model_type': 'WarmStartModel', 'scale': 2, 'num_gpu': 0, 'is_train': True, 'dist': False,
           'rank': 0, 'world_size': 1, 'network_g': {'type': 'RLFN', 'upscale': 2, 'feature_channels': 8,
                                                     'mid_channels': 8, 'num_blocks': 1},
           'path': {'pretrain_network_g': None, 'strict_load_g': True, 'models': str(tmp_path),
                    'training_states': str(tmp_path)},
           'train': train, 'val': {'precision': val_precision or 'fp32'}}
    torch.manual_seed(0)
    return build_model(opt)


def _batch(n=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(n, 3, size * 2, size * 2, generator=g)
    return {'lq': torch.nn.functional.avg_pool2d(gt, 2), 'gt': gt}


@pytest.mark.filterwarnings('ignore::RuntimeWarning')
def test_a_short_bf16_run_lowers_the_loss_and_saves_fp32_weights(tmp_path):
    model = _model(tmp_path, 'bf16', contrastive=True)
    assert model.precision == 'bf16' and model.channels_last
    data, losses = _batch(), []
    for it in range(1, 31):
        model.feed_data(data)
        model.optimize_parameters(it)
        losses.append(model.log_dict['l_pix'])
    assert model.output.dtype == torch.bfloat16  # the forward pass really ran in bf16
    assert all(p.dtype == torch.float32 for p in model.net_g.parameters())  # master weights stay fp32
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    model.save_network(model.net_g, 'net_g', 30)
    sd = safe_load(tmp_path / 'net_g_30.pth')['params']
    assert all(v.dtype == torch.float32 for v in sd.values())
    net = RLFN(upscale=2, feature_channels=8, mid_channels=8, num_blocks=1)
    net.load_state_dict(sd, strict=True)  # an fp32 network takes them as they are


def test_fp16_scaler_state_is_saved_and_restored_exactly(tmp_path):
    with pytest.warns(RuntimeWarning):
        P._warned.clear()
        model = _model(tmp_path, 'fp16')
    assert model.scaler is not None and model.scaler.is_enabled()
    model.scaler = torch.amp.GradScaler('cpu', init_scale=2.0**24, growth_interval=2)
    for it in range(1, 6):
        model.feed_data(_batch(seed=it))
        model.optimize_parameters(it)
    model.save_training_state(0, 5)
    state = safe_load(tmp_path / '5.state')
    saved = model.scaler.state_dict()
    assert state['scaler'] == saved
    assert saved != torch.amp.GradScaler('cpu', init_scale=2.0**24, growth_interval=2).state_dict()  # it moved
    fresh = _model(tmp_path, 'fp16')
    assert fresh.scaler.state_dict() != saved
    fresh.resume_training(state)
    assert fresh.scaler.state_dict() == saved


def test_scaler_skipped_steps_do_not_count_but_a_nonfinite_loss_does(tmp_path):
    P._warned.add(('fp16', 'cpu'))
    model = _model(tmp_path, 'fp16', max_nonfinite=2)
    # a loss scale that overflows fp16 gradients: the scaler skips steps and backs off, as designed
    model.scaler = torch.amp.GradScaler('cpu', init_scale=2.0**100, backoff_factor=0.5**10)
    before = copy.deepcopy(model.net_g.state_dict())
    for it in range(1, 5):
        model.feed_data(_batch(seed=it))
        model.optimize_parameters(it)  # would raise NonFiniteLossError if skips counted
    assert getattr(model, 'scaler_skips', 0) >= 2 and model.nonfinite_count == 0
    assert model.scaler.get_scale() < 2.0**100
    for it in range(5, 40):
        model.feed_data(_batch(seed=it))
        model.optimize_parameters(it)
    after = model.net_g.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trains once the scale fits
    from rlfn_arch.models.warmstart_model import NonFiniteLossError
    bad = _model(tmp_path, 'fp16', loss_weight=float('nan'), max_nonfinite=2)
    bad.feed_data(_batch())
    bad.optimize_parameters(1)
    with pytest.raises(NonFiniteLossError):
        bad.optimize_parameters(2)


@pytest.mark.filterwarnings('ignore::RuntimeWarning')
def test_validation_runs_in_fp32_by_default_whatever_the_training_precision(tmp_path):
    model = _model(tmp_path, 'bf16')
    for it in range(1, 4):
        model.feed_data(_batch(seed=it))
        model.optimize_parameters(it)
    data = _batch(n=1, size=20, seed=9)
    model.feed_data(data)
    model.test()
    net = RLFN(upscale=2, feature_channels=8, mid_channels=8, num_blocks=1).eval()
    net.load_state_dict(model.net_g.state_dict())
    with torch.no_grad():
        ref = net(data['lq'])
    assert model.output.dtype == torch.float32 and torch.allclose(model.output, ref, atol=1e-6)
    low = _model(tmp_path, 'bf16', val_precision='train')
    low.net_g.load_state_dict(model.net_g.state_dict())
    low.feed_data(data)
    low.test()
    assert low.output.dtype == torch.float32 and not torch.equal(low.output, ref)
    assert (low.output - ref).abs().mean() < 1e-2


def test_precision_options_are_checked(tmp_path):
    yml, _ = tiny_options(tmp_path, stage_iters=(1, 1, 1))
    opt = yaml.safe_load(yml.read_text())
    opt['train']['precision'] = 'half'
    opt['train']['channels_last'] = 'yes'
    opt['val']['precision'] = 'int8'
    yml.write_text(yaml.safe_dump(opt))
    proc = run_module('rlfn_arch.train', '-opt', yml, check=False)
    assert proc.returncode == 2
    for key in ('train.precision', 'train.channels_last', 'val.precision'):
        assert key in proc.stderr


@pytest.mark.filterwarnings('ignore::RuntimeWarning')
def test_bf16_inference_through_infer_and_test_is_close_to_fp32(tmp_path):
    torch.manual_seed(0)
    net = RLFN(upscale=4, feature_channels=16, mid_channels=16, num_blocks=2)
    torch.save({'params': net.state_dict()}, tmp_path / 'net.pth')
    hr, lr = make_pairs(str(tmp_path / 'set'), n=2, size=(96, 80), scale=4)
    outs = {}
    for prec in ('fp32', 'bf16'):
        proc = run_module('rlfn_arch.infer', '-i', lr, '-o', tmp_path / prec, '--model_path', tmp_path / 'net.pth',
                          '--precision', prec)
        assert f'({prec})' in proc.stdout
        outs[prec] = [cv2.imread(str(tmp_path / prec / f)).astype(int) for f in sorted(os.listdir(tmp_path / prec))]
    # documented tolerance: bf16 output within 2 grey levels on average of fp32 (8-bit images)
    for a, b in zip(outs['fp32'], outs['bf16']):
        assert np.abs(a - b).mean() < 2.0
    test_opt = {'name': 'prec_test', 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 0,
                'datasets': {'test_1': {'name': 'tiny', 'type': 'PairedImageDataset', 'dataroot_gt': hr,
                                        'dataroot_lq': lr, 'filename_tmpl': '{}x4', 'io_backend': {'type': 'disk'}}},
                'network_g': {'type': 'RLFN', 'upscale': 4, 'feature_channels': 16, 'mid_channels': 16,
                              'num_blocks': 2},
                'path': {'root': str(tmp_path), 'pretrain_network_g': str(tmp_path / 'net.pth'),
                         'strict_load_g': True},
                'val': {'save_img': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4,
                                                                'test_y_channel': True}}}}
    (tmp_path / 'test.yml').write_text(yaml.safe_dump(test_opt))
    psnr = {}
    for prec in ('fp32', 'bf16'):
        proc = run_module('rlfn_arch.test', '-opt', tmp_path / 'test.yml', '--precision', prec)
        psnr[prec] = float(re.findall(r'psnr: ([\d.]+)', proc.stdout)[-1])
    assert abs(psnr['fp32'] - psnr['bf16']) < 0.05, psnr
