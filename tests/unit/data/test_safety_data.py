"""Hostile inputs never lose data: dataset preparation and checks.
(The hostile case on tiny data, the real entry point, the documented exit code and message, and every
file the run did not create left as it was: the pattern of all the safety tests.)"""
import os

from helpers import lmdb_options, random_images, run_module


def test_lmdb_keys_survive_basicsr_key_derivation_and_non_ascii_names(tmp_path):
    from basicsr.data.data_util import paired_paths_from_lmdb
    names = ['a.b.png', 'ünï côdé.png']
    yml, hr_db, lr_db = lmdb_options(tmp_path, names)
    keys = {p['gt_path'] for p in paired_paths_from_lmdb([str(lr_db), str(hr_db)], ['lq', 'gt'])}
    assert {'a_b', '_n__c_d_'} <= keys and len(keys) == 6
    proc = run_module('rlfn_arch.prepare', 'check', '--hr', hr_db, '--lr', lr_db, '--scale', '4', '--deep')
    assert '6 HR keys checked' in proc.stdout and '0 problem(s)' in proc.stdout
    run_module('rlfn_arch.train', '-opt', yml)  # basicsr's LMDB reader finds every key
    # two names that would share a key are refused, and nothing is written
    d = tmp_path / 'clash'
    random_images(d, [(16, 16), (16, 16)])
    os.rename(d / 'im0.png', d / 'x.y.png')
    os.rename(d / 'im1.png', d / 'x_y.png')
    proc = run_module('rlfn_arch.prepare', 'lmdb', '--input', d, '--output', tmp_path / 'clash.lmdb', check=False)
    assert proc.returncode == 2 and 'x.y.png' in proc.stderr and 'x_y.png' in proc.stderr
    assert not (tmp_path / 'clash.lmdb').exists()


def test_prepare_check_on_lmdbs_checks_them_and_deep_finds_a_corrupt_value(tmp_path):
    import lmdb
    _, hr_db, lr_db = lmdb_options(tmp_path)
    with lmdb.open(str(lr_db), map_size=1 << 26) as env, env.begin(write=True) as txn:
        txn.put(b'img1', b'\x89PNG\r\n\x1a\n not really')
    proc = run_module('rlfn_arch.prepare', 'check', '--hr', hr_db, '--lr', lr_db, '--scale', '4', check=False)
    assert proc.returncode == 0 and '6 HR keys checked' in proc.stdout
    proc = run_module('rlfn_arch.prepare', 'check', '--hr', hr_db, '--lr', lr_db, '--scale', '4', '--deep',
                      check=False)
    assert proc.returncode == 1 and 'key img1' in proc.stdout
    proc = run_module('rlfn_arch.prepare', 'check', '--hr', hr_db, '--lr', tmp_path / 'data' / 'HR', '--scale', '4',
                      check=False)
    assert proc.returncode == 2 and 'two folders or two LMDBs' in proc.stderr


# ----------------------------------------------------------------------------------------- prepare
def test_prepare_exit_codes_and_bad_paths(tmp_path):
    random_images(tmp_path / 'hr', [(24, 24), (24, 24)])
    (tmp_path / 'hr' / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\nnope')
    proc = run_module('rlfn_arch.prepare', 'bicubic', '--hr', tmp_path / 'hr', '--output', tmp_path / 'lr',
                      '--scales', '2', '--workers', '1', check=False)
    assert proc.returncode == 1 and '1 input(s) failed' in proc.stderr and 'broken.png' in proc.stdout
    assert sorted(os.listdir(tmp_path / 'lr' / 'X2')) == ['im0x2.png', 'im1x2.png']
    (tmp_path / 'afile').write_text('x')
    for args in (['bicubic', '--hr', tmp_path / 'hr', '--output', tmp_path / 'afile', '--scales', '2'],
                 ['lmdb', '--input', tmp_path / 'nope', '--output', tmp_path / 'n.lmdb'],
                 ['subimages', '--input', tmp_path / 'hr', '--output', tmp_path / 'afile']):
        proc = run_module('rlfn_arch.prepare', *args, '--workers', '1', check=False)
        assert proc.returncode in (1, 2) and 'Traceback' not in proc.stderr, (args, proc.stderr)
    assert (tmp_path / 'afile').read_text() == 'x'
    empty = tmp_path / 'bad_only'
    empty.mkdir()
    (empty / 'z.png').write_bytes(b'')
    proc = run_module('rlfn_arch.prepare', 'lmdb', '--input', empty, '--output', tmp_path / 'z.lmdb', check=False)
    assert proc.returncode == 2 and 'no readable images' in proc.stderr
