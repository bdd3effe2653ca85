import glob
import os

import cv2
import numpy as np
import pytest
from helpers import make_pairs, run_module, shared_path

from rlfn_arch.data import builders
from rlfn_arch.data.checks import check_paired_folders
from rlfn_arch.data.image_io import ImageReadError, read_image
from rlfn_arch.data.matlab_resize import bicubic_lr


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_bicubic_reproduces_matlab_set5_bit_exactly(scale, tmp_path):
    hr = shared_path('datasets', 'Set5', 'HR')
    run_module('rlfn_arch.prepare', 'bicubic', '--hr', hr, '--output', tmp_path, '--scales', scale)
    names = sorted(os.listdir(hr))
    assert len(names) == 5
    for n in names:
        stem = os.path.splitext(n)[0]
        ours = cv2.imread(str(tmp_path / f'X{scale}' / f'{stem}x{scale}.png'), cv2.IMREAD_UNCHANGED)
        ref = cv2.imread(shared_path('datasets', 'Set5', 'LR_bicubic', f'X{scale}', f'{stem}x{scale}.png'),
                         cv2.IMREAD_UNCHANGED)
        assert ours.shape == ref.shape and np.array_equal(ours, ref), n


def test_basicsr_imresize_is_not_bit_exact_which_is_why_we_rewrote_it():
    from basicsr.utils.matlab_functions import imresize
    hr = cv2.imread(shared_path('datasets', 'Set5', 'HR', 'baby.png'))
    ref = cv2.imread(shared_path('datasets', 'Set5', 'LR_bicubic', 'X4', 'babyx4.png'))
    theirs = (np.clip(imresize(hr.astype(np.float64) / 255, 1 / 4), 0, 1) * 255).round().astype(np.uint8)
    assert (theirs != ref).mean() > 0.01
    assert np.array_equal(bicubic_lr(hr, 4), ref)


def test_lmdb_roundtrip_through_basicsr_paired_dataset(tmp_path):
    from basicsr.data.paired_image_dataset import PairedImageDataset
    hr_dir, lr_dir = make_pairs(str(tmp_path / 'data'), n=3, lr_tmpl='{}')
    builders.build_lmdb(hr_dir, str(tmp_path / 'hr.lmdb'), workers=1)
    builders.build_lmdb(lr_dir, str(tmp_path / 'lr.lmdb'), workers=2)
    ds = PairedImageDataset({'dataroot_gt': str(tmp_path / 'hr.lmdb'), 'dataroot_lq': str(tmp_path / 'lr.lmdb'),
                             'io_backend': {'type': 'lmdb'}, 'phase': 'val', 'scale': 4})
    assert len(ds) == 3
    for i in range(3):
        item = ds[i]
        key = os.path.basename(item['gt_path'])
        gt = cv2.imread(os.path.join(hr_dir, key + '.png'))
        got = (item['gt'].numpy().transpose(1, 2, 0)[:, :, ::-1] * 255).round().astype(np.uint8)
        assert np.array_equal(got, gt)
        lq = cv2.imread(os.path.join(lr_dir, key + '.png'))
        got = (item['lq'].numpy().transpose(1, 2, 0)[:, :, ::-1] * 255).round().astype(np.uint8)
        assert np.array_equal(got, lq)


def test_lmdb_refuses_to_overwrite_and_replaces_only_when_asked(tmp_path):
    hr_dir, _ = make_pairs(str(tmp_path / 'data'), n=2)
    out = str(tmp_path / 'x.lmdb')
    builders.build_lmdb(hr_dir, out, workers=1)
    with pytest.raises(FileExistsError, match='x.lmdb already exists; pass --overwrite'):
        builders.build_lmdb(hr_dir, out, workers=1)
    proc = run_module('rlfn_arch.prepare', 'lmdb', '--input', hr_dir, '--output', out, check=False)
    assert proc.returncode == 2 and '--overwrite' in proc.stderr
    builders.build_lmdb(hr_dir, out, overwrite=True, workers=1)
    assert os.path.isfile(os.path.join(out, 'data.mdb'))


