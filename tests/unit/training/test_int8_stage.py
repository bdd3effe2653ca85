"""An int8 (quantization-aware) stage from an option file: it starts from the previous stage's float weights,
trains with fake quantization, and the run ends with the int8 ONNX model, which the tools run."""
import json
import re

import cv2
import pytest
import torch
from helpers import edit, run_module, tiny_options, tiny_test_options, train_main

from rlfn_arch.archs import RLFN
from rlfn_arch.archs.qat import prepare_qat
from rlfn_arch.utils.checkpoint import read_safetensors, safe_load, split_quant_state
from rlfn_arch.utils.precision import native_bf16

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
    assert 'convs all, 8-bit weights, quantization-aware' in proc.stdout
    from rlfn_arch.deploy.onnx import OnnxRLFN
    x = torch.rand(1, 3, 24, 24)
    assert torch.equal(OnnxRLFN(str(out))(x), OnnxRLFN(str(exp / 'net_g_final_int8.onnx'))(x))  # the same model
    bad = run_module('rlfn_arch.quantize', '--model_path', exp / 'net_g_final.pth', '--output', tmp_path / 'b.onnx',
                     '--convs', 'blocks', check=False)
    assert bad.returncode == 2 and 'trained with int8 convs all' in bad.stderr
    assert not (tmp_path / 'b.onnx').exists()
    from rlfn_arch.quantize import main as quantize_main
    assert quantize_main(['--model_path', str(exp / 'net_g_final.pth'), '--output', str(tmp_path / 'b.onnx'),
                          '--weight_bits', '7']) == 2  # trained with 8-bit weights: kept, never silently re-quantized
    assert quantize_main(['--model_path', str(exp / 'net_g_final.pth'), '--output', str(tmp_path / 'b.onnx'),
                          '--calibration', 'entropy']) == 2  # its trained ranges are kept, never recalibrated
    assert not (tmp_path / 'b.onnx').exists()
    test_yml = tiny_test_options(tmp_path, 'int8_test', {}, model_type='SRModel',
                                 metrics={'psnr': {'type': 'calculate_psnr', 'crop_border': 4}})
    proc = run_module('rlfn_arch.test', '-opt', test_yml, '--onnx', out)
    assert '# psnr' in proc.stdout + proc.stderr


def _psnr(proc):
    return float(re.search(r'# psnr: ([\d.]+)', proc.stdout + proc.stderr).group(1))


def test_openvino_runs_the_int8_model_in_every_tool_as_onnx_runtime_does(run, tmp_path):
    """``--runtime openvino``: the same int8 file, OpenVINO's int8 kernels; images and PSNR as ONNX Runtime's."""
    pytest.importorskip('openvino')
    from rlfn_arch.deploy.onnx import OnnxRLFN
    _, _, exp = run
    model = exp / 'net_g_final_int8.onnx'
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 5), size=(23, 19), mode='bicubic').clamp(0, 1)
    ort_y, ov_y = (OnnxRLFN(str(model), runtime=r)(x) for r in ('onnxruntime', 'openvino'))
    assert ov_y.shape == ort_y.shape == (1, 3, 92, 76)
    assert float((ov_y - ort_y).abs().mean() * 255) < 0.5  # grey levels: one int8 step here and there
    test_yml = tiny_test_options(tmp_path, 'ov_test', {}, model_type='SRModel',
                                 metrics={'psnr': {'type': 'calculate_psnr', 'crop_border': 4}})
    by = {r: _psnr(run_module('rlfn_arch.test', '-opt', test_yml, '--onnx', model, '--runtime', r))
          for r in ('onnxruntime', 'openvino')}
    assert abs(by['openvino'] - by['onnxruntime']) < 0.05, by
    lr_dir = tmp_path / 'set' / 'LR_bicubic' / 'X4'
    for r, p in (('onnxruntime', 'auto'), ('openvino', 'fp32'), ('openvino', 'bf16')):
        proc = run_module('rlfn_arch.infer', '-i', lr_dir, '-o', tmp_path / f'{r}{p}', '--onnx', model, '--runtime', r,
                          '--precision', p)
        assert f', {r} ({"fp32" if r == "onnxruntime" else p})' in proc.stdout  # ONNX Runtime: fp32, as exported
    for f in lr_dir.iterdir():
        a, b, c = (cv2.imread(str(tmp_path / d / f.name)).astype(int)
                   for d in ('onnxruntimeauto', 'openvinofp32', 'openvinobf16'))
        assert a.shape == b.shape == c.shape and (abs(a - b) <= 1).mean() > 0.99
        assert abs(a - c).mean() < 3  # bf16 float operations: close to fp32
        if native_bf16('cpu'):  # (elsewhere OpenVINO may run them in fp32 whatever the hint)
            assert (b != c).any()  # another computation
    run_module('rlfn_arch.benchmark', '--preset', 'rlfn_s', '--size', '32', '32', '--runs', '1', '--warmup',
               '0', '--onnx', model, '--runtime', 'openvino', '--json', tmp_path / 'b.json')
    rows = json.loads((tmp_path / 'b.json').read_text())
    assert rows[-1]['path'] == 'openvino net_g_final_int8.onnx' and rows[-1]['runtime_ms'] > 0


