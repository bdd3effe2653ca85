"""Quantization-aware training: the fake quantization sits where ONNX Runtime's int8 model quantizes, its state
travels with the weights, and the exported int8 model computes what the network trained as."""
import pytest
import torch
from torch.nn import functional as F

from rlfn_arch.archs import RLFN
from rlfn_arch.archs.qat import (
    INT8_CONVS,
    activation_quantizers,
    int8_placement_of,
    int8_preset_of,
    int8_ranges_of,
    int8_state_problem,
    int8_weight_bits_of,
    prepare_qat,
    qparams,
)
from rlfn_arch.utils.checkpoint import split_quant_state

TINY = dict(upscale=2, feature_channels=8, mid_channels=8, num_blocks=2)


def _images(n=6, size=24, seed=0):
    """Smooth images with edges (what SR networks see), (n, 3, size, size) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 5, 5, generator=g)
    return F.interpolate(coarse, size=(size, size), mode='bicubic', align_corners=False).clamp(0, 1)


def _trained(convs='all', seed=0, weight_bits=8, placement='qlinear'):
    """A tiny RLFN prepared for int8, its ranges observed on a few training-mode batches."""
    torch.manual_seed(seed)
    net = prepare_qat(RLFN(**TINY), convs, weight_bits=weight_bits, placement=placement).train()
    with torch.no_grad():
        for x in _images(4).split(2):
            net(x)
    return net.eval()


def test_float_weights_load_strictly_and_activations_stay_float_until_a_training_batch():
    torch.manual_seed(0)
    plain = RLFN(**TINY).eval()
    net = prepare_qat(RLFN(**TINY), 'all').eval()
    net.load_state_dict(plain.state_dict(), strict=True)  # no quantizer state in a float file: accepted
    fq = net.block_1.c2_r.input_fq
    t = torch.randn(1, 8, 6, 6)
    assert torch.equal(fq(t), t)  # nothing observed yet: passes the float tensor through
    with torch.no_grad():
        net.train()(_images(2))
    scale, zero_point = qparams(fq)
    q = fq.eval()(t) / scale
    assert not torch.equal(fq(t), t) and torch.allclose(q, q.round(), atol=1e-4)  # observed: on its int8 grid


def test_a_partial_quantizer_state_is_refused():
    sd = _trained().state_dict()
    sd.pop('conv_1.output_fq.scale')
    with pytest.raises(RuntimeError, match='conv_1.output_fq.scale'):
        prepare_qat(RLFN(**TINY), 'all').load_state_dict(sd, strict=True)


def test_outputs_are_8bit_images():
    """The network's output is quantized to the 8-bit image grid: step 1/255 on [0, 1]."""
    net = _trained()
    with torch.no_grad():
        y = net(_images(1, seed=3) * 1.2)  # PixelShuffle only moves the upsampler's quantized values
    q = y * 255
    assert torch.allclose(q, q.round(), atol=1e-3)
    assert y.min() >= 0 and y.max() <= 1


def test_ranges_move_in_training_mode_only():
    net = _trained()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net(_images(2, seed=5) * 3)  # eval: validation and inference never move the ranges
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with torch.no_grad():
        net.train()(_images(2, seed=5) * 3)
    assert not torch.equal(before['conv_1.output_fq.activation_post_process.max_val'],
                           net.state_dict()['conv_1.output_fq.activation_post_process.max_val'])


def test_ranges_freeze_after_the_calibration_batches_and_the_count_is_state():
    torch.manual_seed(0)
    net = prepare_qat(RLFN(**TINY), 'all', calibration_batches=2).train()
    with torch.no_grad():
        for x in _images(4).split(2):
            net(x)
        frozen = {k: v.clone() for k, v in net.state_dict().items()}
        net(_images(2, seed=9) * 3)  # a third training batch: the weights would train, the ranges stay
    assert all(torch.equal(frozen[k], v) for k, v in net.state_dict().items())
    assert int(net.conv_2.input_fq.batches[0]) == 2 and 'conv_2.input_fq.batches' in frozen


