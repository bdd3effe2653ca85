"""The ablation harness (benchmarks/ablation.py) and the contrastive-loss options its arms use."""
import glob
import json
import math
import os
import statistics
import sys

import pytest
import torch
from helpers import REPO, flatten, make_pairs

from rlfn_arch.losses.contrastive_loss import ContrastiveLoss
from rlfn_arch.training import stage_options
from rlfn_arch.utils.options import load_options

sys.path.insert(0, os.path.join(REPO, 'benchmarks'))
import ablation  # noqa: E402

ARM_FILES = sorted(glob.glob(os.path.join(REPO, 'options', 'ablation', '[A-Z]*.yml')))
# what each arm may change relative to arm C (the recipe), and C relative to B, B relative to A
EXPECTED = {
    'D_width16': {'num_features': 16}, 'D_width64': {'num_features': 64}, 'E_relu': {'activation': 'relu'},
    'F_deep': {'depth': 5}, 'G_weight0.01': {'loss_weight': 0.01}, 'G_weight0.1': {'loss_weight': 0.1},
}


def test_every_arm_of_the_harness_has_an_option_file():
    assert sorted(os.path.splitext(os.path.basename(f))[0] for f in ARM_FILES) == sorted(ablation.ARMS.values())


def _stages(name):
    path = os.path.join(REPO, 'options', 'ablation', name + '.yml')
    return stage_options(load_options(path), path)  # runs the strict option check on every stage


def _diff(a, b):
    fa, fb = flatten(a), flatten(b)
    return {k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k)} - {'name'}


def test_arms_differ_from_each_other_only_where_their_arm_says():
    a, b, c = _stages('A_l1_single'), _stages('B_warm_l1'), _stages('C_warm_contrastive')
    assert len(a) == 1 and len(b) == 3 and len(c) == 3
    # B: the same training as A, split into stages with lower learning rates in stages 2 and 3
    assert _diff(a[0][1], b[0][1]) == set()
    assert _diff(b[1][1], b[0][1]) == {'train.optim_g.lr'}
    # C: B plus the contrastive loss in stage 3 only
    for (_, ob), (_, oc) in zip(b[:2], c[:2]):
        assert _diff(ob, oc) == set()
    assert {k.split('.')[1] for k in _diff(b[2][1], c[2][1])} == {'contrastive_opt'}
    assert c[2][1]['train']['contrastive_opt']['activation'] == 'tanh'
    for name, change in EXPECTED.items():
        arm = _stages(name)
        for (_, oc), (_, ox) in zip(c[:2], arm[:2]):
            assert _diff(oc, ox) == set(), name
        assert _diff(c[2][1], arm[2][1]) == {f'train.contrastive_opt.{k}' for k in change}, name
        for k, v in change.items():
            assert arm[2][1]['train']['contrastive_opt'][k] == v


def test_harness_splits_iterations_over_the_stages_of_an_arm():
    one = ablation.arm_options('A', 3, 301, 'fp32')
    assert one['train']['total_iter'] == 301 and one['train']['scheduler']['periods'] == [301]
    three = ablation.arm_options('C', 1, 301, 'fp32')
    assert [s['train']['total_iter'] for s in three['stages']] == [101, 100, 100]
    assert [s['train']['scheduler']['periods'] for s in three['stages']] == [[101], [100], [100]]
    assert three['manual_seed'] == 1 and three['name'] == 'ablation_C_warm_contrastive_s1'


def test_a_three_iteration_smoke_run_of_each_arm(tmp_path, capsys):
    from rlfn_arch import train
    from rlfn_arch.utils.options import yaml_dump
    hr, lr = make_pairs(str(tmp_path / 'data'), n=4, size=(64, 64), scale=4)
    for arm in ablation.ARMS:
        opt = ablation.arm_options(arm, 0, 3, 'fp32')
        opt['num_gpu'] = 0
        opt['path']['root'] = str(tmp_path)
        for phase in ('train', 'val'):
            opt['datasets'][phase].update(dataroot_gt=hr, dataroot_lq=lr, io_backend={'type': 'disk'},
                                          filename_tmpl='{}x4')
        opt['datasets']['train'].update(gt_size=64, batch_size_per_gpu=2, num_worker_per_gpu=0)
        yml = tmp_path / f'{arm}.yml'
        yml.write_text(yaml_dump(opt))
        assert train.main(['-opt', str(yml)]) == 0, capsys.readouterr().err
        records = json.loads((tmp_path / 'experiments' / opt['name'] / 'stages.json').read_text())['stages']
        assert all(r['status'] == 'done' for r in records.values()) and len(records) == len(opt.get('stages') or [0])


