"""Dataset preparation refuses its own input and existing files, through ``main(argv)``."""
import os

import cv2
import numpy as np
from helpers import lmdb_options, run_module, snapshot, train_main


def _smooth(path, w, h, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 20, w // 20, 3)).astype(np.uint8)
    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(path), img)


def test_subimages_into_its_own_input_or_over_existing_files_is_refused(tmp_path):
    d = tmp_path / 'D'
    d.mkdir()
    _smooth(d / 'a.png', 600, 600)
    _smooth(d / 'a_s001.png', 100, 100, seed=1)  # the user's own file, named like a sub-image
    before = snapshot(d)
    for out in (d, d / 'sub'):
        proc = run_module('rlfn_arch.prepare', 'subimages', '--input', d, '--output', out, '--workers', '1',
                          check=False)
        assert proc.returncode == 2 and 'input' in proc.stderr and 'Traceback' not in proc.stderr
        assert snapshot(d) == before and not (d / 'sub').exists()
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'a_s001.png').write_bytes((d / 'a_s001.png').read_bytes())
    kept = snapshot(out)
    proc = run_module('rlfn_arch.prepare', 'subimages', '--input', d, '--output', out, '--crop', '480',
                      '--step', '240', '--workers', '1', check=False)
    # a.png gives 4 crops (a_s001-a_s004) and a_s001.png its own a_s001_s001; one of them exists
    assert proc.returncode == 2 and '1 existing file(s) would be replaced' in proc.stderr
    assert '--overwrite' in proc.stderr
    assert snapshot(out) == kept
    run_module('rlfn_arch.prepare', 'subimages', '--input', d, '--output', out, '--workers', '1', '--overwrite')
    assert cv2.imread(str(out / 'a_s001.png')).shape == (480, 480, 3)


def test_bicubic_into_its_own_input_or_over_existing_files_is_refused(tmp_path):
    d = tmp_path / 'HR'
    d.mkdir()
    _smooth(d / 'a.png', 40, 40)
    proc = run_module('rlfn_arch.prepare', 'bicubic', '--hr', d, '--output', d / 'LR', '--scales', '2',
                      '--workers', '1', check=False)
    assert proc.returncode == 2 and 'inside the input folder' in proc.stderr and not (d / 'LR').exists()
    lr = tmp_path / 'LR'
    (lr / 'X2').mkdir(parents=True)
    (lr / 'X2' / 'ax2.png').write_bytes(b'mine')
    proc = run_module('rlfn_arch.prepare', 'bicubic', '--hr', d, '--output', lr, '--scales', '2', '--workers', '1',
                      check=False)
    assert proc.returncode == 2 and '1 existing file(s)' in proc.stderr
    assert (lr / 'X2' / 'ax2.png').read_bytes() == b'mine'
    run_module('rlfn_arch.prepare', 'bicubic', '--hr', d, '--output', lr, '--scales', '2', '--workers', '1',
               '--overwrite')
    assert cv2.imread(str(lr / 'X2' / 'ax2.png')).shape == (20, 20, 3)


def test_many_missing_meta_info_keys_are_summarised_with_the_full_list_in_a_file(tmp_path, capsys):
    yml, hr_db, lr_db = lmdb_options(tmp_path)
    for db, shape in ((hr_db, '(80,80,3)'), (lr_db, '(20,20,3)')):
        meta = db / 'meta_info.txt'
        meta.write_text(meta.read_text() + ''.join(f'ghost{i}.png {shape} 1\n' for i in range(300)))
    capsys.readouterr()
    assert train_main('-opt', yml) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) < 30 and '... and ' in err and 'more' in err
    listed = err.split('the full list is in ')[1].split()[0]
    full = open(listed).read().splitlines()
    assert sum('ghost' in line for line in full) == 600 and all('missing from data.mdb' in line for line in full)
    os.unlink(listed)


def test_a_million_line_meta_info_is_not_printed_line_by_line(tmp_path, capsys):
    from rlfn_arch.data.checks import summarize
    lines = [f'problem {i}' for i in range(1_000_000)]
    shown = summarize(lines)
    assert len(shown) == 21 and shown[:20] == lines[:20] and '999,980 more' in shown[-1]
    path = shown[-1].split('the full list is in ')[1]
    assert sum(1 for _ in open(path)) == 1_000_000
    os.unlink(path)


def test_subimages_min_size_leaves_out_images_smaller_than_the_training_patch(tmp_path):
    from helpers import make_pairs
    hr, lr = make_pairs(str(tmp_path / 'd'), n=2, size=(48, 48), scale=3)
    import cv2
    cv2.imwrite(os.path.join(hr, 'small.png'), cv2.imread(os.path.join(hr, 'img0.png'))[:24, :24])
    cv2.imwrite(os.path.join(lr, 'smallx3.png'), cv2.imread(os.path.join(lr, 'img0x3.png'))[:8, :8])
    proc = run_module('rlfn_arch.prepare', 'subimages', '--input', hr, '--output', tmp_path / 'hs', '--crop', '48',
                      '--step', '24', '--thresh', '12', '--lr', lr, '--lr_output', tmp_path / 'ls', '--scale', '3',
                      '--min_size', '30', '--workers', '1')
    assert 'small.png: 24x24 is below --min_size 30' in proc.stdout
    assert sorted(os.listdir(tmp_path / 'hs')) == sorted(os.listdir(tmp_path / 'ls')) == ['img0_s001.png',
                                                                                         'img1_s001.png']