def test_the_quantizer_state_round_trips_through_a_state_dict():
    net = _trained()
    again = prepare_qat(RLFN(**TINY), 'all')
    again.load_state_dict(net.state_dict(), strict=True)
    x = _images(2, seed=7)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), net(x))


@pytest.mark.parametrize('convs', list(INT8_CONVS))
def test_the_int8_set_is_read_back_from_the_state_dict(convs):
    net = _trained(convs)
    assert int8_preset_of(net.state_dict()) == convs
    weights, quant = split_quant_state(net.state_dict())
    assert quant and int8_preset_of(weights) is None
    RLFN(**TINY).load_state_dict(weights, strict=True)  # the float weights are a plain RLFN's


def test_inputs_are_quantized_on_the_way_into_the_conv_unless_an_int8_conv_made_them():
    """A block's input is quantized for c1_r only (the residual addition reads it in float); a tensor an int8
    conv made is its readers' input as it is (no second rounding); the image input has the 8-bit step."""
    net = _trained('all')
    q = activation_quantizers(net)
    assert q['block_2.c1_r'][0] is net.block_2.c1_r.input_fq and q['block_2.c1_r'][2]
    assert q['block_1.c1_r'][0] is net.conv_1.output_fq and not q['block_1.c1_r'][2]
    assert q['block_1.esa.conv1'][0] is net.block_1.c5.output_fq
    assert q['block_1.esa.conv_f'][0] is q['block_1.esa.conv2'][0] is net.block_1.esa.conv1.output_fq
    assert q['conv_2'][0] is net.conv_2.input_fq
    assert qparams(net.conv_1.input_fq) == (pytest.approx(1 / 255), 0)
    body = _trained('body')
    assert activation_quantizers(body)['block_1.c1_r'][0] is body.block_1.c1_r.input_fq  # conv_1 is float there
    with torch.no_grad():
        feat = net.conv_1(_images(1, seed=2))
    assert torch.equal(feat, net.conv_1.output_fq(feat))  # an int8 conv's output is on its grid already


def test_placement_inputs_quantizes_each_int8_convs_own_input_and_leaves_its_output_float():
    """``placement='inputs'``: every int8 conv reads its own 8-bit copy of its input (the two ESA convs reading one
    tensor each their own), and writes float; ``qlinear`` writes 8 bits. The state dict says which, and a network
    of the other placement is told so."""
    net, qlinear = _trained('all', placement='inputs'), _trained('all')
    q = activation_quantizers(net)
    assert all(own and fq_in is not None and fq_out is None for fq_in, fq_out, own in q.values())
    assert q['block_1.esa.conv2'][0] is not q['block_1.esa.conv_f'][0]
    assert qparams(net.conv_1.input_fq) == (pytest.approx(1 / 255), 0)
    x = _images(1, seed=2)
    with torch.no_grad():
        assert net.conv_1(x).unique().numel() > 256  # float
        assert qlinear.conv_1(x).unique().numel() <= 256  # on its uint8 grid
        assert net.block_1.c1_r.input_fq(net.conv_1(x)).unique().numel() <= 256  # what c1_r reads
        assert net.upsampler[0](net.conv_1(x)).unique().numel() > 256  # even the image conv writes float
    assert int8_placement_of(net.state_dict()) == 'inputs' and int8_placement_of(qlinear.state_dict()) == 'qlinear'
    assert int8_placement_of(RLFN(**TINY).state_dict()) is None
    settings = {'convs': 'all', 'weight_bits': 8, 'ranges': 'calibrated', 'placement': 'qlinear'}
    assert 'placement inputs; the stage has placement qlinear' in int8_state_problem(net.state_dict(), settings)
    assert int8_state_problem(qlinear.state_dict(), settings) is None
    with pytest.raises(RuntimeError, match='Unexpected key'):
        prepare_qat(RLFN(**TINY), 'all').load_state_dict(net.state_dict())
    with pytest.raises(ValueError, match="int8 placement 'outputs': expected one of qlinear, inputs"):
        prepare_qat(RLFN(**TINY), 'all', placement='outputs')


