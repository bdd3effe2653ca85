"""Our option finalization against basicsr's own ``parse_options``, key by key, on option files written
in BasicSR's style (an MSRResNet-style train file and a test file, the network swapped for RLFN)."""
import os
import sys

import pytest
from helpers import flatten

from rlfn_arch.utils.options import check_options, load_options
from rlfn_arch.utils.runtime import finalize

from basicsr.utils.options import parse_options

NETWORK = '''network_g:
  type: RLFN
  upscale: 4
  in_channels: 3
  out_channels: 3
  feature_channels: 48
  mid_channels: 48
  esa_channels: 16
  num_blocks: 6
'''
TRAIN = '''# general settings
name: RLFN_x4_DIV2K_basicsr_style
model_type: SRModel
scale: 4
num_gpu: 0
manual_seed: 0

# dataset and data loader settings
datasets:
  train:
    name: DIV2K
    type: PairedImageDataset
    dataroot_gt: datasets/DF2K/DIV2K_train_HR_sub
    dataroot_lq: ~/data/DIV2K_train_LR_bicubic_X4_sub
    meta_info_file: ~
    filename_tmpl: '{}'
    io_backend:
      type: disk
    gt_size: 128
    use_hflip: true
    use_rot: true
    num_worker_per_gpu: 6
    batch_size_per_gpu: 16
    dataset_enlarge_ratio: 100
    prefetch_mode: ~
  val:
    name: Set5
    type: PairedImageDataset
    dataroot_gt: datasets/Set5/GTmod12
    dataroot_lq: datasets/Set5/LRbicx4
    io_backend:
      type: disk

''' + NETWORK + '''
# path
path:
  pretrain_network_g: ~
  param_key_g: params
  strict_load_g: true
  resume_state: ~

# training settings
train:
  ema_decay: 0.999
  optim_g:
    type: Adam
    lr: !!float 2e-4
    weight_decay: 0
    betas: [0.9, 0.99]
  scheduler:
    type: CosineAnnealingRestartLR
    periods: [250000, 250000, 250000, 250000]
    restart_weights: [1, 1, 1, 1]
    eta_min: !!float 1e-7
  total_iter: 1000000
  warmup_iter: -1
  pixel_opt:
    type: L1Loss
    loss_weight: 1.0
    reduction: mean

# validation settings
val:
  val_freq: !!float 5e3
  save_img: false
  metrics:
    psnr:
      type: calculate_psnr
      crop_border: 4
      test_y_channel: false

# logging settings
logger:
  print_freq: 100
  save_checkpoint_freq: !!float 5e3
  use_tb_logger: true
  wandb:
    project: ~
    resume_id: ~

# dist training settings
dist_params:
  backend: nccl
  port: 29500
'''
TEST = '''name: RLFN_x4_test_basicsr_style
model_type: SRModel
scale: 4
num_gpu: 0

datasets:
  test_1:
    name: Set5
    type: PairedImageDataset
    dataroot_gt: datasets/Set5/GTmod12
    dataroot_lq: datasets/Set5/LRbicx4
    io_backend:
      type: disk
  test_2:
    name: Set14
    type: PairedImageDataset
    dataroot_gt: datasets/Set14/GTmod12
    dataroot_lq: datasets/Set14/LRbicx4
    io_backend:
      type: disk

''' + NETWORK + '''
path:
  pretrain_network_g: experiments/pretrained_models/RLFN_x4.pth
  strict_load_g: true
  param_key_g: params

val:
  save_img: true
  suffix: ~
  metrics:
    psnr:
      type: calculate_psnr
      crop_border: 4
      test_y_channel: false
'''


@pytest.mark.parametrize('kind', ['train', 'test'])
def test_our_finalized_options_match_basicsr_parse_options(tmp_path, monkeypatch, kind):
    path = tmp_path / f'{kind}.yml'
    path.write_text(TRAIN if kind == 'train' else TEST)
    root = str(tmp_path / 'root')
    is_train = kind == 'train'
    monkeypatch.setattr(sys, 'argv', ['basicsr', '-opt', str(path)])
    theirs, _ = parse_options(root, is_train=is_train)
    ours = load_options(str(path))
    check_options(ours, str(path), is_train=is_train)
    finalize(ours, root, is_train=is_train)
    theirs, ours = flatten(theirs), flatten(ours)
    missing = sorted(set(theirs) - set(ours))
    assert not missing, f'basicsr fills keys we do not: {missing}'
    for key, value in theirs.items():
        mine = ours[key]
        if key == 'manual_seed' and 'manual_seed' not in (TRAIN if is_train else TEST):
            assert isinstance(mine, int) and 1 <= mine <= 10000  # both draw a random seed
        elif value is not None and (key.endswith(('dataroot_gt', 'dataroot_lq')) or
                                    key.startswith('path.pretrain_network')):
            # basicsr keeps these relative to the working directory; we resolve them against the project
            # root (documented), after the same ~ expansion
            assert mine == os.path.normpath(os.path.join(root, value)), key
        elif key == 'model_type' and value == 'SRModel':
            # SRModel runs as WarmStartModel, its subclass with safe loading (safetensors, [0, 255] files);
            # an SRModel training file keeps SRModel's fp32 NCHW training
            assert mine == 'WarmStartModel', key
            if is_train:
                assert ours['train.precision'] == 'fp32' and ours['train.channels_last'] is False
        else:
            assert mine == value, key
