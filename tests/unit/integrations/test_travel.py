"""Models that travel: safetensors read and written by every entry point (detected by content), RLFN in
spandrel (every preset and step, official and our files, [0, 255] and [0, 1]), and self-describing ONNX."""
import json
import os
import shutil

import cv2
import numpy as np
import pytest
import spandrel
import torch
from helpers import OFFICIAL, run_module, shared_path, tiny_ckpt, tiny_options, train_main

import rlfn_arch.integrations.spandrel as rlfn_spandrel
from rlfn_arch.archs.rlfn_arch import PRESETS, RLFN
from rlfn_arch.utils.checkpoint import CheckpointError, read_safetensors, safe_load

rlfn_spandrel.install()


def _descriptor_matches(desc, net, channels=3, size=(1, 3, 24, 19)):
    x = torch.rand(size[0], channels, *size[2:], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = net.eval()(x).clamp(0, 1)  # spandrel's descriptors clamp to [0, 1]
        theirs = desc(x)
    return (ours - theirs).abs().max().item()


# ------------------------------------------------------------------------------------------ safetensors
def test_convert_writes_safetensors_with_metadata_and_every_tool_reads_it(tmp_path):
    src = tiny_ckpt(tmp_path / 'net.pth', scale=2)
    st = tmp_path / 'net.safetensors'
    run_module('rlfn_arch.convert', '--input', src, '--output', st, '--input_range', '1')
    tensors, meta = read_safetensors(str(st))
    assert meta['architecture'] == 'RLFN' and meta['scale'] == '2' and meta['value_range'] == '[0, 1]'
    assert json.loads(meta['network_g'])['feature_channels'] == 8 and meta['min_input_size'] == '15'
    assert all(torch.equal(tensors[k], v) for k, v in safe_load(src)['params'].items())
    os.makedirs(tmp_path / 'in')
    cv2.imwrite(str(tmp_path / 'in' / 'a.png'), np.random.default_rng(0).integers(0, 256, (20, 18, 3), np.uint8))
    for model, out in ((src, 'out_pth'), (st, 'out_st')):
        run_module('rlfn_arch.infer', '-i', tmp_path / 'in', '-o', tmp_path / out, '--model_path', model,
                   '--precision', 'fp32')
    a, b = (cv2.imread(str(tmp_path / d / 'a.png')) for d in ('out_pth', 'out_st'))
    assert np.array_equal(a, b)
    proc = run_module('rlfn_arch.export', '--model_path', st, '--output', tmp_path / 'm.onnx')
    assert 'check passed' in proc.stdout
    run_module('rlfn_arch.benchmark', '--model_path', st, '--size', '16', '16', '--runs', '1', '--warmup', '0',
               '--json', tmp_path / 'b.json')


def test_names_do_not_decide_the_format(tmp_path):
    src = tiny_ckpt(tmp_path / 'net.pth', scale=2)
    st = tmp_path / 'net.safetensors'
    run_module('rlfn_arch.convert', '--input', src, '--output', st, '--input_range', '1')
    shutil.copy(src, tmp_path / 'pickled.safetensors')  # a .pth renamed
    shutil.copy(st, tmp_path / 'really_safetensors.pth')  # and the reverse
    ref = safe_load(src)['params']
    for path in ('pickled.safetensors', 'really_safetensors.pth'):
        loaded = safe_load(tmp_path / path)
        loaded = loaded.get('params', loaded)
        assert all(torch.equal(loaded[k], v) for k, v in ref.items()), path
        run_module('rlfn_arch.convert', '--input', tmp_path / path, '--output', tmp_path / f'{path}.out.pth',
                   '--input_range', '1')


def test_a_corrupt_or_foreign_safetensors_file_is_a_one_line_error(tmp_path):
    from safetensors.torch import save_file
    src = tiny_ckpt(tmp_path / 'net.pth', scale=2)
    run_module('rlfn_arch.convert', '--input', src, '--output', tmp_path / 'ok.safetensors', '--input_range', '1')
    data = (tmp_path / 'ok.safetensors').read_bytes()
    (tmp_path / 'bad.safetensors').write_bytes(data[:8] + b'{"x": ' + data[14:60])
    save_file({'head.0.weight': torch.zeros(4, 3, 3, 3)}, str(tmp_path / 'edsr.safetensors'))
    with pytest.raises(CheckpointError, match='bad.safetensors: not a readable safetensors file'):
        safe_load(tmp_path / 'bad.safetensors')
    for name, words in (('bad.safetensors', 'not a readable safetensors file'), ('edsr.safetensors', 'not an RLFN')):
        for module, args in (('rlfn_arch.infer', ['-i', src, '-o', tmp_path / 'o.png']),
                             ('rlfn_arch.export', ['--output', tmp_path / 'o.onnx'])):
            proc = run_module(module, *args, '--model_path', tmp_path / name, check=False)
            err = proc.stderr.strip().splitlines()
            assert proc.returncode == 2 and len(err) == 1 and name in err[0] and words in err[0], (module, err)
    assert not (tmp_path / 'o.png').exists() and not (tmp_path / 'o.onnx').exists()


def test_a_safetensors_file_works_as_pretrain_network_g(tmp_path):
    yml, exp = tiny_options(tmp_path, stage_iters=(1, 1, 1))
    st = tmp_path / 'init.safetensors'
    run_module('rlfn_arch.convert', '--input', tiny_ckpt(tmp_path / 'init.pth', scale=4), '--output', st,
               '--input_range', '1')
    from helpers import edit
    edit(yml, lambda o: o['path'].update(pretrain_network_g=str(st)))
    assert train_main('-opt', yml) == 0
    init = safe_load(exp / 's1' / 'models' / 'net_g_init.pth')['params']
    assert all(torch.equal(init[k], v) for k, v in read_safetensors(str(st))[0].items())


def test_training_writes_a_final_safetensors_that_spandrel_and_infer_agree_on(tmp_path):
    yml, exp = tiny_options(tmp_path, stage_iters=(2, 2, 2))
    assert train_main('-opt', yml) == 0
    final = exp / 'net_g_final.safetensors'
    tensors, meta = read_safetensors(str(final))
    assert meta['option_file'] == 'tiny.yml' and json.loads(meta['stages']) == ['s1', 's2', 's3']
    assert float(meta['val_psnr']) > 0 and meta['weights'] == 'params'
    assert all(torch.equal(tensors[k], v) for k, v in safe_load(exp / 'net_g_final.pth')['params'].items())
    # spandrel (chaiNNer / ComfyUI) and python -m rlfn_arch.infer on the same image: within 1 grey level
    desc = spandrel.ModelLoader().load_from_file(str(final))
    img = cv2.imread(str(tmp_path / 'data' / 'LR_bicubic' / 'X4' / 'img0x4.png'))
    run_module('rlfn_arch.infer', '-i', tmp_path / 'data' / 'LR_bicubic' / 'X4' / 'img0x4.png', '-o',
               tmp_path / 'sr.png', '--model_path', final, '--precision', 'fp32', '--channels_last', 'false')
    ours = cv2.imread(str(tmp_path / 'sr.png')).astype(int)
    x = torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1))).float()[None] / 255
    with torch.no_grad():
        y = desc(x)[0].numpy().transpose(1, 2, 0)[:, :, ::-1]
    theirs = np.round(y * 255).astype(int)
    assert ours.shape == theirs.shape and np.abs(ours - theirs).max() <= 1


