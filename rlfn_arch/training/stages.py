"""Stage options: the ``stages:`` list merged into the rest of an option file, checked, and the data it
reads prepared and checked before anything is written."""
import copy
import json
import os
import time
from os import path as osp

from rlfn_arch.data.builders import build_sample_dataset, sample_ready
from rlfn_arch.data.checks import check_dataset_opt
from rlfn_arch.utils.options import OptionError, check_options, check_stage_entries, deep_merge


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



def ensure_sample_dataset(stage_list, root):
    """Build the embedded default dataset when an option file reads from it and it is missing."""
    sample = osp.join(root, 'datasets', 'sample')
    uses = any(str(ds.get(k, '')).startswith(sample + os.sep) for _, o in stage_list
               for ds in o['datasets'].values() for k in ('dataroot_gt', 'dataroot_lq'))
    if uses and not sample_ready(sample):
        rank = int(os.environ.get('RANK', os.environ.get('SLURM_PROCID', 0)))
        if rank == 0:
            print(f'preparing the embedded default dataset in {sample} ...', flush=True)
            build_sample_dataset(sample)
        else:  # under torchrun/slurm only rank 0 builds it; the others wait for sample.json
            deadline = time.time() + 600
            while not sample_ready(sample) and time.time() < deadline:
                time.sleep(1)
            if not sample_ready(sample):
                raise OptionError(f'{sample}: rank 0 did not finish preparing the sample dataset in 10 minutes')



def check_datasets(stage_list):
    """Check every paired training/validation dataset once, listing all mismatches."""
    problems, seen = [], set()
    for _, opt in stage_list:
        for phase, ds in opt['datasets'].items():
            key = json.dumps([ds.get('dataroot_gt'), ds.get('dataroot_lq'), opt['scale'], ds.get('gt_size')])
            if key in seen:
                continue
            seen.add(key)
            min_lq = ds['gt_size'] // opt['scale'] if phase == 'train' and ds.get('gt_size') else None
            problems += check_dataset_opt(ds, opt['scale'], min_lq)
    if problems:
        raise OptionError('dataset check failed:\n  ' + '\n  '.join(problems))
