"""Post-training int8 calibrated by the int8 stage's own quantizers (`quantize`'s default for RLFN's layout)."""
import os

import cv2
import numpy as np
import onnx
import pytest
import torch
from helpers import shared_path

from rlfn_arch.archs import RLFN
from rlfn_arch.archs.qat import ActivationFakeQuant, activation_quantizers
from rlfn_arch.deploy.onnx import OnnxRLFN
from rlfn_arch.deploy.quantize import calibration_patches, quantize_calibrated, stage_calibrated
from rlfn_arch.quantize import main as quantize_main


def _smooth(n, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return [cv2.resize(rng.random((6, 6, 3)).astype(np.float32), (size, size)).transpose(2, 0, 1) for _ in range(n)]


def _tiny(**layout):
    torch.manual_seed(0)
    return RLFN(upscale=2, feature_channels=8, mid_channels=8, num_blocks=2, **layout).eval()


def _metadata(path):
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_stage_calibration_observes_every_patch_and_leaves_the_network_alone():
    net = _tiny()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    q = stage_calibrated(net, _smooth(3))
    assert not hasattr(net, 'int8_convs') and all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    assert q.int8_preset == 'block_3x3' and not q.training
    observed = [fq for pair in activation_quantizers(q).values() for fq in pair[:2]
                if isinstance(fq, ActivationFakeQuant)]
    assert observed and all(int(fq.batches[0]) == 3 and int(fq.fake_quant_enabled[0]) == 1 for fq in observed)
    x = torch.from_numpy(_smooth(1, seed=5)[0])[None]
    with torch.no_grad():
        assert not torch.equal(q(x), net(x))  # it quantizes: the calibrated ranges are in use


def test_the_int8_model_computes_what_the_calibrated_network_computes(tmp_path):
    net, patches = _tiny(), _smooth(4)
    path = quantize_calibrated(net, str(tmp_path / 'ptq.onnx'), patches)  # defaults: block_3x3, stage
    x = torch.from_numpy(_smooth(1, seed=7)[0])[None]
    with torch.no_grad():
        ref = stage_calibrated(net, patches)(x)
    got = OnnxRLFN(path)(x)
    assert float((got - ref).abs().mean() * 255) < 0.5  # grey levels: the export writes the calibrated scales


def test_quantize_defaults_follow_the_layout_and_stage_calibration_is_refused_for_other_layouts(tmp_path, capsys):
    calib = tmp_path / 'calib'
    calib.mkdir()
    for i, p in enumerate(_smooth(3, size=40)):
        cv2.imwrite(str(calib / f'{i}.png'), (p.transpose(1, 2, 0) * 255).round().astype(np.uint8))
    rlfn, rfdn = tmp_path / 'rlfn.pth', tmp_path / 'rfdn.pth'
    torch.save({'params': _tiny().state_dict()}, rlfn)
    torch.save({'params': _tiny(block='rfdb', esa='full', fuse='concat').state_dict()}, rfdn)
    common = ['--calib', str(calib), '--num_patches', '3']
    assert quantize_main(['--model_path', str(rlfn), '--output', str(tmp_path / 'a.onnx')] + common) == 0
    assert quantize_main(['--model_path', str(rfdn), '--output', str(tmp_path / 'b.onnx')] + common) == 0
    a, b = _metadata(tmp_path / 'a.onnx'), _metadata(tmp_path / 'b.onnx')
    assert a['int8_convs'] == 'block_3x3' and 'stage calibration' in a['int8']
    assert b['int8_convs'] == 'blocks' and 'entropy calibration' in b['int8']  # the stage's quantizers: RLFN only
    # a layout the stage does not know, asked for stage calibration: refused, naming why, nothing written
    assert quantize_main(['--model_path', str(rfdn), '--output', str(tmp_path / 'c.onnx'),
                          '--calibration', 'stage'] + common) == 2
    assert 'calibrate this layout with entropy' in capsys.readouterr().err
    assert not (tmp_path / 'c.onnx').exists()


def test_default_post_training_int8_of_the_official_rlfn_s_x4_stays_within_0_1_db_on_set5(tmp_path):
    from basicsr.metrics import calculate_psnr
    weights = shared_path('weights', 'rlfn_s_x4.pth')
    set5, set14_lr = shared_path('datasets', 'Set5'), shared_path('datasets', 'Set14', 'LR_bicubic', 'X4')
    from rlfn_arch.archs.rlfn_weights import convert, detect_config
    sd = convert(weights)[0]
    net = RLFN(**detect_config(sd)).eval()
    net.load_state_dict(sd)
    int8 = OnnxRLFN(quantize_calibrated(net, str(tmp_path / 'q.onnx'), calibration_patches(set14_lr, n=16)))
    gaps = []
    for name in sorted(os.listdir(os.path.join(set5, 'HR'))):
        hr = cv2.imread(os.path.join(set5, 'HR', name))
        lr = cv2.imread(os.path.join(set5, 'LR_bicubic', 'X4', name.replace('.png', 'x4.png')))
        x = torch.from_numpy(np.ascontiguousarray(lr[:, :, ::-1].transpose(2, 0, 1))).float()[None] / 255
        with torch.no_grad():
            outs = [net(x), int8(x)]
        psnr = [calculate_psnr((o[0].clamp(0, 1).numpy().transpose(1, 2, 0)[:, :, ::-1] * 255).round(), hr,
                               crop_border=4, test_y_channel=True) for o in outs]
        gaps.append(psnr[0] - psnr[1])
    assert np.mean(gaps) < 0.10, gaps  # measured 0.067 with 32 sample patches (docs/int8.md)


@pytest.mark.parametrize('method', ['entropy', 'stage'])
def test_either_calibration_puts_exactly_the_default_convs_in_int8(tmp_path, method):
    path = quantize_calibrated(_tiny(), str(tmp_path / f'{method}.onnx'), _smooth(2), method=method)
    graph = onnx.load(path).graph
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    int8_weights = [n for n in graph.node if n.op_type == 'Conv' and made_by.get(n.input[1]) == 'DequantizeLinear']
    assert len(int8_weights) == 6  # block_3x3: c1_r, c2_r, c3_r of both blocks, nothing else
