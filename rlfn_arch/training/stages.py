"""Stage options: the ``stages:`` list merged into the rest of an option file, checked, and the data it
reads prepared and checked before anything is written."""
import copy
import inspect
import json
import math
import os
import time
from os import path as osp

from rlfn_arch.archs.qat import int8_state_problem
from rlfn_arch.archs.rlfn_arch import RLFN
from rlfn_arch.archs.rlfn_weights import cross_scale_state, detect_config
from rlfn_arch.data.builders import build_sample_dataset, sample_ready
from rlfn_arch.data.builders.sample import sample_folder
from rlfn_arch.data.checks import check_dataset_opt, count_pairs, summarize
from rlfn_arch.utils.checkpoint import (
    CheckpointError,
    check_finite,
    safe_load,
    select_weights,
    split_quant_state,
    strip_module,
)
from rlfn_arch.utils.options import OptionError, check_options, check_stage_entries, deep_merge
from rlfn_arch.utils.options.schema import qat_settings

from basicsr.archs import build_network


def stage_options(raw, source):
    """The merged, checked options of every stage: list of (stage_name | None, opt)."""
    check_stage_entries(raw, source)
    base = copy.deepcopy(raw)
    stages = base.pop('stages', None)
    if not stages:
        check_options(base, source)
        return [(None, base)]
    out = []
    for st in stages:
        st = copy.deepcopy(st)
        name = str(st.pop('name'))
        merged = deep_merge(base, st)
        check_options(merged, f'{source} (stage {name})')
        out.append((name, merged))
    return out


def _reads_sample(ds, sample):
    return any(str(ds.get(k, '')).startswith(sample + os.sep) for k in ('dataroot_gt', 'dataroot_lq'))


def sample_dataset_problem(options, root):
    """Why the embedded default dataset an option file reads cannot be built where it must go (a non-empty
    folder of the user's is there), or None. The dry run and the run ask the same question."""
    sample = sample_folder(root)
    uses = any(_reads_sample(ds, sample) for o in options for ds in o['datasets'].values())
    if uses and not sample_ready(sample) and osp.lexists(sample) and (not osp.isdir(sample) or os.listdir(sample)):
        return (f'{sample} holds files that are not the embedded default dataset (no sample.json of ours), so it '
                'cannot be built there; nothing was changed. Move that folder aside, or run python -m '
                'rlfn_arch.prepare sample --overwrite to add the dataset to it (your files are kept)')
    return None


def ensure_sample_dataset(options, root):
    """Build the embedded default dataset when an option file reads from it and it is missing.

    Raises:
        OptionError: :func:`sample_dataset_problem`.
    """
    sample = sample_folder(root)
    problem = sample_dataset_problem(options, root)
    if problem:
        raise OptionError(problem)
    uses = any(_reads_sample(ds, sample) for o in options for ds in o['datasets'].values())
    if uses and not sample_ready(sample):
        rank = int(os.environ.get('RANK', os.environ.get('SLURM_PROCID', 0)))
        if rank == 0:
            print(f'preparing the embedded default dataset in {sample} ...', flush=True)
            print(build_sample_dataset(sample)[-1].notes[-1], flush=True)
        else:  # under torchrun/slurm only rank 0 builds it; the others wait for sample.json
            deadline = time.time() + 600
            while not sample_ready(sample) and time.time() < deadline:
                time.sleep(1)
            if not sample_ready(sample):
                raise OptionError(f'{sample}: rank 0 did not finish preparing the sample dataset in 10 minutes')


def _batch_problem(opt, ds, world):
    """Why the training set gives no full batch per process (BasicSR's sampler and drop_last), or None."""
    n = count_pairs(ds)
    if n is None:
        return None
    batch = ds.get('batch_size_per_gpu') or 1
    per_rank = math.ceil(n * (ds.get('dataset_enlarge_ratio') or 1) / world)
    if per_rank // batch == 0:
        return (f'dataset {ds.get("name")}: {n} images x dataset_enlarge_ratio {ds.get("dataset_enlarge_ratio", 1)} '
                f'give no full batch of batch_size_per_gpu {batch} per process (world size {world}); lower '
                'batch_size_per_gpu or raise dataset_enlarge_ratio')
    return None


