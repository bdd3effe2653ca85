"""The stage runner: executes the stage plans (:mod:`rlfn_arch.training.plan`) in one experiment folder,
locked for the run, each stage trained by BasicSR's loop.

Stage k > 1 starts from stage k-1's final generator weights (``net_g_latest.pth``; its EMA weights
``params_ema`` when that stage kept an EMA, else ``params``), with a fresh optimizer and scheduler. A
finished stage is skipped on ``--auto_resume``; an unfinished one continues from its newest loadable
training state, or, when it has none, its folder is archived (``<stage>_archived_<time>``) and the stage
starts over. Nothing here deletes a checkpoint; every rename acts only on paths proven to be inside the
experiment's folder, itself a real folder inside the resolved experiments root.
"""
import os
import time
from os import path as osp

import torch
import torch.distributed as dist

from rlfn_arch.archs.rlfn_weights import detect_config, model_metadata, save_weights
from rlfn_arch.basicsr_seam import run_stage
from rlfn_arch.data.sampler import ResumableSampler
from rlfn_arch.utils.checkpoint import CheckpointError, atomic_save, safe_load, split_quant_state
from rlfn_arch.utils.fs import ExperimentLock, LockedError, remove_stale_tmp, rename_inside
from rlfn_arch.utils.options import thaw
from rlfn_arch.utils.options.schema import qat_settings

from .curves import CURVES_FILE, write_plot
from .distributed import barrier, check_replicas
from .plan import INT8_FINAL
from .records import STAGES_JSON, StageRecords
from .report import bicubic_baseline, print_summary


def _metrics(model):
    res = getattr(model, 'metric_results', None) if model is not None else None
    return {k: float(v) for k, v in (res or {}).items()}


def _archive(folder, owner, why):
    """Rename ``folder`` to ``<folder>_archived_<time>`` (BasicSR's convention) after proving both names
    are inside ``owner``; say so."""
    archived = f'{folder}_archived_{time.strftime("%Y%m%d_%H%M%S")}'
    rename_inside(folder, archived, owner)
    print(f'{folder} {why}; renamed to {archived} (nothing was deleted)', flush=True)
    return archived


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


def train_stages(plans, experiments, exp_root, auto_resume, rank=0, world=1, source='<options>'):
    """Run ``plans`` (from :func:`rlfn_arch.training.plan.build_plans`) under the experiment's lock.

    Returns:
        int: 0 when every stage finished.
    """
    lock = _lock(experiments, osp.basename(exp_root), rank, world)
    try:
        return _train_locked(plans, experiments, exp_root, auto_resume, rank, world, source)
    finally:
        if lock is not None:
            lock.release()


def _resume_cleanup(plan, records):
    """Rank 0, resuming: close the killed segment's time and remove the temporaries of interrupted writes
    (only the ``.<name>.<random>.rlfn-tmp`` files of :func:`atomic_write`, in the folders this stage writes)."""
    records.close_killed_segment(plan.label, plan.folder)
    for folder in (plan.options['path']['models'], plan.options['path']['training_states']):
        for f in remove_stale_tmp(folder):
            print(f'[{plan.label}] removed {f} (a write interrupted by the kill)', flush=True)


def _finish_int8(state_dict, path, opt, source):
    """The last stage trained for int8 (``train: qat``): its int8 ONNX model beside the weights, or why not."""
    try:
        from rlfn_arch.deploy.quantize import quantize_checkpoint
        cfg = detect_config(split_quant_state(state_dict)[0])
        qat = qat_settings(opt['train']['qat'])
        quantize_checkpoint(state_dict, path, model_metadata(
            cfg, source=osp.basename(source), precision='int8 (QDQ)', int8=qat['convs'],
            int8_weight_bits=qat['weight_bits']))
        runtime = ' --runtime openvino' if qat['placement'] == 'inputs' else ''  # int8 in OpenVINO only
        print(f'int8 model: {path} (python -m rlfn_arch.infer --onnx {path}{runtime} ...)', flush=True)
    except ImportError:
        print(f'int8 model: not written, onnx / onnxruntime are not installed (pip install "rlfn-basicsr[export]"); '
              f'then python -m rlfn_arch.quantize --model_path {osp.join(osp.dirname(path), "net_g_final.pth")} '
              f'--output {path}', flush=True)