def test_a_runtime_that_cannot_apply_is_refused_naming_it(run, tmp_path, monkeypatch):
    import importlib.util
    _, _, exp = run
    test_yml = tiny_test_options(tmp_path, 'refused', {}, model_type='SRModel')
    proc = run_module('rlfn_arch.test', '-opt', test_yml, '--onnx', exp / 'net_g_final_int8.onnx', '--precision',
                      'bf16', check=False)
    assert proc.returncode == 2 and '--precision bf16 applies with --runtime openvino' in proc.stderr
    proc = run_module('rlfn_arch.test', '-opt', test_yml, '--onnx', exp / 'net_g_final_int8.onnx', '--runtime',
                      'openvino', '--precision', 'fp16', check=False)
    assert proc.returncode == 2 and 'OpenVINO runs an ONNX model\'s float operations in fp32 or bf16' in proc.stderr
    proc = run_module('rlfn_arch.infer', '-i', tmp_path, '-o', tmp_path / 'o', '--model_path', exp / 'net_g_final.pth',
                      '--runtime', 'openvino', check=False)
    assert proc.returncode == 2 and '--runtime openvino runs --onnx models' in proc.stderr
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'openvino' else real(name, *a))
    proc = run_module('rlfn_arch.benchmark', '--preset', 'rlfn_s', '--onnx', exp / 'net_g_final_int8.onnx',
                      '--runtime', 'openvino', '--json', tmp_path / 'b.json', check=False)
    assert proc.returncode == 2 and 'OpenVINO is not installed (pip install openvino)' in proc.stderr
    assert not (tmp_path / 'b.json').exists() and not (tmp_path / 'o').exists()


def _int8_only_run(root, target, invert_hr, qat=None, train=None, quant=False):
    """One int8 stage (3 iterations) from fixed float weights; the HR images inverted or not. Its final weights
    (with the quantizers' state when ``quant``)."""
    yml, exp = tiny_options(root)
    if invert_hr:
        for f in (root / 'data' / 'HR').iterdir():
            cv2.imwrite(str(f), 255 - cv2.imread(str(f)))
    torch.manual_seed(0)
    start = root / 'start.pth'
    torch.save({'params': RLFN(upscale=4, feature_channels=8, mid_channels=8, num_blocks=1).state_dict()}, start)
    edit(yml, lambda o: (o['path'].update(pretrain_network_g=str(start)),
                         o.update(stages=[{'name': 'q', 'train': {'total_iter': 3, **(train or {}), 'qat': {
                             'convs': 'all', 'calibration_batches': 1, **({'target': target} if target else {}),
                             **(qat or {})}}}])))
    assert train_main('-opt', yml) == 0
    final = safe_load(exp / 'net_g_final.pth')['params']
    return final if quant else split_quant_state(final)[0]