# ---------------------------------------------------------------------------------------------- spandrel
@pytest.mark.parametrize('name', OFFICIAL + ['rfdn_aim_x4'])
def test_spandrel_loads_every_official_file_in_0_1(name, tmp_path):
    src = shared_path('weights', f'{name}.pth')
    ref_file = 'official_rfdn_io.pt' if name.startswith('rfdn') else 'official_rlfn_io.pt'
    ref = torch.load(shared_path('reference', ref_file), map_location='cpu', weights_only=True)
    desc = spandrel.ModelLoader().load_from_file(src)
    assert desc.architecture.id == ('RFDN' if name.startswith('rfdn') else 'RLFN')
    assert desc.scale == (int(name[-1]) if name[-1].isdigit() else 4)
    with torch.no_grad():
        y = desc(ref['input'])
    assert (y - (ref['out_255'][name] / 255).clamp(0, 1)).abs().max().item() <= 1e-5
    # the converted file (our [0, 1] checkpoint), as .pth and .safetensors, gives the same
    for ext in ('pth', 'safetensors'):
        out = tmp_path / f'conv.{ext}'
        run_module('rlfn_arch.convert', '--input', src, '--output', out)
        with torch.no_grad():
            y2 = spandrel.ModelLoader().load_from_file(str(out))(ref['input'])
        assert (y2 - y).abs().max().item() <= 1e-5


