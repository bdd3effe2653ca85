"""An int8 (quantization-aware) stage from an option file: it starts from the previous stage's float weights,
trains with fake quantization, and the run ends with the int8 ONNX model, which the tools run."""
import json

import pytest
import torch
from helpers import edit, run_module, tiny_options, tiny_test_options, train_main

from rlfn_arch.archs import RLFN
from rlfn_arch.archs.qat import prepare_qat
from rlfn_arch.utils.checkpoint import read_safetensors, safe_load, split_quant_state

pytest.importorskip('onnxruntime')


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp('int8')
    yml, exp = tiny_options(root, stage_iters=(3, 1, 4), save_freq=2)
    edit(yml, lambda o: o['stages'][2]['train'].update(qat={'convs': 'all'}))
    assert train_main('-opt', yml) == 0
    return root, yml, exp


def test_the_stage_starts_from_the_previous_stage_and_trains_every_conv_in_int8(run):
    _, _, exp = run
    init = safe_load(exp / 's3' / 'models' / 'net_g_init.pth')['params']
    before = safe_load(exp / 's2' / 'models' / 'net_g_latest.pth')['params']
    weights, quant = split_quant_state(init)
    assert weights.keys() == before.keys() and all(torch.equal(weights[k], before[k]) for k in before)
    final = safe_load(exp / 'net_g_final.pth')['params']
    assert split_quant_state(final)[1]  # the quantizers' state travels with the weights
    float_only = read_safetensors(str(exp / 'net_g_final.safetensors'))[0]
    assert float_only.keys() == before.keys()  # the safetensors file: the float weights, a plain RLFN


def test_the_run_ends_with_the_int8_model_it_validated(run):
    from rlfn_arch.deploy.onnx import OnnxRLFN
    root, _, exp = run
    final = safe_load(exp / 'net_g_final.pth')['params']
    net = prepare_qat(RLFN(upscale=4, feature_channels=8, mid_channels=8, num_blocks=1), 'all')
    net.load_state_dict(final, strict=True)
    x = torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        ref = net.eval()(x)
    got = OnnxRLFN(str(exp / 'net_g_final_int8.onnx'))(x)
    assert float((got - ref).abs().mean() * 255) < 0.5  # grey levels
    records = json.loads((exp / 'stages.json').read_text())
    assert records['stages']['s3']['status'] == 'done'


def test_quantize_reads_the_trained_scales_and_test_runs_the_int8_model(run, tmp_path):
    root, _, exp = run
    out = tmp_path / 'm.onnx'
    proc = run_module('rlfn_arch.quantize', '--model_path', exp / 'net_g_final.pth', '--output', out)
    assert 'convs all, quantization-aware' in proc.stdout
    from rlfn_arch.deploy.onnx import OnnxRLFN
    x = torch.rand(1, 3, 24, 24)
    assert torch.equal(OnnxRLFN(str(out))(x), OnnxRLFN(str(exp / 'net_g_final_int8.onnx'))(x))  # the same model
    bad = run_module('rlfn_arch.quantize', '--model_path', exp / 'net_g_final.pth', '--output', tmp_path / 'b.onnx',
                     '--convs', 'blocks', check=False)
    assert bad.returncode == 2 and 'trained with int8 convs all' in bad.stderr
    assert not (tmp_path / 'b.onnx').exists()
    test_yml = tiny_test_options(tmp_path, 'int8_test', {}, model_type='SRModel',
                                 metrics={'psnr': {'type': 'calculate_psnr', 'crop_border': 4}})
    proc = run_module('rlfn_arch.test', '-opt', test_yml, '--onnx', out)
    assert '# psnr' in proc.stdout + proc.stderr


def test_int8_options_that_cannot_work_are_refused_before_anything_is_written(tmp_path):
    yml, exp = tiny_options(tmp_path)
    for change, words in (({'qat': {'convs': 'all'}, 'ema_decay': 0.999}, 'ema_decay: 0'),
                          ({'qat': {'convs': 'most'}}, 'expected one of all, body, block_3x3, blocks'),
                          ({'qat': {'convs': 'all'}, 'precision': 'bf16'}, 'trains in fp32'),
                          ({'qat': {'convs': 'all', 'bits': 4}}, 'bits')):
        edit(yml, lambda o, c=change: o['stages'][2].update(train={'total_iter': 1, **c}))
        proc = run_module('rlfn_arch.train', '-opt', yml, check=False)
        assert proc.returncode == 2 and words in proc.stderr, (change, proc.stderr)
        assert not exp.exists()
    edit(yml, lambda o: (o['network_g'].update(type='RFDN', feature_channels=8, esa_channels=4),
                         o['network_g'].pop('mid_channels'), o['stages'][2].update(train={'qat': {}})))
    proc = run_module('rlfn_arch.train', '-opt', yml, check=False)
    assert proc.returncode == 2 and 'RLFN\'s own layout' in proc.stderr


def test_a_damaged_int8_checkpoint_is_refused_and_nothing_is_written(run, tmp_path):
    _, _, exp = run
    ckpt = safe_load(exp / 'net_g_final.pth')
    ckpt['params'].pop('block_1.c2_r.output_fq.scale')
    torch.save(ckpt, tmp_path / 'damaged.pth')
    proc = run_module('rlfn_arch.quantize', '--model_path', tmp_path / 'damaged.pth', '--output', tmp_path / 'm.onnx',
                      check=False)
    assert proc.returncode == 2 and 'block_1.c2_r.output_fq.scale' in proc.stderr
    assert not (tmp_path / 'm.onnx').exists()
