"""``prepare lmdb`` and ``prepare sample`` with ``--overwrite`` replace only what they made: never a folder they
do not recognise, never a folder holding the input, never a file a user put beside their output."""
import json
import os

from helpers import random_images, run_module, snapshot


def _lmdb(tmp_path, out, *extra, check=True):
    return run_module('rlfn_arch.prepare', 'lmdb', '--input', tmp_path / 'imgs', '--output', out, '--workers', '1',
                      *extra, check=check)


def test_lmdb_overwrite_replaces_its_own_lmdb_only(tmp_path):
    random_images(tmp_path / 'imgs', [(20, 16), (18, 18)])
    out = tmp_path / 'db.lmdb'
    _lmdb(tmp_path, out)
    _lmdb(tmp_path, out, '--overwrite')  # its own: replaced
    assert sorted(os.listdir(out)) == ['data.mdb', 'lock.mdb', 'meta_info.txt']
    users = tmp_path / 'photos.lmdb'  # a folder of the user's that happens to end in .lmdb
    users.mkdir()
    (users / 'holiday.jpg').write_bytes(b'jpeg')
    before = snapshot(users)
    proc = _lmdb(tmp_path, users, '--overwrite', check=False)
    assert proc.returncode == 2 and 'not an LMDB this command wrote' in proc.stderr and 'Traceback' not in proc.stderr
    assert snapshot(users) == before


def test_lmdb_overwrite_never_deletes_the_folder_holding_its_input(tmp_path):
    outer = tmp_path / 'all.lmdb'
    random_images(outer / 'imgs', [(20, 16)])
    before = snapshot(outer)
    proc = run_module('rlfn_arch.prepare', 'lmdb', '--input', outer / 'imgs', '--output', outer, '--workers', '1',
                      '--overwrite', check=False)
    assert proc.returncode == 2 and 'lies inside, the output LMDB' in proc.stderr
    assert snapshot(outer) == before


def _fake_content(out_dir, workers):
    """The sample builder's content step, tiny, listing its files as the real one does."""
    for split in ('train', 'val'):
        os.makedirs(os.path.join(out_dir, split, 'HR'))
        open(os.path.join(out_dir, split, 'HR', 'x.png'), 'wb').write(b'png')
    with open(os.path.join(out_dir, 'sample.json'), 'w') as f:
        json.dump({'version': 2, 'source': 'scikit-image data', 'files': ['train/HR/x.png', 'val/HR/x.png']}, f)
    return []


def test_sample_overwrite_keeps_files_a_user_put_inside_an_earlier_build(tmp_path, monkeypatch):
    from rlfn_arch.data.builders import sample as sample_builder
    monkeypatch.setattr(sample_builder, '_build_sample_into', _fake_content)
    out = tmp_path / 'sample'
    run_module('rlfn_arch.prepare', 'sample', '--output', out, '--workers', '1')
    (out / 'train' / 'my_notes.txt').write_text('mine')
    (out / 'val' / 'HR_mine').mkdir()
    (out / 'val' / 'HR_mine' / 'a.png').write_bytes(b'my image')
    run_module('rlfn_arch.prepare', 'sample', '--output', out, '--workers', '1', '--overwrite')
    kept = {k: v for k, v in snapshot(tmp_path).items() if 'my_notes' in k or 'HR_mine' in k}
    assert len(kept) == 2  # both of the user's files survive (archived beside the new build)
    assert any(k.startswith('sample/train_archived_') for k in kept)
    assert (out / 'train' / 'HR' / 'x.png').read_bytes() == b'png' and (out / 'sample.json').is_file()


def test_the_real_sample_build_lists_every_file_it_wrote(tmp_path):
    """What --overwrite may delete is exactly what the build wrote (the real builder, not the fake above)."""
    import rlfn_arch.data.builders.sample as sample_builder
    from rlfn_arch.data.builders.sample import _build_sample_into
    names = sample_builder.SAMPLE_TRAIN, sample_builder.SAMPLE_VAL
    try:
        sample_builder.SAMPLE_TRAIN, sample_builder.SAMPLE_VAL = ['astronaut'], ['coffee']
        out = tmp_path / 'build'
        out.mkdir()
        _build_sample_into(str(out), 1)
    finally:
        sample_builder.SAMPLE_TRAIN, sample_builder.SAMPLE_VAL = names
    listed = json.loads((out / 'sample.json').read_text())['files']
    on_disk = sorted(k for k in snapshot(out) if k != 'sample.json')
    assert listed == on_disk and any(k.endswith('data.mdb') for k in listed)