def check_datasets(options, world=1, root=None, skip_missing_sample=False):
    """Check every paired training/validation dataset once, listing all mismatches, and that the training
    set fills a batch per process. ``skip_missing_sample`` (dry runs): datasets in a sample folder that is
    not built yet are not checked."""
    problems, seen = [], set()
    sample = sample_folder(root) if root else None
    problem = sample_dataset_problem(options, root) if root else None
    if problem:
        raise OptionError(problem)
    for opt in options:
        for phase, ds in opt['datasets'].items():
            if skip_missing_sample and sample and _reads_sample(ds, sample) and not sample_ready(sample):
                continue
            key = json.dumps([ds.get('dataroot_gt'), ds.get('dataroot_lq'), opt['scale'], ds.get('gt_size'),
                              ds.get('batch_size_per_gpu'), ds.get('dataset_enlarge_ratio')])
            if key in seen:
                continue
            seen.add(key)
            min_lq = ds['gt_size'] // opt['scale'] if phase == 'train' and ds.get('gt_size') else None
            found = check_dataset_opt(ds, opt['scale'], min_lq)
            problems += found
            if phase == 'train' and not found:
                problems += [p for p in [_batch_problem(opt, ds, world)] if p]
    if problems:
        raise OptionError('dataset check failed:\n  ' + '\n  '.join(summarize(problems)))


def _fitting_network(sd, opt):
    """For a refused pretrain file that holds an RLFN of another shape: the network_g settings it needs, as
    --force_yml arguments ('' when it is not an RLFN or the settings cannot be read from it)."""
    if sd is None or opt['network_g'].get('type') != 'RLFN':
        return ''
    try:
        cfg = detect_config(sd)
    except CheckpointError:
        return ''
    if opt['path'].get('cross_scale_g'):
        cfg.pop('upscale', None)
    params = inspect.signature(RLFN.__init__).parameters.items()
    current = {**{k: p.default for k, p in params if p.default is not inspect.Parameter.empty}, **opt['network_g']}
    differ = {k: v for k, v in cfg.items() if current.get(k) != v}
    if not differ:
        return ''
    return ('. The file holds an RLFN with ' + ', '.join(f'{k} {v}' for k, v in differ.items()) + '; to train it: '
            '--force_yml ' + ' '.join(f'network_g:{k}={v}' for k, v in differ.items()))


def check_pretrain(stage_list):
    """Every ``path.pretrain_network_g`` the user set: it exists, loads safely, holds finite weights and
    fits the stage's network (with its ``param_key_g`` and ``strict_load_g``). Checked before any
    experiment folder is created or archived."""

    checked = set()
    for stage, opt in stage_list:
        p = opt['path']
        path = p.get('pretrain_network_g')
        key = (path, p.get('param_key_g', 'params'), p.get('cross_scale_g'),
               json.dumps(opt['network_g'], sort_keys=True, default=str))
        if not path or key in checked:
            continue
        checked.add(key)
        where = f'path.pretrain_network_g{f" (stage {stage})" if stage else ""}'
        try:
            ckpt = safe_load(path)
        except CheckpointError as e:
            raise OptionError(f'{where}: {e}') from e
        sd = None
        try:
            sd = strip_module(select_weights(ckpt, path, p.get('param_key_g', 'params'))[0])
            check_finite(sd, path)
            full, (sd, quant) = sd, split_quant_state(sd)  # an int8 stage's checkpoint: its float weights start any
            qat = (opt.get('train') or {}).get('qat')  # stage, and its int8 state an int8 stage with its settings
            problem = int8_state_problem(full, qat_settings(qat)) if quant and qat is not None else None
            if problem:
                raise OptionError(f'{where}: {path}: {problem}')
            net = build_network(copy.deepcopy(opt['network_g']))
            if p.get('cross_scale_g'):
                if not isinstance(net, RLFN):
                    raise OptionError(f'{where}: path.cross_scale_g: network_g type {opt["network_g"].get("type")} '
                                      'cannot warm-start across scales (RLFN and RFDN can)')
                cross_scale_state(sd, net, path, p['cross_scale_g'])
            else:
                net.load_state_dict(sd, strict=p.get('strict_load_g', True))
        except (CheckpointError, RuntimeError, TypeError) as e:
            lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
            first = (' '.join(lines[:2]) if lines[0].endswith(':') and len(lines) > 1 else lines[0]).rstrip('.')
            raise OptionError(f'{where}: {path} does not fit network_g {dict(opt["network_g"])}: {first}'
                              f'{_fitting_network(sd, opt)}') from e
