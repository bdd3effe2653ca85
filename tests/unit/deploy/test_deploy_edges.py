"""Inference, export and int8 edges, and ``precision: auto`` never picking an
emulated bf16 path; through ``main(argv)`` in this process."""
import os

import cv2
import numpy as np
import pytest
import torch
from helpers import random_images, run_module, snapshot, tiny_ckpt
from PIL import Image, ImageOps


def test_infer_into_a_folder_inside_its_input_runs_twice(tmp_path):
    ckpt = tiny_ckpt(tmp_path / 'net.pth')
    random_images(tmp_path / 'D', [(20, 16), (18, 18)])
    for again in ([], ['--overwrite']):  # the second run replaces its own outputs, with --overwrite
        proc = run_module('rlfn_arch.infer', '-i', tmp_path / 'D', '-o', tmp_path / 'D' / 'out', '--model_path', ckpt,
                          *again)
        assert '2 image(s) upscaled' in proc.stdout and '0 failed' in proc.stdout
    assert sorted(os.listdir(tmp_path / 'D' / 'out')) == ['im0.png', 'im1.png']


@pytest.mark.parametrize('orientation', range(1, 9))
def test_exif_orientation_is_applied_as_viewers_apply_it(tmp_path, orientation):
    from rlfn_arch.data.image_io import read_unchanged
    rng = np.random.default_rng(orientation)
    rgb = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = str(tmp_path / 'photo.png')
    Image.fromarray(rgb).save(path, exif=exif)
    with Image.open(path) as im:  # PIL's own transpose is the reference
        expected = np.asarray(ImageOps.exif_transpose(im).convert('RGB'))
    got = cv2.cvtColor(read_unchanged(path), cv2.COLOR_BGR2RGB)
    assert got.shape == expected.shape and np.array_equal(got, expected)


def test_infer_output_shows_the_photo_the_way_the_input_was_seen(tmp_path):
    ckpt = tiny_ckpt(tmp_path / 'net.pth')
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed portrait
    os.makedirs(tmp_path / 'in')
    Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(tmp_path / 'in' / 'p.png', exif=exif)
    run_module('rlfn_arch.infer', '-i', tmp_path / 'in', '-o', tmp_path / 'out', '--model_path', ckpt)
    assert cv2.imread(str(tmp_path / 'out' / 'p.png')).shape == (48, 32, 3)


def test_quantize_refuses_unreadable_and_nonfinite_weights_cleanly(tmp_path):
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(os.urandom(300))
    nan = tiny_ckpt(tmp_path / 'nan.pth', nan=True)
    for ckpt, words in ((garbage, str(garbage)), (nan, 'non-finite')):
        proc = run_module('rlfn_arch.quantize', '--model_path', ckpt, '--output', tmp_path / 'q.onnx', check=False)
        assert proc.returncode == 2 and words in proc.stderr and 'Traceback' not in proc.stderr
        assert not (tmp_path / 'q.onnx').exists()


def test_export_that_fails_its_check_leaves_nothing_at_output(tmp_path):
    ckpt = tiny_ckpt(tmp_path / 'net.pth')
    (tmp_path / 'm.onnx').write_bytes(b'the previous model')
    proc = run_module('rlfn_arch.export', '--model_path', ckpt, '--output', tmp_path / 'm.onnx', '--atol', '0',
                      '--overwrite', check=False)
    if proc.returncode == 0:
        pytest.skip('onnxruntime matched PyTorch bit for bit here; the failing check cannot be provoked')
    assert proc.returncode == 1 and 'was not written' in proc.stderr
    assert (tmp_path / 'm.onnx').read_bytes() == b'the previous model'
    assert sorted(os.listdir(tmp_path)) == ['m.onnx', 'net.pth']  # no temporary left


def test_export_writes_only_a_checked_model(tmp_path):
    ckpt = tiny_ckpt(tmp_path / 'net.pth')
    before = snapshot(tmp_path)
    run_module('rlfn_arch.export', '--model_path', ckpt, '--output', tmp_path / 'm.onnx')
    assert sorted(set(snapshot(tmp_path)) - set(before)) == ['m.onnx']