def test_an_inputs_placement_model_computes_what_it_trained_as_in_openvino_and_onnx_runtime(tmp_path):
    """The export of ``placement='inputs'``: no QuantizeLinear after an int8 conv (:func:`int8_placement_onnx` reads
    it back), OpenVINO and ONNX Runtime both compute the fake-quantized network; ONNX Runtime is warned against."""
    pytest.importorskip('onnxruntime')
    pytest.importorskip('openvino')
    import warnings

    from rlfn_arch.deploy.onnx import OnnxRLFN, int8_placement_onnx, resolve_runtime
    from rlfn_arch.deploy.quantize import quantize_checkpoint
    net = _trained('all', placement='inputs')
    path = str(quantize_checkpoint(net.state_dict(), str(tmp_path / 'int8.onnx')))
    qlinear = str(quantize_checkpoint(_trained('all').state_dict(), str(tmp_path / 'q.onnx')))
    assert int8_placement_onnx(path) == 'inputs' and int8_placement_onnx(qlinear) == 'qlinear'
    assert resolve_runtime('auto', path) == 'openvino' and resolve_runtime('auto', qlinear) == 'onnxruntime'
    assert resolve_runtime('onnxruntime', path) == 'onnxruntime'  # asked for: kept (and warned, below)
    x = _images(2, size=32, seed=11)
    with torch.no_grad():
        ref = net(x)
    for runtime in ('openvino', 'onnxruntime'):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            model = OnnxRLFN(path, runtime=runtime)
        diff = (model(x) - ref).abs() * 255
        assert float(diff.mean()) < 0.5 and float(diff.max()) <= 6, runtime
        said = [str(w.message) for w in caught if 'write float' in str(w.message)]
        assert bool(said) == (runtime == 'onnxruntime') and (not said or '--runtime openvino' in said[0])
        assert model.metadata.get('int8_placement') == 'inputs'
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        OnnxRLFN(qlinear)
    assert not [w for w in caught if 'write float' in str(w.message)]


def test_rfdn_layouts_are_refused_with_the_reason():
    with pytest.raises(ValueError, match='block rlfb'):
        prepare_qat(RLFN(**TINY, block='rfdb', esa='full'), 'all')


def test_the_int8_onnx_model_computes_what_the_network_trained_as(tmp_path):
    """ONNX Runtime's int8 kernels on the exported model against the fake-quantized network: the same
    function up to integer rounding (no systematic difference)."""
    pytest.importorskip('onnxruntime')
    from rlfn_arch.deploy.onnx import OnnxRLFN
    from rlfn_arch.deploy.quantize import quantize_checkpoint
    net = _trained('all')
    path = quantize_checkpoint(net.state_dict(), str(tmp_path / 'int8.onnx'))
    x = _images(2, size=32, seed=11)
    with torch.no_grad():
        ref = net(x)
    got = OnnxRLFN(str(path))(x)
    diff = (got - ref).abs() * 255  # in grey levels of the 8-bit output
    assert float(diff.mean()) < 0.5 and float(diff.max()) <= 6
    import onnx
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {'QuantizeLinear', 'DequantizeLinear'} <= ops
    weights = [i for i in onnx.load(str(path)).graph.initializer
               if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4]
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(weights) == len(convs)  # every conv's weight is int8


