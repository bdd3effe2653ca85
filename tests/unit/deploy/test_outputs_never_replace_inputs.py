"""No command replaces a file it did not create: inputs are never outputs (symbolic and hard links count), an
existing output needs --overwrite; through ``main(argv)`` of each entry point."""
import os

import pytest
import torch
from helpers import random_images, run_module, shared_path, snapshot, tiny_ckpt


def _fails_cleanly(proc, *words):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert 'Traceback' not in proc.stderr and all(w in proc.stderr for w in words), proc.stderr


@pytest.mark.parametrize('tool, args', [
    ('rlfn_arch.export', ['--model_path', '{w}', '--output', '{o}']),
    ('rlfn_arch.convert', ['--input', '{w}', '--output', '{o}']),
    ('rlfn_arch.quantize', ['--model_path', '{w}', '--output', '{o}']),
    ('rlfn_arch.benchmark', ['--model_path', '{w}', '--json', '{o}', '--runs', '1', '--warmup', '0']),
])
@pytest.mark.parametrize('link', ['same', 'symlink', 'hardlink'])
def test_a_tool_never_writes_over_its_input_weights(tmp_path, tool, args, link):
    weights = tiny_ckpt(tmp_path / 'w.pth')
    before = weights.read_bytes()
    out = {'same': weights, 'symlink': tmp_path / 'link.pth', 'hardlink': tmp_path / 'hard.pth'}[link]
    if link == 'symlink':
        os.symlink(weights, out)
    elif link == 'hardlink':
        os.link(weights, out)
    argv = [a.format(w=weights, o=out) for a in args]
    for extra in ([], ['--overwrite']):  # --overwrite never makes an input an output
        _fails_cleanly(run_module(tool, *argv, *extra, check=False), 'is the input', 'nothing was written')
    assert weights.read_bytes() == before


@pytest.mark.parametrize('tool, args, output', [
    ('rlfn_arch.convert', ['--input', '{w}', '--output', '{d}/t.txt'], 't.txt'),
    ('rlfn_arch.export', ['--model_path', '{w}', '--output', '{d}/m.onnx', '--fp16'], 'm_fp16.onnx'),
    ('rlfn_arch.benchmark', ['--model_path', '{w}', '--runs', '1', '--warmup', '0'], 'benchmark.json'),
])
def test_an_existing_output_is_refused_without_overwrite_and_replaced_with_it(tmp_path, tool, args, output):
    weights = tiny_ckpt(tmp_path / 'w.pth')
    mine = tmp_path / output
    mine.write_text('my own file')
    argv = [a.format(w=weights, d=tmp_path) for a in args]
    _fails_cleanly(run_module(tool, *argv, cwd=tmp_path, check=False), output, '--overwrite')
    assert mine.read_text() == 'my own file'
    run_module(tool, *argv, '--overwrite', cwd=tmp_path)
    assert mine.read_bytes() != b'my own file'


def test_infer_refuses_existing_outputs_unless_overwrite(tmp_path):
    ckpt = tiny_ckpt(tmp_path / 'net.pth')
    random_images(tmp_path / 'in', [(20, 16), (18, 18)])
    os.makedirs(tmp_path / 'out')
    (tmp_path / 'out' / 'im1.png').write_bytes(b'a picture of mine')
    proc = run_module('rlfn_arch.infer', '-i', tmp_path / 'in', '-o', tmp_path / 'out', '--model_path', ckpt,
                      check=False)
    _fails_cleanly(proc, 'im1.png', '--overwrite')
    assert os.listdir(tmp_path / 'out') == ['im1.png']  # nothing written, not even the other image
    run_module('rlfn_arch.infer', '-i', tmp_path / 'in', '-o', tmp_path / 'out', '--model_path', ckpt, '--overwrite')
    assert sorted(os.listdir(tmp_path / 'out')) == ['im0.png', 'im1.png']


def test_infer_refuses_an_output_hard_linked_to_its_input(tmp_path):
    ckpt = tiny_ckpt(tmp_path / 'net.pth')
    random_images(tmp_path / 'in', [(20, 16)])
    os.makedirs(tmp_path / 'out')
    os.link(tmp_path / 'in' / 'im0.png', tmp_path / 'out' / 'im0.png')
    before = snapshot(tmp_path / 'in')
    proc = run_module('rlfn_arch.infer', '-i', tmp_path / 'in', '-o', tmp_path / 'out', '--model_path', ckpt,
                      '--overwrite', check=False)
    _fails_cleanly(proc, 'would overwrite the input')
    assert snapshot(tmp_path / 'in') == before


