"""Hostile files through what dataset preparation, the LMDB checks and ``infer`` accept.

Seeded hypothesis runs (derandomized, so CI sees the same cases every time). Each case must end in a
result or a clear, file-naming error, never a hang, an unexpected exception or a partial output.
"""
import os
import struct
import zlib

import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlfn_arch.data import builders
from rlfn_arch.data.checks import check_paired_lmdb
from rlfn_arch.data.image_io import ImageReadError, read_image

FUZZ = settings(max_examples=60, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _png(w, h, payload=b''):
    def chunk(tag, data):
        return struct.pack('>I', len(data)) + tag + data + struct.pack('>I', zlib.crc32(tag + data) & 0xffffffff)
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0)) + payload


def _valid(kind, h, w):
    img = (np.random.default_rng(h * 31 + w).random((h, w, 3)) * 255).astype(np.uint8)
    return cv2.imencode(kind, img)[1].tobytes()


blobs = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda k, h, w, cut: _valid(k, h, w)[:cut], st.sampled_from(['.png', '.jpg', '.bmp']),
              st.integers(1, 40), st.integers(1, 40), st.integers(0, 400)),
    st.builds(lambda k, h, w: _valid(k, h, w), st.sampled_from(['.png', '.jpg']), st.integers(1, 20),
              st.integers(1, 20)),
    st.builds(_png, st.integers(20000, 2**31 - 1), st.integers(20000, 2**31 - 1)),
)
names = st.text(alphabet=st.characters(blacklist_categories=['Cs', 'Cc'], blacklist_characters='/\\\x00'),
                min_size=1, max_size=12).map(lambda s: s.strip().strip('.') or 'x')
exts = st.sampled_from(['.png', '.jpg', '.PNG', '.txt', '.jpeg', '', '.bmp'])


def _read_hostile(tmp_path_factory, what, reader, blob, name, ext):
    """Write ``blob`` as ``name+ext`` and read it: (folder, path, image or None). A refusal must be an
    ImageReadError that names the file."""
    d = tmp_path_factory.mktemp(what)
    path = d / (name + ext)
    path.write_bytes(blob)
    try:
        return d, path, reader(str(path))
    except ImageReadError as e:
        assert name in str(e)
        return d, path, None


@FUZZ
@given(blob=blobs, name=names, ext=exts)
def test_read_image_never_crashes(tmp_path_factory, blob, name, ext):
    _, _, img = _read_hostile(tmp_path_factory, 'read_image', read_image, blob, name, ext)
    if img is not None:
        assert img.dtype == np.uint8 and img.ndim in (2, 3) and img.size > 0


@settings(max_examples=25, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(files=st.lists(st.tuples(names, exts, blobs), min_size=1, max_size=5, unique_by=lambda t: (t[0] + t[1]).lower()))
def test_prepare_bicubic_on_hostile_folders(tmp_path_factory, files):
    root = tmp_path_factory.mktemp('hostile')
    hr, out = root / 'HR', root / 'LR'
    hr.mkdir()
    for n, e, b in files:
        (hr / (n + e)).write_bytes(b)
    os.symlink('loop_b.png', hr / 'loop_a.png')
    os.symlink('loop_a.png', hr / 'loop_b.png')
    summ = builders.make_bicubic_lr(str(hr), str(out), scales=[2], workers=1)
    assert any('loop_a.png' in s for s in summ.failed)
    written = sorted(os.listdir(out / 'X2')) if (out / 'X2').exists() else []
    assert not [w for w in written if 'tmp' in w]  # no partial file left
    for w in written:
        assert cv2.imread(str(out / 'X2' / w)) is not None  # every written file is complete
    assert summ.images == len(os.listdir(hr)) - sum(1 for f in os.listdir(hr) if not f.lower().endswith(
        ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')) or f.startswith('.'))


@FUZZ
@given(meta=st.text(max_size=200))
def test_lmdb_meta_info_checks_never_crash(tmp_path_factory, meta):
    root = tmp_path_factory.mktemp('lmdb')
    for name in ('gt.lmdb', 'lq.lmdb'):
        (root / name).mkdir()
        (root / name / 'data.mdb').write_bytes(b'')
        (root / name / 'meta_info.txt').write_text(meta, encoding='utf-8', errors='replace')
    problems, n = check_paired_lmdb(str(root / 'gt.lmdb'), str(root / 'lq.lmdb'), 2)
    assert isinstance(problems, list) and all(isinstance(p, str) for p in problems)


@pytest.fixture(scope='module')
def upscaler():
    from rlfn_arch.archs import RLFN
    from rlfn_arch.deploy.upscaler import Upscaler
    torch.manual_seed(0)
    return Upscaler(RLFN(upscale=2, feature_channels=4, num_blocks=1).eval(), 2, torch.device('cpu'))


@FUZZ
@given(blob=blobs, name=names, ext=exts)
def test_infer_reader_and_writer_on_hostile_files(tmp_path_factory, upscaler, blob, name, ext):
    from rlfn_arch.data.image_io import read_unchanged, write_image
    d, path, img = _read_hostile(tmp_path_factory, 'infer', read_unchanged, blob, name, ext)
    if img is None:
        return
    out = upscaler.upscale(img)
    assert out.shape[:2] == (img.shape[0] * 2, img.shape[1] * 2) and out.dtype == img.dtype
    write_image(str(d / 'out.png'), out)
    assert sorted(os.listdir(d)) == sorted([path.name, 'out.png'])


@FUZZ
@given(name=st.text(max_size=40))
def test_any_name_that_passes_the_check_stays_inside_the_experiments_folder(tmp_path_factory, name):
    """Experiment/stage names become folder names: whatever a user (or attacker) writes, a name the check
    accepts is a single folder strictly inside experiments/, and everything else is refused."""
    from rlfn_arch.utils.fs import is_inside
    from rlfn_arch.utils.options import name_problem
    root = tmp_path_factory.mktemp('names') / 'experiments'
    problem = name_problem(name)
    if problem is None:
        assert is_inside(root / name, root, follow=False) and os.sep not in name and name not in ('.', '..')
        assert not name.startswith('.')
    else:
        assert repr(name) in problem or 'must be a string' in problem


@FUZZ
@given(stems=st.lists(st.text(alphabet=st.characters(blacklist_categories=['Cs'], blacklist_characters='/\x00'),
                              min_size=1, max_size=10), min_size=1, max_size=6, unique=True))
def test_lmdb_keys_survive_basicsr_key_derivation_or_are_refused(stems):
    from rlfn_arch.data.builders import PrepareError, lmdb_keys
    from rlfn_arch.data.checks import lmdb_key
    names, notes = [s + '.png' for s in stems], []
    try:
        keys = lmdb_keys(names, 'folder', notes)
    except PrepareError as e:  # two names collide: both named
        assert 'would both be stored under the key' in str(e)
        return
    assert len(set(keys)) == len(keys) == len(names)
    for k in keys:
        assert k.isascii() and lmdb_key(f'{k}.png (4,4,3) 1') == k and ' ' not in k