def _learned(steps=5, seed=0):
    """A tiny RLFN with learned ranges: calibrated on one batch, then ``steps`` Adam steps of weights and ranges."""
    torch.manual_seed(seed)
    net = prepare_qat(RLFN(**TINY), 'all', calibration_batches=1, ranges='learned').train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, target = _images(2), _images(2, seed=4)
    for _ in range(steps + 1):  # the first batch calibrates
        loss = (net(x) - F.interpolate(target, scale_factor=2, mode='bicubic')).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def test_learned_ranges_start_at_the_calibration_move_by_gradient_and_are_read_back():
    """``ranges='learned'``: the range the calibration found is where training starts; gradient steps move the
    scale and the zero point from there; the state dict says so and round-trips; the export reads the range the
    last step made (no forward ran since it)."""
    net = _learned()
    fq = net.block_1.c2_r.input_fq
    moved = [m for m in net.modules() if getattr(m, 'learned', False) and float(m.range_scale.abs()) > 0]
    assert len(moved) >= len(net.int8_convs)  # the ranges train, not one of them alone
    scale, zero_point = qparams(fq)
    assert scale == pytest.approx(float(fq.calibrated_scale) * (1 + 100 * float(fq.range_scale)), rel=1e-6)
    assert scale != pytest.approx(float(fq.calibrated_scale), rel=1e-6)
    sd = net.state_dict()
    assert int8_ranges_of(sd) == 'learned' and int8_ranges_of(_trained().state_dict()) == 'calibrated'
    assert int8_ranges_of(RLFN(**TINY).state_dict()) is None
    assert float(sd['block_1.c2_r.input_fq.scale']) == pytest.approx(scale, rel=1e-6)  # the buffers follow
    again = prepare_qat(RLFN(**TINY), 'all', ranges='learned')
    again.load_state_dict(sd, strict=True)
    x = _images(2, seed=7)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), net(x))
    with pytest.raises(ValueError, match="activation ranges 'trained': expected one of calibrated, learned"):
        prepare_qat(RLFN(**TINY), 'all', ranges='trained')


def test_float_weights_loaded_into_learned_ranges_forget_them():
    net = _learned()
    net.load_state_dict(RLFN(**TINY).state_dict(), strict=True)
    fq = net.block_1.c2_r.input_fq
    assert int(fq.batches[0]) == 0 and float(fq.range_scale) == 0 and not int(fq.fake_quant_enabled[0])


def test_the_int8_onnx_model_computes_what_the_network_with_learned_ranges_trained_as(tmp_path):
    pytest.importorskip('onnxruntime')
    from rlfn_arch.deploy.onnx import OnnxRLFN
    from rlfn_arch.deploy.quantize import quantize_checkpoint
    net = _learned()
    path = quantize_checkpoint(net.state_dict(), str(tmp_path / 'int8.onnx'))
    x = _images(2, size=32, seed=11)
    with torch.no_grad():
        ref = net(x)
    diff = (OnnxRLFN(str(path))(x) - ref).abs() * 255
    assert float(diff.mean()) < 0.5 and float(diff.max()) <= 6


@pytest.mark.parametrize('bits,qmax', [(8, 127), (7, 64)])
def test_weights_train_on_the_grid_of_their_bits_and_the_bits_are_read_back(bits, qmax):
    """Each conv's fake-quantized weight is k * max|w| / qmax per output channel, |k| <= qmax, the extreme reached;
    the state dict says which bits it trained with (None for float weights)."""
    net = _trained(weight_bits=bits)
    for m in net.modules():
        if hasattr(m, 'weight_fake_quant'):
            w = m.weight.detach()
            step = w.abs().flatten(1).amax(1).clamp_min(1e-12) / qmax
            k = m.weight_fake_quant(w) / step[:, None, None, None]
            assert torch.allclose(k, k.round(), atol=1e-3) and int(k.abs().round().max()) == qmax
    assert int8_weight_bits_of(net.state_dict()) == bits
    assert int8_weight_bits_of(RLFN(**TINY).state_dict()) is None
    with pytest.raises(ValueError, match='weight bits 6'):
        prepare_qat(RLFN(**TINY), 'all', weight_bits=6)