def test_learned_ranges_train_from_their_calibration_even_outside_trainable_g_and_export_as_trained(tmp_path):
    """``qat.ranges: learned``: after the calibration batch every activation range moves with the weights, those
    of convs whose weights ``trainable_g`` keeps included; the final checkpoint's scales are the learned ones and
    the run's int8 ONNX model carries them. With ``calibrated`` (the default) the ranges stay where calibrated."""
    import onnx
    from onnx import numpy_helper
    runs = {r: _int8_only_run(tmp_path / r, None, 0, qat={'ranges': r}, quant=True,
                              train={'trainable_g': ['block_'], 'optim_g': {'lr': 1e-3}})
            for r in ('calibrated', 'learned')}
    learned, calibrated = runs['learned'], runs['calibrated']
    assert not any(k.endswith('range_scale') for k in calibrated)
    for name in ('conv_1.output_fq', 'block_1.c5.output_fq'):  # conv_1's weights are outside trainable_g
        assert float(learned[f'{name}.range_scale'].abs()) > 0 or float(learned[f'{name}.range_zero_point'].abs()) > 0
        assert torch.allclose(learned[f'{name}.scale'], learned[f'{name}.calibrated_scale'] * (
            1 + 100 * learned[f'{name}.range_scale']))  # the buffers the export reads follow the learned range
        # both runs calibrated the same range on the same first batch; only the learned one moved from it
        assert torch.equal(learned[f'{name}.calibrated_scale'], calibrated[f'{name}.scale'])
    assert not torch.equal(learned['conv_1.output_fq.scale'], calibrated['conv_1.output_fq.scale'])
    assert all(torch.equal(learned[k], calibrated[k]) for k in ('conv_1.weight', 'upsampler.0.weight'))
    model = onnx.load(str(next((tmp_path / 'learned').rglob('net_g_final_int8.onnx'))))
    scales = {float(numpy_helper.to_array(i)) for i in model.graph.initializer if i.name.endswith('_scale')
              and numpy_helper.to_array(i).size == 1}
    assert any(abs(s - float(learned['conv_1.output_fq.scale'])) < 1e-7 for s in scales)


def test_an_inputs_placement_stage_ends_with_its_model_and_quantize_keeps_its_placement(tmp_path, capsys):
    """``qat.placement: inputs``: the run's int8 model quantizes conv inputs only and says so; ``quantize`` of the
    checkpoint writes the same model, and refuses another ``--placement`` without writing; float weights take
    ``--placement inputs`` after training."""
    from rlfn_arch.deploy.onnx import OnnxRLFN, int8_placement_onnx
    from rlfn_arch.quantize import main as quantize_main
    final = _int8_only_run(tmp_path / 'run', None, 0, qat={'placement': 'inputs'}, quant=True)
    assert not any('.output_fq.' in k for k in final)
    model = next((tmp_path / 'run').rglob('net_g_final_int8.onnx'))
    assert int8_placement_onnx(str(model)) == 'inputs'
    assert f'--onnx {model} --runtime openvino' in capsys.readouterr().out  # where it runs in int8
    ckpt = next((tmp_path / 'run').rglob('net_g_final.pth'))
    pytest.importorskip('openvino')
    lr = tmp_path / 'lr'
    lr.mkdir()
    cv2.imwrite(str(lr / 'a.png'), (torch.rand(20, 24, 3) * 255).byte().numpy())
    proc = run_module('rlfn_arch.infer', '-i', lr, '-o', tmp_path / 'auto', '--onnx', model)  # auto: where it is int8
    assert ', openvino (' in proc.stdout and (tmp_path / 'auto' / 'a.png').is_file(), proc.stdout
    with pytest.warns(RuntimeWarning, match='write float'):  # asked for: it runs, and the user is told
        proc = run_module('rlfn_arch.infer', '-i', lr, '-o', tmp_path / 'ort', '--onnx', model, '--runtime',
                          'onnxruntime')
    assert ', onnxruntime (' in proc.stdout and (tmp_path / 'ort' / 'a.png').is_file(), proc.stdout
    proc = run_module('rlfn_arch.benchmark', '--preset', 'rlfn_s', '--size', '32', '32', '--runs', '1', '--warmup',
                      '0', '--onnx', model, '--json', tmp_path / 'b.json')
    assert json.loads((tmp_path / 'b.json').read_text())[-1]['path'] == f'openvino {model.name}'
    assert quantize_main(['--model_path', str(ckpt), '--output', str(tmp_path / 'a.onnx')]) == 0
    x = torch.rand(1, 3, 20, 20)
    with pytest.warns(RuntimeWarning, match='write float'):
        assert torch.equal(OnnxRLFN(str(tmp_path / 'a.onnx'))(x), OnnxRLFN(str(model))(x))
    assert quantize_main(['--model_path', str(ckpt), '--output', str(tmp_path / 'b.onnx'), '--placement',
                          'qlinear']) == 2
    assert not (tmp_path / 'b.onnx').exists()
    start = tmp_path / 'run' / 'start.pth'
    assert quantize_main(['--model_path', str(start), '--output', str(tmp_path / 'p.onnx'), '--placement', 'inputs',
                          '--num_patches', '2']) == 0
    assert int8_placement_onnx(str(tmp_path / 'p.onnx')) == 'inputs'