def test_compare_refuses_existing_images_unless_overwrite(tmp_path):
    from helpers import make_pairs
    ckpt = tiny_ckpt(tmp_path / 'net.pth')
    hr, lr = make_pairs(str(tmp_path / 'data'), n=1, size=(40, 40), scale=2)
    os.makedirs(tmp_path / 'cmp')
    (tmp_path / 'cmp' / 'img0_compare.png').write_bytes(b'mine')
    args = ['--hr', hr, '--lr', lr, '--model_path', ckpt, '-o', tmp_path / 'cmp']
    _fails_cleanly(run_module('rlfn_arch.compare', *args, check=False), 'img0_compare.png', '--overwrite')
    assert (tmp_path / 'cmp' / 'img0_compare.png').read_bytes() == b'mine'
    run_module('rlfn_arch.compare', *args, '--overwrite')


def _onnx_with_scale(tmp_path, value):
    import onnx
    ckpt = tiny_ckpt(tmp_path / 'net.pth', scale=4)
    run_module('rlfn_arch.export', '--model_path', ckpt, '--output', tmp_path / 'm.onnx')
    model = onnx.load(tmp_path / 'm.onnx')
    for p in model.metadata_props:
        if p.key == 'scale':
            p.value = value
    onnx.save(model, tmp_path / 'bad.onnx')
    return tmp_path / 'bad.onnx'


@pytest.mark.parametrize('value', ['2', '0', 'four'])
def test_onnx_scale_metadata_is_checked_against_what_the_model_does(tmp_path, value):
    bad = _onnx_with_scale(tmp_path, value)
    random_images(tmp_path / 'in', [(20, 16)])
    proc = run_module('rlfn_arch.infer', '-i', tmp_path / 'in', '-o', tmp_path / 'out', '--onnx', bad, check=False)
    _fails_cleanly(proc, str(bad), 'upscales x4')
    assert not os.path.exists(tmp_path / 'out' / 'im0.png')


@pytest.mark.parametrize('tool', ['infer', 'export'])
def test_official_files_are_recognised_and_folded_without_the_flag(tmp_path, tool):
    """An official file as released ([0, 255]) gives the converted model's output without --input_range."""
    from rlfn_arch.archs.rlfn_weights import convert, load_model
    path = shared_path('weights', 'rlfn_s_x2.pth')
    net, _ = load_model(path)
    ref, _, factor = convert(path)
    assert factor == 255 and all(torch.equal(net.state_dict()[k], v) for k, v in ref.items())
    if tool == 'infer':
        random_images(tmp_path / 'in', [(24, 20)])
        run_module('rlfn_arch.infer', '-i', tmp_path / 'in', '-o', tmp_path / 'a', '--model_path', path)
        torch.save({'params': ref}, tmp_path / 'conv.pth')
        run_module('rlfn_arch.infer', '-i', tmp_path / 'in', '-o', tmp_path / 'b', '--model_path',
                   tmp_path / 'conv.pth')
        assert (tmp_path / 'a' / 'im0.png').read_bytes() == (tmp_path / 'b' / 'im0.png').read_bytes()
    else:
        proc = run_module('rlfn_arch.export', '--model_path', path, '--output', tmp_path / 'm.onnx')
        assert 'check passed' in proc.stdout


def test_test_reads_safetensors_by_content(tmp_path):
    """``test`` loads the .safetensors file training writes, also under a .pth name."""
    import yaml
    from helpers import make_pairs

    from rlfn_arch.archs.rlfn_arch import RLFN
    from rlfn_arch.archs.rlfn_weights import save_weights
    torch.manual_seed(0)
    net = RLFN(upscale=2, feature_channels=8, mid_channels=8, num_blocks=1)
    cfg = dict(upscale=2, in_channels=3, out_channels=3, feature_channels=8, mid_channels=8, esa_channels=16,
               num_blocks=1)
    hr, lr = make_pairs(str(tmp_path / 'data'), n=2, size=(40, 40), scale=2)
    opt = {'name': 'st', 'model_type': 'SRModel', 'scale': 2, 'num_gpu': 0,
           'datasets': {'test_1': {'name': 'tiny', 'type': 'PairedImageDataset', 'dataroot_gt': hr, 'dataroot_lq': lr,
                                   'filename_tmpl': '{}x2', 'io_backend': {'type': 'disk'}}},
           'network_g': {'type': 'RLFN', **cfg}, 'path': {'root': str(tmp_path), 'strict_load_g': True},
           'val': {'save_img': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 2}}}}
    (tmp_path / 't.yml').write_text(yaml.safe_dump(opt))
    outs = []
    for name in ('w.safetensors', 'w_named.pth'):
        save_weights(net.state_dict(), str(tmp_path / 'w.safetensors'), cfg)
        os.replace(tmp_path / 'w.safetensors', tmp_path / name)
        proc = run_module('rlfn_arch.test', '-opt', tmp_path / 't.yml', '--force_yml',
                          f'path:pretrain_network_g={tmp_path / name}', check=False)
        assert proc.returncode == 0 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
        outs.append([ln for ln in (proc.stdout + proc.stderr).splitlines() if '# psnr' in ln])
    assert outs[0] and outs[0] == outs[1]