def test_table_builder_computes_mean_sd_and_difference_from_fake_records(tmp_path):
    fake = {('A_l1_single', 0): 30.0, ('A_l1_single', 1): 30.2, ('A_l1_single', 2): 30.4,
            ('C_warm_contrastive', 0): 30.5, ('C_warm_contrastive', 1): 30.1, ('C_warm_contrastive', 2): 30.3,
            ('E_relu', 0): 30.4, ('E_relu', 2): 30.3}  # seed 1 missing: pairs only where both ran
    for (arm, seed), psnr in fake.items():
        d = tmp_path / f'ablation_{arm}_s{seed}'
        d.mkdir()
        (d / 'stages.json').write_text(json.dumps({'stages': {}, 'eval': {'Set5': psnr, 'Set14': psnr - 2}}))
    archived = tmp_path / 'ablation_C_warm_contrastive_s0_archived_20260101_000000'
    archived.mkdir()
    (archived / 'stages.json').write_text(json.dumps({'eval': {'Set5': 99.0, 'Set14': 99.0}}))  # never counted
    rows = {(r['arm'], r['set']): r for r in ablation.summarize(ablation.collect(str(tmp_path)))}
    a, c, e = rows[('A_l1_single', 'Set5')], rows[('C_warm_contrastive', 'Set5')], rows[('E_relu', 'Set5')]
    assert a['n'] == 3 and a['mean'] == pytest.approx(30.2) and a['sd'] == pytest.approx(0.2)
    assert c['mean'] == pytest.approx(30.3) and c['sd'] == pytest.approx(0.2)
    assert c['diff'] == pytest.approx(0.1) and c['diff_se'] == pytest.approx(math.sqrt(0.04 / 3 + 0.04 / 3))
    assert 'diff' not in a and rows[('C_warm_contrastive', 'Set14')]['mean'] == pytest.approx(28.3)
    # E - C per seed: 30.4 - 30.5 = -0.1 (seed 0), 30.3 - 30.3 = 0 (seed 2)
    assert e['paired_n'] == 2 and e['paired_diff'] == pytest.approx(-0.05)
    assert e['paired_sd'] == pytest.approx(statistics.stdev([-0.1, 0.0]))
    assert 'paired_diff' not in a and 'paired_diff' not in c
    table = ablation.markdown(list(rows.values()))
    assert '+0.100 ± 0.163' in table and '(reference)' in table and '99.0' not in table
    assert '| E_relu | 2 | -0.050 ± 0.071 | -0.050 ± 0.071 |' in table
    assert statistics.stdev([30.0, 30.2, 30.4]) == pytest.approx(0.2)


# ----------------------------------------------------------------------------- ContrastiveLoss options
def test_activation_and_depth_change_the_extractor_as_documented():
    x = torch.rand(2, 3, 16, 16)
    tanh = ContrastiveLoss(num_features=5, layers=['conv1', 'act1', 'conv2'])
    relu = ContrastiveLoss(num_features=5, activation='relu', layers=['conv1', 'act1', 'conv2'])
    deep = ContrastiveLoss(num_features=5, depth=4)
    with torch.no_grad():
        c1, a1, c2 = tanh.extractor(x, tanh.layers)
        r1, ra1, _ = relu.extractor(x, relu.layers)
        (d4,) = deep.extractor(x, deep.layers)
    assert c1.shape == (2, 5, 16, 16) and torch.equal(c1, r1)  # same seed: the same first conv
    assert torch.allclose(a1, torch.tanh(c1)) and torch.allclose(ra1, torch.relu(r1))
    assert deep.layers == ['conv4'] and d4.shape == (2, 5, 16, 16)
    assert [n for n, _ in deep.extractor.named_children()] == ['conv1', 'conv2', 'conv3', 'conv4']
    # the seed alone decides the weights; depth 2 draws what earlier versions drew (conv1 then conv2)
    again = ContrastiveLoss(num_features=5, depth=4)
    assert all(torch.equal(p, q) for p, q in zip(deep.extractor.parameters(), again.extractor.parameters()))
    other = ContrastiveLoss(num_features=5, depth=4, seed=1)
    assert not torch.equal(other.extractor.conv1.weight, deep.extractor.conv1.weight)
    assert torch.equal(deep.extractor.conv2.weight, ContrastiveLoss(num_features=5).extractor.conv2.weight)
    with pytest.raises(ValueError, match='activation'):
        ContrastiveLoss(activation='gelu')
    with pytest.raises(ValueError, match='unknown for the random extractor of depth 2'):
        ContrastiveLoss(layers=['conv3'])
