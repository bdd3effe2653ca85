import json
import os

import cv2
import numpy as np
import pytest
import torch
from helpers import run_module, tiny_options

from rlfn_arch.archs import PRESETS, RLFN
from rlfn_arch.deploy.efficiency import count_ntire
from rlfn_arch.deploy.upscaler import tiled_forward


@pytest.fixture(scope='module')
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    net = RLFN(upscale=2, feature_channels=8, num_blocks=1)
    path = tmp_path_factory.mktemp('ckpt') / 'tiny_x2.pth'
    torch.save({'params': net.state_dict()}, path)
    return path, net.eval()


def _img(h, w, c, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    maxv = 255 if dtype == np.uint8 else 65535
    shape = (h, w) if c == 1 else (h, w, c)
    small = rng.integers(0, maxv + 1, (max(1, h // 4), max(1, w // 4)) + shape[2:]).astype(np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if c != 1 and img.ndim == 2:
        img = img[:, :, None]
    return np.clip(img, 0, maxv).astype(dtype)


KINDS = {'rgb.png': _img(20, 24, 3), 'gray.png': _img(18, 21, 1), 'rgba.png': _img(16, 16, 4),
         'deep.png': _img(17, 19, 3, np.uint16), 'tiny.png': _img(5, 7, 3), 'thin.png': _img(1, 40, 3),
         'photo.jpg': _img(20, 20, 3)}


@pytest.fixture(scope='module')
def infer_every_kind(tiny_ckpt, tmp_path_factory):
    """One ``infer`` run over a folder holding one image of each kind; returns (input dir, output dir)."""
    root = tmp_path_factory.mktemp('kinds')
    (root / 'in').mkdir()
    for name, img in KINDS.items():
        cv2.imwrite(str(root / 'in' / name), img)
    run_module('rlfn_arch.infer', '-i', root / 'in', '-o', root / 'out', '--model_path', tiny_ckpt[0], '--suffix', 'x2')
    return root / 'in', root / 'out'


@pytest.mark.parametrize('name', list(KINDS))
def test_infer_each_image_kind(infer_every_kind, name):
    src_dir, out_dir = infer_every_kind
    stem, ext = os.path.splitext(name)
    out = cv2.imread(str(out_dir / f'{stem}_x2{ext}'), cv2.IMREAD_UNCHANGED)
    src_img = cv2.imread(str(src_dir / name), cv2.IMREAD_UNCHANGED)
    assert out.shape[:2] == (src_img.shape[0] * 2, src_img.shape[1] * 2)
    assert out.ndim == src_img.ndim and out.dtype == src_img.dtype
    if src_img.ndim == 3:
        assert out.shape[2] == src_img.shape[2]
    if name == 'rgba.png':
        a = cv2.resize(src_img[:, :, 3].astype(np.float32) / 255, (32, 32), interpolation=cv2.INTER_CUBIC)
        assert np.abs(out[:, :, 3].astype(np.float32) / 255 - a.clip(0, 1)).max() <= 1 / 255 + 1e-6


def test_infer_matches_the_network(tiny_ckpt, tmp_path):
    ckpt, net = tiny_ckpt
    img = _img(20, 22, 3)
    cv2.imwrite(str(tmp_path / 'a.png'), img)
    with torch.no_grad():
        x = torch.from_numpy(img[:, :, ::-1].astype(np.float32) / 255).permute(2, 0, 1)[None]
        y = net(x).clamp(0, 1)[0].permute(1, 2, 0).numpy()[:, :, ::-1]
    expected = np.floor(y * 255 + 0.5).astype(np.uint8)
    for layout in ('auto', 'false'):  # default channels_last, and plain NCHW
        out = tmp_path / f'b_{layout}.png'
        run_module('rlfn_arch.infer', '-i', tmp_path / 'a.png', '-o', out, '--model_path', ckpt, '--tile', 0,
                   '--channels_last', layout)
        assert np.abs(cv2.imread(str(out)).astype(int) - expected).max() <= 1, layout


def test_tiled_and_untiled_agree_within_a_stated_bound():
    torch.manual_seed(0)
    net = RLFN(upscale=2, feature_channels=8, num_blocks=2).eval()
    x = torch.rand(1, 3, 70, 90)
    with torch.no_grad():
        full = net(x)
        tiled = tiled_forward(net, x, 2, tile=32, tile_pad=8)
    assert tiled.shape == full.shape
    # ESA pools over the tile only, so tiles are not exact; bound: mean abs < 0.01, max < 0.2 (in [0,1])
    diff = (tiled - full).abs()
    assert diff.mean() < 0.01 and diff.max() < 0.2
    # no tiling when the image fits in one tile
    with torch.no_grad():
        assert torch.equal(tiled_forward(net, x, 2, tile=100, tile_pad=8), full)


def test_a_corrupt_file_among_good_ones(tiny_ckpt, tmp_path):
    ckpt, _ = tiny_ckpt
    src, out = tmp_path / 'in', tmp_path / 'out'
    src.mkdir()
    for i in range(2):
        cv2.imwrite(str(src / f'good{i}.png'), _img(16, 16, 3, seed=i))
    (src / 'bad.png').write_bytes(b'\x89PNG\r\n\x1a\n broken')
    (src / 'readme.txt').write_text('hello')
    proc = run_module('rlfn_arch.infer', '-i', src, '-o', out, '--model_path', ckpt, check=False)
    assert proc.returncode == 1
    assert '2 image(s) upscaled' in proc.stdout and '2 failed' in proc.stdout
    assert 'bad.png' in proc.stdout and 'readme.txt' in proc.stdout
    assert sorted(os.listdir(out)) == ['good0.png', 'good1.png']


def test_half_on_cpu_runs_emulated_with_the_training_policy_warning(tiny_ckpt, tmp_path):
    """One policy for training and inference: fp16 where it is not native runs, emulated, with a warning."""
    from rlfn_arch import infer
    from rlfn_arch.utils import precision as P
    P._warned.discard(('fp16', 'cpu'))
    cv2.imwrite(str(tmp_path / 'a.png'), _img(20, 20, 3))
    with pytest.warns(RuntimeWarning, match='fp16 is native on CUDA GPUs only'):
        rc = infer.main(['-i', str(tmp_path / 'a.png'), '-o', str(tmp_path / 'out'), '--model_path',
                         str(tiny_ckpt[0]), '--device', 'cpu', '--half'])
    assert rc == 0 and (tmp_path / 'out' / 'a.png').is_file()


@pytest.mark.parametrize('preset,flops_g,acts_m,convs,params', [
    ('rlfn_ntire', 19.70, 80.05, 39, 317_218), ('rlfn', 33.99, 126.49, 57, 543_740)])
def test_ntire_counts_reproduce_the_published_table(preset, flops_g, acts_m, convs, params):
    p, f, a, c = count_ntire(RLFN(upscale=4, **PRESETS[preset]), (256, 256))
    assert (p, c) == (params, convs)
    assert round(f / 1e9, 2) == flops_g and round(a / 1e6, 2) == acts_m


def test_benchmark_cli_writes_the_json_schema(tmp_path):
    from rlfn_arch.deploy.efficiency import SCHEMA_KEYS
    out = tmp_path / 'b.json'
    proc = run_module('rlfn_arch.benchmark', '--preset', 'rlfn_ntire', '--size', 32, 32, '--runs', 2, '--warmup', 1,
                      '--threads', 1, '--json', out)
    assert 'rlfn_ntire' in proc.stdout and 'hardware:' in proc.stdout
    rows = json.loads(out.read_text())
    assert set(SCHEMA_KEYS) <= set(rows[0])
    r = rows[0]
    assert r['params'] == 317_218 and r['convs'] == 39 and r['runtime_ms'] > 0 and r['threads'] == 1
    assert r['input'] == '1x3x32x32' and r['peak_memory_MB'] > 0


def test_fast_path_equals_eager():
    from rlfn_arch.deploy.fast import optimize_for_inference
    torch.manual_seed(0)
    net = RLFN(upscale=4, feature_channels=16, num_blocks=2).eval()
    for fast in (optimize_for_inference(net, precision='fp32'), optimize_for_inference(net, 'fp32', compile=True)):
        for hw in [(17, 23), (7, 9)]:  # each new shape compiles (seconds); 7x9 takes the padded path
            x = torch.rand(2, 3, *hw)
            with torch.no_grad():
                ref = net(x)
            y = fast(x)
            assert y.dtype == torch.float32 and y.is_contiguous()
            assert (y - ref).abs().max().item() <= 1e-5, hw


def test_bf16_fast_path_is_close_to_fp32_and_returns_fp32():
    from rlfn_arch.deploy.fast import optimize_for_inference
    torch.manual_seed(0)
    net = RLFN(upscale=2, feature_channels=16, num_blocks=2).eval()
    x = torch.rand(1, 3, 24, 20)
    with torch.no_grad():
        ref = net(x)
    fast = optimize_for_inference(net, precision='bf16')
    y = fast(x)
    assert fast.precision == 'bf16' and y.dtype == torch.float32 and y.shape == ref.shape
    # bf16 keeps 8 mantissa bits: a relative error of ~0.4% per operation, a few 1e-3 over the network
    assert (y - ref).abs().mean().item() < 5e-3 and not torch.equal(y, ref)


def test_onnx_export_round_trip_on_odd_sizes(tmp_path):
    from rlfn_arch.deploy.onnx import check_onnx, export_onnx
    torch.manual_seed(0)
    net = RLFN(upscale=3, feature_channels=8, num_blocks=1).eval()
    path = export_onnx(net, str(tmp_path / 'm.onnx'))
    diffs = check_onnx(net, path, sizes=[(15, 15), (17, 23), (31, 16)], batch=2)
    assert max(d for _, _, d in diffs) <= 1e-4


def test_export_a_checkpoint_trained_by_our_trainer(tmp_path):
    import yaml

    yml, exp = tiny_options(tmp_path, stage_iters=(2, 1, 1))
    opt = yaml.safe_load(yml.read_text())
    opt['stages'] = opt['stages'][:1]
    yml.write_text(yaml.safe_dump(opt, sort_keys=False))
    run_module('rlfn_arch.train', '-opt', yml)
    proc = run_module('rlfn_arch.export', '--model_path', exp / 'net_g_final.pth', '--output', tmp_path / 'm.onnx')
    assert 'check passed' in proc.stdout and 'at 256x256' in proc.stdout and 'opset 17' in proc.stdout


def test_int8_runs_and_stays_within_a_psnr_bound(tmp_path):
    import onnxruntime as ort

    from rlfn_arch.deploy.quantize import quantize_calibrated
    torch.manual_seed(0)
    net = RLFN(upscale=2, feature_channels=8, num_blocks=1).eval()
    rng = np.random.default_rng(0)
    smooth = [cv2.resize(rng.random((6, 6, 3)).astype(np.float32), (32, 32)).transpose(2, 0, 1) for _ in range(6)]
    int8 = quantize_calibrated(net, str(tmp_path / 'int8.onnx'), smooth[:4])
    sess = ort.InferenceSession(int8, providers=['CPUExecutionProvider'])
    x = smooth[5][None]
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    got = sess.run(None, {'lq': x})[0]
    mse = float(((got - ref) ** 2).mean())
    # stated bound: int8 output within 30 dB PSNR of fp32 (the [0,1] range) on this smooth fixture
    assert 10 * np.log10(1 / max(mse, 1e-12)) >= 30
    from rlfn_arch.deploy.quantize import int8_weight_bits_onnx
    seven = quantize_calibrated(net, str(tmp_path / 'int7.onnx'), smooth[:4], weight_bits=7)
    assert (int8_weight_bits_onnx(int8), int8_weight_bits_onnx(seven)) == (8, 7)  # --weight_bits 7: [-64, 64]


def test_compare_writes_labelled_columns():
    from rlfn_arch.compare import compare_one
    torch.manual_seed(0)
    net = RLFN(upscale=2, feature_channels=8, num_blocks=1).eval()
    hr = _img(64, 64, 3)
    from rlfn_arch.data.matlab_resize import bicubic_lr
    lr = bicubic_lr(hr, 2)
    img, psnr = compare_one(hr, lr, 2, [('RLFN', net, torch.device('cpu'))], size=32, zoom=2)
    assert set(psnr) == {'bicubic', 'RLFN'}
    assert img.shape[0] == 32 * 2 + 28 and img.shape[1] == 3 * 64 + 2 * 4  # bicubic | RLFN | HR


def test_export_cli_with_fp16(tmp_path):
    import onnxruntime as ort
    torch.manual_seed(0)
    net = RLFN(upscale=2, feature_channels=8, num_blocks=1)
    ckpt = tmp_path / 'n.pth'
    torch.save({'params': net.state_dict()}, ckpt)
    proc = run_module('rlfn_arch.export', '--model_path', ckpt, '--output', tmp_path / 'n.onnx', '--fp16')
    assert 'check passed' in proc.stdout and (tmp_path / 'n_fp16.onnx').is_file()
    x = np.random.default_rng(0).random((1, 3, 20, 24)).astype(np.float32)
    y = ort.InferenceSession(str(tmp_path / 'n_fp16.onnx'), providers=['CPUExecutionProvider']).run(None, {'lq': x})[0]
    with torch.no_grad():
        ref = net.eval()(torch.from_numpy(x)).numpy()
    assert y.dtype == np.float32 and np.abs(y - ref).max() < 1e-2  # fp16 rounding