def test_interrupted_lmdb_build_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    from basicsr.utils import lmdb_util
    hr_dir, _ = make_pairs(str(tmp_path / 'data'), n=4)
    calls = {'n': 0}
    real = lmdb_util.read_img_worker

    def dying(*a, **k):
        calls['n'] += 1
        if calls['n'] == 3:
            raise KeyboardInterrupt('simulated kill')
        return real(*a, **k)

    monkeypatch.setattr(lmdb_util, 'read_img_worker', dying)
    with pytest.raises(KeyboardInterrupt):
        builders.build_lmdb(hr_dir, str(tmp_path / 'out.lmdb'), workers=1)
    assert not (tmp_path / 'out.lmdb').exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith('.lmdb')]
    monkeypatch.setattr(lmdb_util, 'read_img_worker', real)
    builders.build_lmdb(hr_dir, str(tmp_path / 'out.lmdb'), workers=1)  # a rerun is not blocked
    assert (tmp_path / 'out.lmdb' / 'meta_info.txt').read_text().count('\n') == 4


@pytest.mark.parametrize('length,crop,step,thresh', [(100, 48, 24, 8), (481, 480, 240, 48), (1000, 480, 240, 48),
                                                      (30, 48, 24, 8), (529, 480, 240, 48)])
def test_crop_starts_cover_every_pixel(length, crop, step, thresh):
    covered = np.zeros(length, bool)
    for s in builders.crop_starts(length, crop, step, thresh):
        assert 0 <= s and s + min(crop, length) <= length
        covered[s:s + crop] = True
    assert covered.all()


def test_subimages_cover_every_hr_pixel_and_match_lr(tmp_path):
    hr_dir, lr_dir = make_pairs(str(tmp_path / 'data'), n=2, size=(100, 76), scale=4)
    out, lr_out = tmp_path / 'sub', tmp_path / 'lrsub'
    summ = builders.make_subimages(hr_dir, str(out), crop=48, step=24, thresh=8, lr_dir=lr_dir, lr_out=str(lr_out),
                                 scale=4, workers=1)
    assert not summ.skipped and not summ.failed
    for n in ('img0', 'img1'):
        hr = cv2.imread(os.path.join(hr_dir, n + '.png'))
        subs = sorted(glob.glob(str(out / f'{n}_s*.png')))
        assert len(subs) > 1
        # every HR pixel must appear in some sub-image: rebuild the image from the crops
        rebuilt, mask = np.zeros_like(hr), np.zeros(hr.shape[:2], bool)
        ys = builders.crop_starts(hr.shape[0], 48, 24, 8)
        xs = builders.crop_starts(hr.shape[1], 48, 24, 8)
        positions = [(y, x) for y in ys for x in xs]
        assert len(positions) == len(subs)
        for (y, x), p in zip(positions, subs):
            img = cv2.imread(p)
            rebuilt[y:y + 48, x:x + 48] = img
            mask[y:y + 48, x:x + 48] = True
            lr = cv2.imread(str(lr_out / os.path.basename(p)))
            assert lr.shape == (12, 12, 3)
        assert mask.all() and np.array_equal(rebuilt, hr)