def _finish(records, plans, exp_root, source):
    """Rank 0: the last stage's model as net_g_final.pth and net_g_final.safetensors (the weights the stage
    validated with: its EMA when it kept one; with metadata), bicubic on the validation set, the summary."""
    last = plans[-1]
    final_path = osp.join(exp_root, 'net_g_final.pth')
    ckpt = safe_load(last.final)
    atomic_save(ckpt, final_path)
    opt = thaw(last.options)
    metrics = records.get(last.label).get('metrics', {})
    weights, quant = split_quant_state(ckpt.get('params_ema', ckpt['params']))  # float weights; int8 state below
    try:
        save_weights(weights, osp.join(exp_root, 'net_g_final.safetensors'), detect_config(weights),
                     option_file=osp.basename(source), stages=[p.label for p in plans], val_psnr=metrics.get('psnr'),
                     weights='params_ema' if 'params_ema' in ckpt else 'params')
    except CheckpointError as e:  # a network_g that is not RLFN-shaped: the .pth is the final model
        print(f'note: no net_g_final.safetensors ({e})', flush=True)
    if quant:
        _finish_int8(ckpt['params'], osp.join(exp_root, INT8_FINAL), opt, source)
    records.update(last.label, final_model=final_path)
    baseline = bicubic_baseline(opt)
    records.data['bicubic'] = baseline
    records.update(last.label)
    print_summary(records, [p.label for p in plans], baseline, opt['scale'])
    print(f'final model: {final_path}', flush=True)
    try:
        print(f'training curves: {write_plot(plans, exp_root, baseline, opt["scale"])}', flush=True)
    except ImportError:
        print('training curves: not drawn, matplotlib is not installed (pip install "rlfn-basicsr[plot]"); '
              f'the numbers are in each stage\'s {CURVES_FILE}', flush=True)


def _run_plan(plan, records, exp_root, rank, world):
    """One stage that is not skipped: archive or clean up as planned, run it, record it."""
    if rank == 0 and plan.archive_first:
        _archive(plan.folder, exp_root if plan.folder != exp_root else osp.dirname(exp_root),
                 'holds an unfinished stage with no loadable training state')
        if plan.folder == exp_root:  # a run without stages: its folder is the experiment folder
            os.makedirs(exp_root)
    if rank == 0 and plan.resume_state:
        _resume_cleanup(plan, records)
        print(f'[{plan.label}] resuming from {plan.resume_state}', flush=True)
    resume_state = None
    if plan.resume_state:
        device = torch.device('cuda' if plan.options['num_gpu'] else 'cpu')
        resume_state = safe_load(plan.resume_state, map_location=device)
    if world > 1:  # every rank must continue from the same stage and iteration
        its = [None] * world
        dist.all_gather_object(its, None if resume_state is None else resume_state['iter'])
        if len(set(its)) != 1:
            raise RuntimeError(f'[{plan.label}] ranks found different resume states: {its}')
    barrier()
    t0 = time.time()
    records.update(plan.label, status='running', init_from=plan.init_from,
                   total_iter=plan.options['train']['total_iter'], segment_start=t0)
    opt = plan.options
    model = run_stage(plan, resume_state, sampler=ResumableSampler.for_run(
        opt['manual_seed'], opt['datasets']['train']['batch_size_per_gpu'], resume_state))
    if world > 1:
        check_replicas(model, plan.label)
    barrier()
    records.update(plan.label, status='done', final=plan.final, iters=plan.options['train']['total_iter'],
                   seconds=round(time.time() - t0 + records.get(plan.label).get('seconds', 0), 1),
                   segment_start=None, metrics=_metrics(model))


def _train_locked(plans, experiments, exp_root, auto_resume, rank, world, source):
    if rank == 0 and not auto_resume and osp.lexists(exp_root):
        _archive(exp_root, experiments, 'exists (use --auto_resume to continue it)')
    barrier()
    if rank == 0:
        os.makedirs(exp_root, exist_ok=True)
    barrier()
    records = StageRecords(osp.join(exp_root, STAGES_JSON), rank)
    if rank == 0 and auto_resume:  # a kill while net_g_final.pth or stages.json was written
        for f in remove_stale_tmp(exp_root):
            print(f'removed {f} (a write interrupted by the kill)', flush=True)
    for plan in plans:
        if plan.skip:
            print(f'[{plan.label}] already finished ({plan.final}); skipped', flush=True)
            continue
        _run_plan(plan, records, exp_root, rank, world)
    if rank == 0:
        _finish(records, plans, exp_root, source)
    barrier()
    return 0