@pytest.mark.parametrize('name', sorted(PRESETS))
@pytest.mark.parametrize('scale,channels', [(2, 3), (3, 1), (4, 3)])
def test_spandrel_round_trips_every_preset_scale_and_channel_count(tmp_path, name, scale, channels):
    torch.manual_seed(0)
    net = RLFN(upscale=scale, in_channels=channels, out_channels=channels, **PRESETS[name])
    torch.save({'params_ema': net.state_dict(), 'params': net.state_dict()}, tmp_path / 'w.pth')
    desc = spandrel.ModelLoader().load_from_file(str(tmp_path / 'w.pth'))
    arch = 'RFDN' if PRESETS[name].get('block') == 'rfdb' else 'RLFN'
    assert desc.architecture.id == arch and desc.scale == scale and desc.input_channels == channels
    assert name in desc.tags and desc.size_requirements.minimum == 15
    assert _descriptor_matches(desc, net, channels) <= 1e-5


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_supports_half_and_bfloat16_are_true_claims(dtype):
    torch.manual_seed(0)
    net = RLFN(upscale=2, **PRESETS['rlfn_s']).eval()
    desc = spandrel.MAIN_REGISTRY.load(net.state_dict())
    assert desc.supports_half and desc.supports_bfloat16
    x = torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        ref = desc(x)
        desc.to(dtype)
        low = desc(x.to(dtype)).float()
    assert low.shape == ref.shape and torch.isfinite(low).all() and (low - ref).abs().max().item() < 0.05


def test_other_architectures_still_resolve_to_their_own():
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.SAFMN import SAFMN
    from spandrel.architectures.SPAN import SPAN
    nets = {'ESRGAN': ESRGAN(num_filters=8, num_blocks=1, scale=4), 'SPAN': SPAN(num_in_ch=3, num_out_ch=3,
            feature_channels=8), 'SAFMN': SAFMN(dim=8, n_blocks=1), 'Compact': Compact(num_feat=8, num_conv=2)}
    for arch, net in nets.items():
        assert spandrel.MAIN_REGISTRY.load(net.state_dict()).architecture.id == arch


def test_install_is_idempotent_and_uses_the_public_registry():
    assert rlfn_spandrel.install() == []
    assert sum(a.architecture.id == 'RLFN' for a in spandrel.MAIN_REGISTRY.architectures()) == 1


# ------------------------------------------------------------------------------------------------- ONNX
def test_exported_onnx_describes_itself_and_infer_reads_its_scale(tmp_path):
    from rlfn_arch.deploy.onnx import OnnxRLFN, onnx_metadata
    ckpt = tiny_ckpt(tmp_path / 'net.pth', scale=3)
    run_module('rlfn_arch.export', '--model_path', ckpt, '--output', tmp_path / 'm.onnx')
    meta = onnx_metadata(str(tmp_path / 'm.onnx'))
    assert meta['scale'] == '3' and meta['architecture'] == 'RLFN' and meta['value_range'] == '[0, 1]'
    assert json.loads(meta['network_g'])['upscale'] == 3 and meta['source'] == 'net.pth'
    runner = OnnxRLFN(str(tmp_path / 'm.onnx'))
    runner._probe_scale = None  # the scale must come from the metadata, not from a probe run
    assert runner.upscale == 3


# ------------------------------------------------------------------------------------ hostile files
def test_spandrel_refuses_nonfinite_weights_naming_the_tensor(tmp_path):
    path = tiny_ckpt(tmp_path / 'nan.pth', nan=True)
    with pytest.raises(CheckpointError, match='block_1.c1_r.weight'):
        spandrel.ModelLoader().load_from_file(str(path))


def test_spandrel_names_an_rfdn_checkpoint_rfdn():
    torch.manual_seed(0)
    desc = spandrel.ModelLoader().load_from_state_dict(RLFN(upscale=4, **PRESETS['rfdn']).state_dict())
    assert desc.architecture.id == 'RFDN' and 'rfdn' in desc.tags
    plain = spandrel.ModelLoader().load_from_state_dict(RLFN(upscale=4, **PRESETS['rlfn_s']).state_dict())
    assert plain.architecture.id == 'RLFN'


def test_a_safetensors_header_of_absurd_length_is_refused_as_safetensors(tmp_path):
    bad = tmp_path / 'w.pth'
    bad.write_bytes((2**60).to_bytes(8, 'little') + b'{"a": {}}')
    with pytest.raises(CheckpointError) as e:
        safe_load(bad)
    assert 'safetensors' in str(e.value) and 'weights_only' not in str(e.value)
    proc = run_module('rlfn_arch.infer', '-i', tmp_path, '-o', tmp_path / 'o', '--model_path', bad, check=False)
    assert proc.returncode == 2 and 'weights_only' not in proc.stderr and str(bad) in proc.stderr


def test_no_message_suggests_an_unsafe_load(tmp_path):
    import collections
    torch.save({'params': collections.OrderedDict(), 'code': print}, tmp_path / 'pickled.pth')
    with pytest.raises(CheckpointError) as e:
        safe_load(tmp_path / 'pickled.pth')
    assert 'weights_only' not in str(e.value) and 'could run code' in str(e.value)
