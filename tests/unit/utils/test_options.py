import glob
import os

import pytest
from helpers import REPO, run_module

from rlfn_arch.training import stage_options
from rlfn_arch.utils.options import OptionError, check_options, load_options

SHIPPED = sorted(p for p in glob.glob(os.path.join(REPO, 'options', '**', '*.yml'), recursive=True)
                 if '_base' not in p.split(os.sep))  # _base files are partial, checked through their users


def test_there_are_shipped_option_files():
    assert len(SHIPPED) >= 8


@pytest.mark.parametrize('path', SHIPPED, ids=[os.path.relpath(p, REPO) for p in SHIPPED])
def test_every_shipped_option_file_passes(path):
    raw = load_options(path)
    if os.sep + 'test' + os.sep in path:
        check_options(raw, path, is_train=False)
    else:
        assert len(stage_options(raw, path)) >= 1


def test_base_files_are_merged_and_a_changed_type_replaces_the_section(tmp_path):
    (tmp_path / 'b.yml').write_text('a: 1\nsched: {type: MultiStepLR, milestones: [5]}\nnet: {x: 1, y: 2}\n')
    (tmp_path / 'c.yml').write_text('base: b.yml\nsched: {type: CosineAnnealingRestartLR, periods: [9]}\nnet: {y: 3}\n')
    opt = load_options(str(tmp_path / 'c.yml'))
    assert opt['a'] == 1 and dict(opt['net']) == {'x': 1, 'y': 3}
    assert dict(opt['sched']) == {'type': 'CosineAnnealingRestartLR', 'periods': [9]}
    (tmp_path / 'd.yml').write_text('base: missing.yml\n')
    with pytest.raises(OptionError, match='d.yml: base: .*missing.yml not found'):
        load_options(str(tmp_path / 'd.yml'))


def _base():
    return load_options(os.path.join(REPO, 'options', 'train', 'RLFN_S_x4_quickstart.yml'))


@pytest.mark.parametrize('edit,match', [
    (lambda o: o['train'].__setitem__('total_iters', 5),
     r"train.total_iters: unknown key 'total_iters'; did you mean 'total_iter'"),
    (lambda o: o['train'].__setitem__('contrastive_opts', {}), "did you mean 'contrastive_opt'"),
    (lambda o: o['network_g'].__setitem__('feature_channel', 4),
     "network_g.feature_channel: unknown key.*did you mean 'feature_channels'"),
    (lambda o: o['train']['optim_g'].__setitem__('lr', '1e-3'),
     r"train.optim_g.lr: '1e-3' was read as a string.*!!float 1e-3"),
    (lambda o: o.__setitem__('scale', 5), 'scale: must be 2, 3 or 4'),
    (lambda o: o['train'].__setitem__('total_iter', -3), 'train.total_iter: must be an integer >= 1'),
    (lambda o: o['datasets']['train'].__setitem__('gt_size', 130), 'gt_size: 130 is not divisible by scale 4'),
    (lambda o: o['datasets']['train'].__setitem__('gt_size', 48), 'LR patch of 12px'),
    (lambda o: o['val']['metrics']['psnr'].__setitem__('test_y_chanel', True), "did you mean 'test_y_channel'"),
    (lambda o: o['logger'].__setitem__('print_frq', 1), "did you mean 'print_freq'"),
    (lambda o: o['dist_params'].__setitem__('backnd', 'gloo'), "did you mean 'backend'"),
    (lambda o: o['datasets']['train'].__setitem__('batch_size', 4), "did you mean 'batch_size_per_gpu'"),
    (lambda o: o['path'].__setitem__('pretrain_network', 'x'), "did you mean 'pretrain_network_g'"),
    (lambda o: o.__setitem__('model_type', 'WarmStartModl'),
     "model_type: unknown model 'WarmStartModl'; did you mean 'WarmStartModel'"),
    (lambda o: o['network_g'].__setitem__('type', 'RFLN'),
     "network_g.type: unknown architecture 'RFLN'; did you mean 'RLFN'"),
])
def test_mistakes_are_errors_with_the_file_and_key(edit, match):
    opt = _base()
    opt.pop('stages')
    edit(opt)
    with pytest.raises(OptionError, match=match) as e:
        check_options(opt, 'my.yml')
    assert 'my.yml' in str(e.value)


def test_contrastive_needs_the_warmstart_model():
    opt = _base()
    opt.pop('stages')
    opt['model_type'] = 'SRModel'
    opt['train']['contrastive_opt'] = {'type': 'ContrastiveLoss'}
    with pytest.raises(OptionError, match='contrastive_opt: needs model_type: WarmStartModel'):
        check_options(opt, 'x.yml')


def test_unknown_key_inside_a_stage_names_the_stage():
    opt = _base()
    opt['stages'][1]['train']['total_iters'] = 3
    with pytest.raises(OptionError, match=r'stages\[1\] \(stage2_l1_warm\).train.total_iters.*total_iter'):
        stage_options(opt, 'q.yml')


def test_python_tags_are_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / 'pwned'
    bad = tmp_path / 'evil.yml'
    bad.write_text(f'name: !!python/object/apply:os.system ["touch {marker}"]\nscale: 4\n')
    with pytest.raises(OptionError, match='evil.yml: not a safe, valid YAML'):
        load_options(str(bad))
    proc = run_module('rlfn_arch.train', '-opt', bad, check=False)
    assert proc.returncode == 2 and 'evil.yml' in proc.stderr
    assert not marker.exists()


def test_ordered_mappings_are_kept(tmp_path):
    f = tmp_path / 'o.yml'
    f.write_text('b: 1\na: 2\nc: {z: 1, y: 2}\n')
    opt = load_options(str(f))
    assert list(opt) == ['b', 'a', 'c'] and list(opt['c']) == ['z', 'y']


def test_train_cli_reports_option_errors_before_anything_heavy(tmp_path):
    from rlfn_arch.utils.options import yaml_dump
    opt = _base()
    opt['train']['total_iters'] = 1
    opt['name'] = 'RLFN_S_x4_quickstart_typo'
    f = tmp_path / 'typo.yml'
    f.write_text(yaml_dump(opt))
    proc = run_module('rlfn_arch.train', '-opt', f, check=False)
    assert proc.returncode == 2 and "did you mean 'total_iter'" in proc.stderr
    assert not os.path.exists(os.path.join(REPO, 'experiments', 'RLFN_S_x4_quickstart_typo'))
