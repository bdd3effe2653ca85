"""Hostile inputs never lose data: guarded file operations and option loading.
(The hostile case on tiny data, the real entry point, the documented exit code and message, and every
file the run did not create left as it was: the pattern of all the safety tests.)"""
import os
import time

import pytest
from helpers import (
    edit,
    run_module,
    tiny_options,
    train_main,
)


def test_guarded_delete_and_rename_refuse_paths_outside_the_owner(tmp_path):
    from rlfn_arch.utils.fs import UnsafePathError, remove_inside, rename_inside
    owner, outside = tmp_path / 'owner', tmp_path / 'outside'
    (owner / 'sub').mkdir(parents=True)
    outside.mkdir()
    (outside / 'f').write_text('keep')
    os.symlink(outside, owner / 'link')
    for path in (outside, owner, owner / '..', owner / 'link' / 'f', owner / 'sub' / '..' / '..' / 'outside'):
        with pytest.raises(UnsafePathError):
            remove_inside(path, owner)
    with pytest.raises(UnsafePathError):
        rename_inside(owner / 'sub', outside / 'moved', owner)
    remove_inside(owner / 'link', owner)  # the link itself goes, its target stays
    assert (outside / 'f').read_text() == 'keep' and not os.path.lexists(owner / 'link')
    remove_inside(owner / 'sub', owner)
    assert not (owner / 'sub').exists()


# ----------------------------------------------------------------------------------------- options
def test_yaml_alias_bomb_is_refused_in_under_a_second(tmp_path):
    from rlfn_arch.utils.options import OptionError, load_options
    lines = ['a0: &a0 [x, x, x, x, x, x, x, x, x]']
    lines += [f'a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, '
              f'*a{i - 1}]' for i in range(1, 10)]
    bomb = tmp_path / 'bomb.yml'
    bomb.write_text('\n'.join(lines) + '\nname: boom\n')
    assert bomb.stat().st_size < 1200
    t0 = time.time()
    with pytest.raises(OptionError, match='anchor'):
        load_options(str(bomb))
    assert time.time() - t0 < 1.0
    proc = run_module('rlfn_arch.train', '-opt', bomb, check=False, timeout=60)
    assert proc.returncode == 2 and 'not allowed in option files' in proc.stderr


@pytest.mark.parametrize('key,value,message', [
    ('lr', [1], 'train.optim_g.lr: must be a positive number'),
    ('lr', 0, 'train.optim_g.lr: must be a positive number'),
    ('eta_min', -1e-6, 'eta_min: must be >= 0'),
    ('periods', ['a'], 'periods: must be a non-empty list of integers'),
    ('restart_weights', [1, 1], 'restart_weights: has 2 entries for 1 periods'),
    ('name', None, 'name: must be a string'),
])
def test_wrong_types_and_ranges_are_option_errors(tmp_path, capsys, key, value, message):
    yml, exp = tiny_options(tmp_path, stage_iters=(1, 1, 1))

    def change(o):
        if key == 'lr':
            o['train']['optim_g']['lr'] = value
        elif key == 'name':
            o['name'] = value
        else:
            o['train']['scheduler'] = {'type': 'CosineAnnealingRestartLR', 'periods': [10], 'restart_weights': [1],
                                       'eta_min': 1e-7, key: value}
    edit(yml, change)
    assert train_main('-opt', yml) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / 'experiments').exists()