# --------------------------------------------------------------------------- precision: auto
@pytest.mark.parametrize('flags,onednn,expected', [
    ({'avx2', 'avx512f', 'avx512_core'}, True, 'fp32'),  # Skylake-SP .. Ice Lake: oneDNN says yes, bf16 emulated
    ({'avx2'}, True, 'fp32'),
    ({'avx2', 'avx512f', 'avx512_bf16'}, True, 'bf16'),  # Cooper Lake, Zen 4
    ({'avx512f', 'amx_bf16', 'amx_tile'}, True, 'bf16'),  # Sapphire Rapids and later
    ({'avx512f', 'avx512_bf16'}, False, 'fp32'),  # oneDNN may veto
])
def test_auto_precision_follows_the_instruction_set_and_onednn_can_only_veto(monkeypatch, flags, onednn, expected):
    from rlfn_arch.utils import precision
    monkeypatch.setattr(precision, 'cpu_flags', lambda: set(flags))
    monkeypatch.setattr(torch.ops.mkldnn, '_is_mkldnn_bf16_supported', lambda: onednn)
    assert precision.resolve_precision('auto', 'cpu') == expected
    assert precision.native_bf16('cpu') == (expected == 'bf16')


@pytest.mark.parametrize('cap, int8, bf16, precision', [
    (None, ['AMX-INT8', 'AVX512-VNNI', 'AVX-VNNI'], ['AMX-BF16', 'AVX512_BF16'], 'bf16'),
    ('all', ['AMX-INT8', 'AVX512-VNNI', 'AVX-VNNI'], ['AMX-BF16', 'AVX512_BF16'], 'bf16'),
    ('AVX512_CORE_BF16', ['AVX512-VNNI'], ['AVX512_BF16'], 'bf16'),  # Cooper Lake (AVX-VNNI is an AVX2 ISA)
    ('avx512_core_vnni', ['AVX512-VNNI'], [], 'fp32'),  # Cascade Lake, Ice Lake
    ('AVX2_VNNI', ['AVX-VNNI'], [], 'fp32'),  # Alder Lake
    ('AVX2', [], [], 'fp32'),
])
def test_an_onednn_isa_cap_removes_the_instruction_sets_it_forbids(monkeypatch, cap, int8, bf16, precision):
    """ONEDNN_MAX_CPU_ISA keeps PyTorch's and OpenVINO's kernels below a level: a fast path must not count on
    what is above it (a Sapphire Rapids capped to AVX512_CORE_VNNI computes bf16 emulated)."""
    from rlfn_arch.utils import precision as prec
    sapphire_rapids = 'fpu sse4_1 avx avx2 avx_vnni avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8'
    monkeypatch.setattr(prec, 'cpuinfo_field', lambda name: sapphire_rapids)
    monkeypatch.setattr(torch.ops.mkldnn, '_is_mkldnn_bf16_supported', lambda: True)
    if cap is None:
        monkeypatch.delenv('ONEDNN_MAX_CPU_ISA', raising=False)
    else:
        monkeypatch.setenv('ONEDNN_MAX_CPU_ISA', cap)
    isa = prec.cpu_instruction_sets()
    assert (isa['int8'], isa['bf16']) == (int8, bf16)
    assert isa['simd'] == ('AVX2' if cap in ('AVX2', 'AVX2_VNNI') else 'AVX-512')
    assert prec.resolve_precision('auto', 'cpu') == precision
    assert prec.int8_saturates() == (not int8) and prec.int8_saturates(capped=False) is False  # ORT: not capped


@pytest.mark.parametrize('native', [True, False])
def test_an_onnx_models_float_precision_follows_the_one_rule_where_the_runtime_can(monkeypatch, native):
    """OpenVINO follows ``--precision`` (auto = bf16 where native, as PyTorch does); ONNX Runtime runs fp32."""
    from rlfn_arch.deploy.onnx import onnx_precision
    from rlfn_arch.utils import precision
    monkeypatch.setattr(precision, 'native_bf16', lambda device: native)
    assert onnx_precision('auto', 'openvino') == ('bf16' if native else 'fp32')
    assert onnx_precision('fp32', 'openvino') == 'fp32' and onnx_precision('bf16', 'openvino') == 'bf16'
    assert {onnx_precision(p, 'onnxruntime') for p in ('auto', 'fp32', 'bf16')} == {'fp32'}
    with pytest.raises(ValueError, match='fp16'):
        onnx_precision('fp16', 'openvino')
