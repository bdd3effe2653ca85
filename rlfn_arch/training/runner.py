"""The stage runner: one experiment folder, locked for the run, each stage trained by BasicSR's loop.

Stage k > 1 starts from stage k-1's final generator weights (``net_g_latest.pth``; its EMA weights
``params_ema`` when that stage kept an EMA, else ``params``), with a fresh optimizer and scheduler. A
finished stage is skipped on ``--auto_resume``; an unfinished one continues from its newest loadable
training state. Every delete and rename acts only on paths proven to be inside the experiment's folder.
"""
import os
import time
from os import path as osp

import torch
import torch.distributed as dist

from rlfn_arch.utils.checkpoint import atomic_save, safe_load
from rlfn_arch.utils.fs import (
    ExperimentLock,
    LockedError,
    remove_inside,
    remove_stale_tmp,
    rename_inside,
    require_inside,
)
from rlfn_arch.utils.runtime import finalize

from basicsr.utils import set_random_seed

from .basicsr_adapter import run_stage
from .distributed import barrier, check_replicas, init_dist
from .records import STAGES_JSON, StageRecords, find_resume_state
from .report import bicubic_baseline, print_summary


def _metrics(model):
    res = getattr(model, 'metric_results', None) if model is not None else None
    return {k: float(v) for k, v in (res or {}).items()}



def _archive(exp_root, experiments):
    """Rename an existing experiment folder to ``<name>_archived_<time>`` (BasicSR's convention), after
    proving both names are inside ``experiments/``."""
    archived = f'{exp_root}_archived_{time.strftime("%Y%m%d_%H%M%S")}'
    rename_inside(exp_root, archived, experiments)
    print(f'{exp_root} exists; renamed to {archived} (use --auto_resume to continue it)', flush=True)



def _lock(experiments, name, rank, world):
    """Rank 0 takes the experiment's lock; every rank learns whether it succeeded."""
    lock, error = None, None
    if rank == 0:
        try:
            lock = ExperimentLock(experiments, name).acquire()
        except LockedError as e:
            error = str(e)
    if world > 1:
        box = [error]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
    if error:
        raise LockedError(error)
    return lock



def _clean_unfinished_stage(stage_dir, exp_root):
    """An unfinished stage with nothing to resume from restarts cleanly: everything in its folder goes,
    except stages.json; each entry is proven to be inside the experiment folder first."""
    for entry in os.listdir(stage_dir):
        if entry != STAGES_JSON:
            remove_inside(osp.join(stage_dir, entry), exp_root)



def train_stages(args, raw, stage_list, root):
    rank, world = 0, 1
    if args.launcher != 'none':
        rank, world = init_dist(args.launcher, stage_list[0][1])
    name = raw['name']
    experiments = osp.join(root, 'experiments')
    exp_root = osp.join(experiments, name)
    require_inside(exp_root, experiments, 'use', follow=False)  # names are checked; this is the second line
    lock = _lock(experiments, name, rank, world)
    try:
        return _train_locked(args, raw, stage_list, root, rank, world, experiments, exp_root)
    finally:
        if lock is not None:
            lock.release()



def _warm_start(opt, prev_final, stage_entry):
    """Stage k > 1 starts from stage k-1's final weights (EMA when it kept one), unless the stage names
    its own ``pretrain_network_g``."""
    if prev_final and not (stage_entry or {}).get('path', {}).get('pretrain_network_g'):
        ckpt = safe_load(prev_final)
        opt['path']['pretrain_network_g'] = prev_final
        opt['path']['param_key_g'] = 'params_ema' if 'params_ema' in ckpt else 'params'
        opt['path']['strict_load_g'] = True