def test_the_int8_network_learns_the_float_networks_output_by_default_and_the_hr_patch_with_target_gt(tmp_path):
    """``qat.target: float`` (the default): the target is the float network's output for the patch, so what
    the HR images hold changes nothing; ``target: gt`` learns the HR patch, and inverted HR images change it."""
    runs = {(t, inv): _int8_only_run(tmp_path / f'{t}{inv}', t, inv) for t in (None, 'gt') for inv in (0, 1)}
    float_a, float_b = runs[None, 0], runs[None, 1]
    assert all(torch.equal(float_a[k], float_b[k]) for k in float_a)
    gt_a, gt_b = runs['gt', 0], runs['gt', 1]
    assert not all(torch.equal(gt_a[k], gt_b[k]) for k in gt_a)
    assert not all(torch.equal(float_a[k], gt_a[k]) for k in gt_a)  # the two targets differ on the same data


def test_the_plan_says_what_an_int8_stage_learns(tmp_path):
    yml, exp = tiny_options(tmp_path)
    for qat, words in (({}, "learns the float network's output"), ({'target': 'gt'}, 'learns the HR patches'),
                       ({'ranges': 'learned'}, "learns the float network's output, learned ranges"),
                       ({'placement': 'inputs'}, "learns the float network's output, 8-bit inputs only (int8 in "
                                                 'OpenVINO)')):
        edit(yml, lambda o, q=qat: o['stages'][2].update(train={'total_iter': 1, 'qat': {'convs': 'all', **q}}))
        proc = run_module('rlfn_arch.train', '-opt', yml, '--dry_run')
        assert f'int8 convs all (quantization-aware, {words})' in proc.stdout, proc.stdout
    assert not exp.exists()


def test_int8_options_that_cannot_work_are_refused_before_anything_is_written(tmp_path):
    yml, exp = tiny_options(tmp_path)
    for change, words in (({'qat': {'convs': 'all'}, 'ema_decay': 0.999}, 'ema_decay: 0'),
                          ({'qat': {'convs': 'most'}}, 'expected one of all, body, block_3x3, blocks'),
                          ({'qat': {'convs': 'all'}, 'precision': 'bf16'}, 'trains in fp32'),
                          ({'qat': {'convs': 'all', 'bits': 4}}, 'bits'),
                          ({'qat': {'weight_bits': 6}}, 'train.qat.weight_bits: 6: expected 8'),
                          ({'qat': {'target': 'hr'}}, 'train.qat.target: \'hr\': expected float'),
                          ({'qat': {'ranges': 'trained'}}, 'train.qat.ranges: \'trained\': expected calibrated'),
                          ({'qat': {'placement': 'outputs'}}, 'train.qat.placement: \'outputs\': expected qlinear')):
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


def test_an_int8_checkpoint_starts_an_int8_stage_only_with_its_own_settings(run, tmp_path):
    """A stage that starts from an int8 stage's checkpoint: a float stage takes its float weights, an int8 stage
    with the file's ``qat`` settings its ranges too; other settings (here learned ranges for a file whose ranges
    were calibrated) are refused, naming the file and both settings, before any folder is made."""
    _, _, exp = run
    start = exp / 'net_g_final.pth'
    yml, out = tiny_options(tmp_path)
    edit(yml, lambda o: (o['path'].update(pretrain_network_g=str(start)),
                         o.update(stages=[{'name': 'q', 'train': {'total_iter': 2, 'qat': {'convs': 'all',
                                                                                          'ranges': 'learned'}}}])))
    proc = run_module('rlfn_arch.train', '-opt', yml, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert str(start) in proc.stderr and 'train.qat ranges calibrated; the stage has ranges learned' in proc.stderr
    assert not out.exists()
    edit(yml, lambda o: o['stages'][0]['train']['qat'].update(ranges='calibrated'))
    assert train_main('-opt', yml) == 0  # the same settings as the file: it continues from its ranges
    init = safe_load(out / 'q' / 'models' / 'net_g_init.pth')['params']
    held = safe_load(start)['params']
    assert torch.equal(init['block_1.c2_r.output_fq.scale'], held['block_1.c2_r.output_fq.scale'])
    edit(yml, lambda o: (o['stages'][0]['train'].pop('qat'), o['stages'][0].update(name='f')))
    assert train_main('-opt', yml) == 0  # a float stage: the file's float weights
    init = safe_load(out / 'f' / 'models' / 'net_g_init.pth')['params']
    assert init.keys() == split_quant_state(held)[0].keys()
    assert all(torch.equal(init[k], held[k]) for k in init)