def test_a_7bit_network_exports_7bit_weights_that_compute_what_it_trained_as(tmp_path):
    """7-bit weights (for CPUs without int8 dot products) reach the ONNX model as int8 in [-64, 64], and ONNX Runtime
    computes what the fake-quantized network computes; the file says which bits it holds."""
    pytest.importorskip('onnxruntime')
    import onnx
    from onnx import numpy_helper

    from rlfn_arch.deploy.onnx import OnnxRLFN
    from rlfn_arch.deploy.quantize import int8_weight_bits_onnx, quantize_checkpoint
    net = _trained('all', weight_bits=7)
    path = quantize_checkpoint(net.state_dict(), str(tmp_path / 'int8.onnx'))
    weights = [numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer
               if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4]
    assert weights and all(abs(w.astype(int)).max() == 64 for w in weights)
    assert int8_weight_bits_onnx(str(path)) == 7
    x = _images(2, size=32, seed=11)
    with torch.no_grad():
        ref = net(x)
    diff = (OnnxRLFN(str(path))(x) - ref).abs() * 255
    assert float(diff.mean()) < 0.5 and float(diff.max()) <= 6
    eight = quantize_checkpoint(_trained('all').state_dict(), str(tmp_path / 'int8_8bit.onnx'))
    assert int8_weight_bits_onnx(str(eight)) == 8


def test_8bit_int8_weights_on_a_cpu_without_int8_dot_products_warn_and_7bit_ones_do_not(tmp_path, monkeypatch):
    """An AVX2-only CPU adds pairs of uint8 x int8 products in 16 bits: a model with 8-bit weights is loaded with a
    warning that says why and what to use; a 7-bit model, or a VNNI CPU, loads silently."""
    pytest.importorskip('onnxruntime')
    import warnings

    from rlfn_arch.deploy.onnx import OnnxRLFN
    from rlfn_arch.deploy.quantize import quantize_checkpoint
    from rlfn_arch.utils import precision
    eight = str(quantize_checkpoint(_trained('all').state_dict(), str(tmp_path / 'w8.onnx')))
    seven = str(quantize_checkpoint(_trained('all', weight_bits=7).state_dict(), str(tmp_path / 'w7.onnx')))
    monkeypatch.delenv('ONEDNN_MAX_CPU_ISA', raising=False)
    for flags, path, warns in (('sse4_1 avx avx2 fma', eight, True), ('sse4_1 avx avx2 fma', seven, False),
                               ('sse4_1 avx avx2 avx512f avx512_vnni', eight, False)):
        monkeypatch.setattr(precision, 'cpuinfo_field', lambda name, f=flags: f)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            OnnxRLFN(path)
        said = [str(w.message) for w in caught if 'dot-product' in str(w.message)]
        assert bool(said) == warns, (flags, path, said)
        if warns:
            assert path in said[0] and 'weight_bits 7' in said[0]


def test_a_network_that_never_trained_in_int8_cannot_be_exported(tmp_path):
    pytest.importorskip('onnxruntime')
    from rlfn_arch.deploy.quantize import quantize_checkpoint
    net = prepare_qat(RLFN(**TINY), 'all')
    with pytest.raises(ValueError, match='never observed'):
        quantize_checkpoint(net.state_dict(), str(tmp_path / 'int8.onnx'))
    assert not (tmp_path / 'int8.onnx').exists()


def test_official_range_weights_are_detected_and_folded_into_a_prepared_network():
    """The [0, 255] range is decided by the float weights: the prepared network's 8-bit input quantizer (which
    clips a 255x probe) must not decide it."""
    from helpers import shared_path

    from rlfn_arch.archs.rlfn_weights import adopt_weights, convert, detect_config, normalize_keys
    from rlfn_arch.utils.checkpoint import safe_load, select_weights
    path = shared_path('weights', 'rlfn_s_x4.pth')
    raw = normalize_keys(select_weights(safe_load(path), path)[0])
    net = prepare_qat(RLFN(**detect_config(raw)), 'all')
    sd, factor = adopt_weights(raw, net, path)
    expected = convert(path)[0]
    assert factor == 255 and all(torch.equal(sd[k], expected[k]) for k in expected)
    assert net.training  # the caller's mode is kept