def _resume_state(opt, records, label, stage_dir, rank, world):
    """With --auto_resume: close the killed segment's time, remove interrupted writes, and find the newest
    loadable training state (the same on every rank). Returns it or None."""
    if rank == 0:
        records.close_killed_segment(label, stage_dir)
        for folder in (opt['path']['models'], opt['path']['training_states']):
            for f in remove_stale_tmp(folder):
                print(f'[{label}] removed {f} (a write interrupted by the kill)', flush=True)
    resume_state, state_path = find_resume_state(stage_dir, torch.device('cuda' if opt['num_gpu'] else 'cpu'))
    if resume_state is not None and rank == 0:
        print(f'[{label}] resuming from {state_path} (iter {resume_state["iter"]})', flush=True)
    if world > 1:  # every rank must continue from the same stage and iteration
        its = [None] * world
        dist.all_gather_object(its, None if resume_state is None else resume_state['iter'])
        if len(set(its)) != 1:
            raise RuntimeError(f'[{label}] ranks found different resume states: {its}')
    return resume_state


def _finish(records, names, stage_list, exp_root, prev_final):
    """Rank 0: the last stage's model as net_g_final.pth, bicubic on the validation set, the summary."""
    final_path = osp.join(exp_root, 'net_g_final.pth')
    atomic_save(safe_load(prev_final), final_path)
    records.update(names[-1], final_model=final_path)
    baseline = bicubic_baseline(stage_list[-1][1])
    records.data['bicubic'] = baseline
    records.update(names[-1])
    print_summary(records, names, baseline, stage_list[-1][1]['scale'])
    print(f'final model: {final_path}', flush=True)


def _train_locked(args, raw, stage_list, root, rank, world, experiments, exp_root):
    name = raw['name']
    if rank == 0 and not args.auto_resume and osp.lexists(exp_root):
        _archive(exp_root, experiments)
    barrier()
    if rank == 0:
        os.makedirs(exp_root, exist_ok=True)
    barrier()
    records = StageRecords(osp.join(exp_root, STAGES_JSON), rank)
    names = [st or 'train' for st, _ in stage_list]
    entries = raw.get('stages') or [None]
    prev_final = None
    for k, ((stage, opt), label) in enumerate(zip(stage_list, names)):
        stage_dir = osp.join(exp_root, stage) if stage else exp_root
        if stage:
            require_inside(stage_dir, exp_root, 'use', follow=False)
        opt['dist'], opt['rank'], opt['world_size'] = args.launcher != 'none', rank, world
        opt['auto_resume'] = args.auto_resume
        opt['stage'] = label
        opt['name'] = f'{name}_{stage}' if stage else name
        finalize(opt, root, is_train=True, experiments_root=stage_dir, source=args.opt)
        rec = records.get(label)
        if rec.get('status') == 'done' and osp.isfile(rec.get('final', '')):
            print(f'[{label}] already finished ({rec["final"]}); skipped', flush=True)
            prev_final = rec['final']
            continue
        _warm_start(opt, prev_final, entries[k])
        set_random_seed(opt['manual_seed'] + rank)
        resume_state = _resume_state(opt, records, label, stage_dir, rank, world) if args.auto_resume else None
        if resume_state is None and rank == 0 and osp.isdir(stage_dir):
            _clean_unfinished_stage(stage_dir, exp_root)
        barrier()
        t0 = time.time()
        records.update(label, status='running', init_from=opt['path'].get('pretrain_network_g'),
                       total_iter=opt['train']['total_iter'], segment_start=t0)
        opt['path']['save_init'] = resume_state is None  # WarmStartModel keeps models/net_g_init.pth
        model = run_stage(opt, args, stage_dir, resume_state, label)
        final = osp.join(stage_dir, 'models', 'net_g_latest.pth')
        if world > 1:
            check_replicas(model, label)
        barrier()
        records.update(label, status='done', final=final, iters=opt['train']['total_iter'],
                       seconds=round(time.time() - t0 + records.get(label).get('seconds', 0), 1),
                       segment_start=None, metrics=_metrics(model))
        prev_final = final
    if rank == 0:
        _finish(records, names, stage_list, exp_root, prev_final)
    barrier()
    return 0