def test_bad_inputs_each_have_a_documented_behaviour(tmp_path):
    hr = tmp_path / 'HR'
    hr.mkdir()
    good = (np.random.default_rng(0).random((30, 30, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(hr / 'good.png'), good)
    cv2.imwrite(str(hr / 'gray.png'), good[:, :, 0])
    cv2.imwrite(str(hr / 'rgba.png'), np.dstack([good, np.full((30, 30), 128, np.uint8)]))
    cv2.imwrite(str(hr / 'deep.png'), good.astype(np.uint16) * 257)
    cv2.imwrite(str(hr / 'odd.png'), good[:29, :31])
    (hr / 'zero.png').write_bytes(b'')
    (hr / 'trunc.png').write_bytes((hr / 'good.png').read_bytes()[:60])
    (hr / 'notes.txt').write_text('not an image')
    (hr / 'fake.jpg').write_text('not a jpeg either')
    summ = builders.make_bicubic_lr(str(hr), str(tmp_path / 'LR'), scales=[2], workers=1)
    failed, skipped = '\n'.join(summ.failed), '\n'.join(summ.skipped)
    for bad in ('zero.png', 'trunc.png', 'fake.jpg'):  # images that cannot be used: failed (exit code 1)
        assert bad in failed and bad not in skipped
    assert 'notes.txt' in skipped and 'notes.txt' not in failed  # not an image: skipped, not a failure
    out = tmp_path / 'LR' / 'X2'
    assert cv2.imread(str(out / 'grayx2.png'), cv2.IMREAD_UNCHANGED).ndim == 2  # greyscale kept
    assert cv2.imread(str(out / 'rgbax2.png'), cv2.IMREAD_UNCHANGED).shape == (15, 15, 3)  # alpha dropped
    deep = cv2.imread(str(out / 'deepx2.png'), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint8 and np.array_equal(deep, bicubic_lr(good, 2))  # 16-bit -> 8-bit
    assert cv2.imread(str(out / 'oddx2.png')).shape == (14, 15, 3)  # modcropped
    notes = '\n'.join(summ.notes)
    assert 'alpha channel dropped' in notes and '16-bit' in notes and 'modcropped' in notes
    assert not [f for f in os.listdir(out) if 'tmp' in f]


def test_read_image_errors_name_the_file(tmp_path):
    p = tmp_path / 'broken image ü.png'
    p.write_bytes(b'\x89PNG\r\n\x1a\n garbage')
    with pytest.raises(ImageReadError, match='broken image ü.png'):
        read_image(str(p))


def test_paired_check_lists_every_mismatch(tmp_path):
    hr_dir, lr_dir = make_pairs(str(tmp_path / 'd'), n=4, scale=2, size=(40, 32))
    os.remove(os.path.join(lr_dir, 'img1x2.png'))
    cv2.imwrite(os.path.join(lr_dir, 'img2x2.png'), np.zeros((10, 10, 3), np.uint8))
    cv2.imwrite(os.path.join(lr_dir, 'strayx2.png'), np.zeros((16, 20, 3), np.uint8))
    problems, n = check_paired_folders(hr_dir, lr_dir, 2, '{}x2')
    text = '\n'.join(problems)
    assert n == 4 and len(problems) == 3
    assert 'no LR image img1x2.png' in text and 'img2x2.png: LR 10x10 does not match' in text
    assert 'strayx2.png: LR image without an HR partner' in text
    proc = run_module('rlfn_arch.prepare', 'check', '--hr', hr_dir, '--lr', lr_dir, '--scale', 2, check=False)
    assert proc.returncode == 1 and '3 problem(s)' in proc.stdout


def test_df2k_on_a_fake_div2k_folder(tmp_path):
    div2k = tmp_path / 'DIV2K' / 'DIV2K_train_HR'
    flickr = tmp_path / 'Flickr2K' / 'Flickr2K_HR'
    for folder, names in ((div2k, ['0001', '0002']), (flickr, ['000001'])):
        folder.mkdir(parents=True)
        for n in names:
            img = (np.random.default_rng(1).random((70, 101, 3)) * 255).astype(np.uint8)
            cv2.imwrite(str(folder / f'{n}.png'), img)
    out = tmp_path / 'DF2K'
    run_module('rlfn_arch.prepare', 'df2k', '--div2k', tmp_path / 'DIV2K', '--flickr2k', tmp_path / 'Flickr2K',
               '--output', out, '--scales', 2, 4, '--workers', 1)
    from rlfn_arch.data.checks import check_paired_lmdb
    for s in (2, 4):
        problems, n = check_paired_lmdb(str(out / 'DF2K_HR_sub.lmdb'), str(out / f'DF2K_LR_bicubic_X{s}_sub.lmdb'), s)
        assert not problems and n == 3  # images smaller than the crop are kept whole (one sub-image each)


def test_sample_dataset_is_deterministic(tmp_path):
    a, b = tmp_path / 'a', tmp_path / 'b'
    builders.build_sample_dataset(str(a), workers=2)
    builders.build_sample_dataset(str(b), workers=1)
    assert builders.sample_ready(str(a))
    files = sorted(os.path.relpath(p, a) for p in glob.glob(str(a / '**' / '*.png'), recursive=True))
    assert len(files) > 20
    for f in files:
        ia, ib = cv2.imread(str(a / f), cv2.IMREAD_UNCHANGED), cv2.imread(str(b / f), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(ia, ib)
    assert (a / 'train' / 'HR_sub.lmdb' / 'meta_info.txt').read_text() == \
        (b / 'train' / 'HR_sub.lmdb' / 'meta_info.txt').read_text()
    val = {os.path.splitext(n)[0] for n in os.listdir(a / 'val' / 'HR')}
    train_keys = (a / 'train' / 'HR_sub.lmdb' / 'meta_info.txt').read_text()
    assert val and not any(v in train_keys for v in val)  # held out
