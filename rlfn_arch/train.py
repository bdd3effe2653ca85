"""Multi-stage warm-start training with BasicSR's own trainer loop.

    python -m rlfn_arch.train -opt options/train/RLFN_S_x4_quickstart.yml [--auto_resume]
    torchrun --nproc_per_node=N -m rlfn_arch.train -opt FILE --launcher pytorch [--auto_resume]

Each entry of ``stages:`` is deep-merged into the rest of the option file and run by
``basicsr.train.train_pipeline`` (unchanged), with these parts replaced for the duration of a stage:

* ``parse_options``: our safe, strictly checked options (see :mod:`rlfn_arch.utils.options`).
* ``load_resume_state``: looks in this stage's own folder (not relative to the working directory),
  loads with ``weights_only=True`` onto the model's device (basicsr maps to CUDA) and falls back to the
  previous good state when the latest is truncated or unreadable.
* ``create_train_val_dataloader``: epochs counted from the real per-rank batches (``drop_last``), so
  ``total_iter`` is honoured exactly, also under DDP.
* ``get_root_logger``: the stage name on every line; console output on stdout.

Stage k > 1 starts from stage k-1's final generator weights (``net_g_latest.pth``; its EMA weights
``params_ema`` when that stage kept an EMA, else ``params``), with a fresh optimizer and scheduler.
"""
import argparse
import copy
import datetime
import json
import os
import random
import sys
import time
from os import path as osp
from unittest import mock

import rlfn_arch  # noqa: F401  compatibility shim + registrations
from rlfn_arch.data.checked_dataset import DatasetSampleError
from rlfn_arch.utils.checkpoint import CheckpointError, atomic_save, check_pretrain, safe_load
from rlfn_arch.utils.fs import (ExperimentLock, LockedError, UnsafePathError, WriteError, atomic_write, remove_inside,
                                remove_stale_tmp, rename_inside, require_inside)
from rlfn_arch.utils.options import (OptionError, check_options, check_stage_entries, deep_merge, load_options,
                                     yaml_dump)
from rlfn_arch.utils.runtime import finalize, logger_factory, project_root, reset_basicsr_logger

STAGES_JSON = 'stages.json'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog='python -m rlfn_arch.train', description=__doc__.split('\n\n')[0])
    parser.add_argument('-opt', required=True, help='path to the option YAML file')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none', help='job launcher')
    parser.add_argument('--auto_resume', action='store_true', help='continue the unfinished stage; skip finished ones')
    parser.add_argument('--debug', action='store_true', help="BasicSR's debug mode (name prefixed with debug_)")
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help='set by torch.distributed.launch')
    parser.add_argument('--force_yml', nargs='+', default=None, help='override options: train:total_iter=10')
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------------ options
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
    from rlfn_arch.prepare import cmd_sample, sample_ready
    sample = osp.join(root, 'datasets', 'sample')
    uses = any(str(ds.get(k, '')).startswith(sample + os.sep) for _, o in stage_list
               for ds in o['datasets'].values() for k in ('dataroot_gt', 'dataroot_lq'))
    if uses and not sample_ready(sample):
        rank = int(os.environ.get('RANK', os.environ.get('SLURM_PROCID', 0)))
        if rank == 0:
            print(f'preparing the embedded default dataset in {sample} ...', flush=True)
            cmd_sample(sample)
        else:  # under torchrun/slurm only rank 0 builds it; the others wait for sample.json
            deadline = time.time() + 600
            while not sample_ready(sample) and time.time() < deadline:
                time.sleep(1)
            if not sample_ready(sample):
                raise OptionError(f'{sample}: rank 0 did not finish preparing the sample dataset in 10 minutes')


def check_datasets(stage_list):
    """Check every paired training/validation dataset once, listing all mismatches."""
    from rlfn_arch.data.checks import check_dataset_opt
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


# -------------------------------------------------------------------------------- distributed
def init_dist(launcher, opt):
    """Start torch.distributed. basicsr's init_dist hard-codes nccl and divides by the GPU count;
    here the backend follows the device (nccl on CUDA, gloo on CPU) unless dist_params.backend says."""
    import torch
    import torch.distributed as dist
    params = dict(opt.get('dist_params') or {})
    use_cuda = torch.cuda.is_available() and opt.get('num_gpu', 'auto') != 0
    backend = params.pop('backend', None) or ('nccl' if use_cuda else 'gloo')
    if launcher == 'slurm':
        import subprocess
        proc_id, ntasks = int(os.environ['SLURM_PROCID']), int(os.environ['SLURM_NTASKS'])
        os.environ.setdefault('MASTER_PORT', str(params.pop('port', 29500)))
        os.environ['MASTER_ADDR'] = subprocess.getoutput(
            f'scontrol show hostname {os.environ["SLURM_NODELIST"]} | head -n1')
        os.environ['WORLD_SIZE'], os.environ['RANK'] = str(ntasks), str(proc_id)
        ngpu = torch.cuda.device_count()
        os.environ['LOCAL_RANK'] = str(proc_id % ngpu if ngpu else int(os.environ.get('SLURM_LOCALID', 0)))
    params.pop('port', None)
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count())
    timeout = params.pop('timeout', None)
    kwargs = {'timeout': datetime.timedelta(seconds=timeout)} if timeout else {}
    dist.init_process_group(backend=backend, **kwargs)
    if dist.get_rank() == 0:
        print(f'distributed: backend {backend}, world size {dist.get_world_size()}', flush=True)
    return dist.get_rank(), dist.get_world_size()


def check_replicas(model, label):
    """After a DDP stage, check that every rank holds bit-identical generator weights (a rank that
    drifted would mean the run is not what rank 0 saved); rank 0 logs the result, a mismatch raises."""
    import hashlib

    import torch.distributed as dist
    net = model.get_bare_model(model.net_g)
    h = hashlib.sha256()
    for k, v in net.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    digests = [None] * dist.get_world_size()
    dist.all_gather_object(digests, h.hexdigest())
    if len(set(digests)) != 1:
        raise RuntimeError(f'[{label}] DDP replicas differ after the stage: {digests}')
    if dist.get_rank() == 0:
        print(f'[{label}] DDP replicas identical on {len(digests)} ranks (sha256 {digests[0][:16]})', flush=True)


def barrier():
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


# ----------------------------------------------------------------------------------- resuming
def find_resume_state(stage_dir, device, log=print):
    """The newest loadable ``training_states/<iter>.state`` whose ``models/net_g_<iter>.pth`` loads too.

    Returns:
        (dict | None, str | None): the state and its path.
    """
    states_dir = osp.join(stage_dir, 'training_states')
    if not osp.isdir(states_dir):
        return None, None
    iters = sorted((int(f[:-6]) for f in os.listdir(states_dir) if f.endswith('.state') and f[:-6].isdigit()),
                   reverse=True)
    for it in iters:
        path = osp.join(states_dir, f'{it}.state')
        net = osp.join(stage_dir, 'models', f'net_g_{it}.pth')
        try:
            state = safe_load(path, map_location=device)
            safe_load(net)
            if state.get('iter') != it:
                raise CheckpointError(f'{path}: holds iter {state.get("iter")}, expected {it}')
            return state, path
        except CheckpointError as e:
            log(f'WARNING: cannot resume from {path} ({e}); trying the previous training state')
    return None, None


# ----------------------------------------------------------------------------- stage records
class StageRecords:
    """``stages.json``: each stage's status, final checkpoint and last validation metrics (rank 0 writes)."""

    def __init__(self, path, rank):
        self.path, self.rank = path, rank
        self.data = {'stages': {}}
        if osp.isfile(path):
            with open(path) as f:
                self.data = json.load(f)

    def get(self, name):
        return self.data['stages'].get(name, {})

    def update(self, name, **kw):
        self.data['stages'].setdefault(name, {}).update(kw)
        if self.rank == 0:
            atomic_write(self.path, lambda f: json.dump(self.data, f, indent=1), binary=False)

    def close_killed_segment(self, name, stage_dir):
        """A stage found 'running' was killed: add the wall time its last segment ran (from the segment's
        start to the newest file it wrote) to the stage's ``seconds``."""
        rec = self.get(name)
        start = rec.get('segment_start')
        if rec.get('status') != 'running' or not start or not osp.isdir(stage_dir):
            return
        newest = max((osp.getmtime(osp.join(d, f)) for d, _, fs in os.walk(stage_dir) for f in fs), default=start)
        self.update(name, seconds=round(rec.get('seconds', 0) + max(0.0, newest - start), 1), segment_start=None)


# ------------------------------------------------------------------------------------ a stage
def run_stage(opt, args, stage_dir, resume_state, stage_label, log_every_line=True):
    """Run one stage with basicsr.train.train_pipeline. Returns the trained model."""
    import math

    import basicsr.train as bt
    captured = {}
    orig_build_model, orig_loaders = bt.build_model, bt.create_train_val_dataloader

    def build_model(o):
        captured['model'] = orig_build_model(o)
        return captured['model']

    def create_train_val_dataloader(o, logger):
        # PairedImageDataset -> its subclass whose load errors name the sample (same samples, same options)
        datasets = {phase: dict(ds, type='CheckedPairedImageDataset') if ds.get('type') == 'PairedImageDataset'
                    else ds for phase, ds in o['datasets'].items()}
        train_loader, sampler, val_loaders, _, total_iters = orig_loaders(dict(o, datasets=datasets), logger)
        per_epoch = len(train_loader)  # real batches per rank per epoch (drop_last, sharded)
        if per_epoch == 0:
            ds = o['datasets']['train']
            raise OptionError(f'dataset {ds.get("name")}: {len(train_loader.dataset)} images give no full batch of '
                              f'{ds["batch_size_per_gpu"]} per process (world size {o["world_size"]})')
        total_epochs = math.ceil(total_iters / per_epoch)
        logger.info(f'Iteration accounting: {per_epoch} iters/epoch per process -> {total_epochs} epochs')
        return train_loader, sampler, val_loaders, total_epochs, total_iters

    def load_resume_state(o):
        if resume_state is not None:
            it = resume_state['iter']
            o['path']['pretrain_network_g'] = osp.join(o['path']['models'], f'net_g_{it}.pth')
            o['path']['param_key_g'] = 'params'
            o['path']['strict_load_g'] = True
        return resume_state

    # basicsr's train_pipeline copies args.opt into the stage folder; the file it copies lives in the
    # stage's own .run/ folder (never in /tmp, so a killed run leaks nothing outside its experiment)
    tmp_yml = osp.join(stage_dir, '.run', f'{opt["stage"]}.yml')
    if opt['rank'] == 0:
        os.makedirs(osp.dirname(tmp_yml), exist_ok=True)
        atomic_write(tmp_yml, lambda f: f.write(yaml_dump(_plain(opt))), binary=False)
    barrier()
    args = copy.copy(args)
    args.opt = tmp_yml
    reset_basicsr_logger()
    try:
        with mock.patch.object(bt, 'parse_options', lambda *a, **k: (opt, args)), \
                mock.patch.object(bt, 'load_resume_state', load_resume_state), \
                mock.patch.object(bt, 'create_train_val_dataloader', create_train_val_dataloader), \
                mock.patch.object(bt, 'build_model', build_model), \
                mock.patch.object(bt, 'make_exp_dirs', _make_exp_dirs), \
                mock.patch.object(bt, 'get_root_logger', logger_factory(bt.get_root_logger, stage_label)):
            bt.train_pipeline(stage_dir)
    finally:
        if opt['rank'] == 0 and osp.exists(tmp_yml):
            os.unlink(tmp_yml)
        reset_basicsr_logger()
    return captured.get('model')


def _make_exp_dirs(opt):
    """basicsr's make_exp_dirs without its rename: train_stages already archived or cleaned the folder."""
    if opt['rank'] == 0:
        for key, path in opt['path'].items():
            if key in ('experiments_root', 'models', 'training_states', 'log', 'visualization') and path:
                os.makedirs(path, exist_ok=True)


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _metrics(model):
    res = getattr(model, 'metric_results', None) if model is not None else None
    return {k: float(v) for k, v in (res or {}).items()}


def bicubic_baseline(opt):
    """PSNR/SSIM of MATLAB-bicubic upsampling on the first validation set, with the val metrics' settings."""
    import cv2
    from basicsr.metrics import calculate_metric

    from rlfn_arch.data.matlab_resize import bicubic_upsample
    val = next((d for p, d in opt['datasets'].items() if p.startswith('val')), None)
    metrics = (opt.get('val') or {}).get('metrics')
    if not val or not metrics or (val.get('io_backend') or {}).get('type', 'disk') != 'disk':
        return {}
    from rlfn_arch.data.image_io import list_images
    s = opt['scale']
    tmpl = val.get('filename_tmpl', '{}')
    sums, n = {k: 0.0 for k in metrics}, 0
    for name in list_images(val['dataroot_gt'])[0]:
        stem, ext = osp.splitext(name)
        gt = cv2.imread(osp.join(val['dataroot_gt'], name), cv2.IMREAD_COLOR)
        lq = cv2.imread(osp.join(val['dataroot_lq'], tmpl.format(stem) + ext), cv2.IMREAD_COLOR)
        if gt is None or lq is None:
            continue
        up = bicubic_upsample(lq, s)
        gt = gt[:lq.shape[0] * s, :lq.shape[1] * s]
        for k, mopt in metrics.items():
            sums[k] += calculate_metric({'img': up, 'img2': gt}, copy.deepcopy(mopt))
        n += 1
    return {k: v / n for k, v in sums.items()} if n else {}


def print_summary(records, stage_names, baseline, scale):
    rows = []
    for name in stage_names:
        r = records.get(name)
        m = r.get('metrics', {})
        rows.append((name, str(r.get('iters', '-')), f'{r.get("seconds", 0):.0f}',
                     f'{m["psnr"]:.3f}' if 'psnr' in m else '-', f'{m["ssim"]:.4f}' if 'ssim' in m else '-'))
    if baseline:
        rows.append((f'bicubic x{scale}', '-', '-', f'{baseline["psnr"]:.3f}' if 'psnr' in baseline else '-',
                     f'{baseline["ssim"]:.4f}' if 'ssim' in baseline else '-'))
    head = ('stage', 'iters', 'wall s', 'PSNR-Y', 'SSIM-Y')
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = lambda r: '| ' + ' | '.join(v.ljust(w) for v, w in zip(r, widths)) + ' |'  # noqa: E731
    print('\n' + line(head) + '\n|' + '|'.join('-' * (w + 2) for w in widths) + '|')
    for r in rows:
        print(line(r))
    sys.stdout.flush()


# --------------------------------------------------------------------------------------- main
def _worker_message(e):
    """The last line of an error re-raised from a DataLoader worker (which carries the worker's traceback)."""
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    last = lines[-1] if lines else type(e).__name__
    return last.split('DatasetSampleError: ', 1)[-1]


def main(argv=None):
    """Exit codes: 0 done; 2 options, data, names or a busy experiment refused (nothing written);
    3 too many non-finite losses; 4 a file could not be written (disk full, read-only)."""
    args = parse_args(argv)
    from rlfn_arch.test import apply_force_yml
    try:
        raw = load_options(args.opt)
        apply_force_yml(raw, args.force_yml, args.opt)
        if args.debug and isinstance(raw.get('name'), str) and not raw['name'].startswith('debug'):
            raw['name'] = 'debug_' + raw['name']
        if raw.get('manual_seed') is None:  # basicsr draws a random seed; one for every stage of the run
            raw['manual_seed'] = random.randint(1, 10000)
        stage_list = stage_options(raw, args.opt)
        root = project_root(raw)
        for _, o in stage_list:
            finalize(o, root, is_train=True, source=args.opt)
        check_pretrain(stage_list)
        ensure_sample_dataset(stage_list, root)
        check_datasets(stage_list)
    except OptionError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    from rlfn_arch.models.warmstart_model import NonFiniteLossError
    try:
        return train_stages(args, raw, stage_list, root)
    except NonFiniteLossError as e:
        print(f'error: {e}', file=sys.stderr)
        return 3
    except (OptionError, LockedError, UnsafePathError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    except DatasetSampleError as e:
        print(f'error: {_worker_message(e)}', file=sys.stderr)
        return 2
    except WriteError as e:  # atomic writes: the previous file at that path is really intact
        print(f'error: {e} (the previous version of that file is intact; free space or fix permissions, '
              'then resume with --auto_resume)', file=sys.stderr)
        return 4
    except OSError as e:  # any other write failure: say what failed, claim nothing
        print(f'error: {e.filename + ": " if getattr(e, "filename", None) else ""}{e.strerror or e}',
              file=sys.stderr)
        return 4


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
        import torch.distributed as dist
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


def _train_locked(args, raw, stage_list, root, rank, world, experiments, exp_root):
    import torch

    from basicsr.utils import set_random_seed
    name = raw['name']
    if rank == 0 and not args.auto_resume and osp.lexists(exp_root):
        _archive(exp_root, experiments)
    barrier()
    if rank == 0:
        os.makedirs(exp_root, exist_ok=True)
    barrier()
    records = StageRecords(osp.join(exp_root, STAGES_JSON), rank)
    names = [st or 'train' for st, _ in stage_list]
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
        if prev_final and not raw.get('stages', [{}])[k].get('path', {}).get('pretrain_network_g'):
            ckpt = safe_load(prev_final)
            opt['path']['pretrain_network_g'] = prev_final
            opt['path']['param_key_g'] = 'params_ema' if 'params_ema' in ckpt else 'params'
            opt['path']['strict_load_g'] = True
        set_random_seed(opt['manual_seed'] + rank)
        device = torch.device('cuda' if opt['num_gpu'] else 'cpu')
        resume_state = None
        if args.auto_resume:
            if rank == 0:
                records.close_killed_segment(label, stage_dir)
                for folder in (opt['path']['models'], opt['path']['training_states']):
                    for f in remove_stale_tmp(folder):
                        print(f'[{label}] removed {f} (a write interrupted by the kill)', flush=True)
            resume_state, state_path = find_resume_state(stage_dir, device)
            if resume_state is not None and rank == 0:
                print(f'[{label}] resuming from {state_path} (iter {resume_state["iter"]})', flush=True)
            if world > 1:  # every rank must continue from the same stage and iteration
                import torch.distributed as dist
                its = [None] * world
                dist.all_gather_object(its, None if resume_state is None else resume_state['iter'])
                if len(set(its)) != 1:
                    raise RuntimeError(f'[{label}] ranks found different resume states: {its}')
        if resume_state is None and rank == 0 and osp.isdir(stage_dir):
            _clean_unfinished_stage(stage_dir, exp_root)
        barrier()
        t0 = time.time()
        records.update(label, status='running', init_from=opt['path'].get('pretrain_network_g'),
                       total_iter=opt['train']['total_iter'], segment_start=t0)
        init_path = osp.join(stage_dir, 'models', 'net_g_init.pth')
        with _save_init(init_path, resume_state is None):
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
        final_path = osp.join(exp_root, 'net_g_final.pth')
        atomic_save(safe_load(prev_final), final_path)
        records.update(names[-1], final_model=final_path)
        baseline = bicubic_baseline(stage_list[-1][1])
        records.data['bicubic'] = baseline
        records.update(names[-1])
        print_summary(records, names, baseline, stage_list[-1][1]['scale'])
        print(f'final model: {final_path}', flush=True)
    barrier()
    return 0


class _save_init:
    """Save the generator as built at the start of a fresh stage (models/net_g_init.pth): the exact
    weights a warm-started stage begins from, for audit and for the tests."""

    def __init__(self, path, enabled):
        self.path, self.enabled = path, enabled
        self.patch = None

    def __enter__(self):
        if not self.enabled:
            return self
        from rlfn_arch.models.warmstart_model import WarmStartModel
        path = self.path
        orig = WarmStartModel.init_training_settings

        def init_training_settings(model):
            if model.opt['rank'] == 0:
                os.makedirs(osp.dirname(path), exist_ok=True)
                model.save_network(model.net_g, 'net_g', 'init')
            return orig(model)

        self.patch = mock.patch.object(WarmStartModel, 'init_training_settings', init_training_settings)
        self.patch.start()
        return self

    def __exit__(self, *exc):
        if self.patch:
            self.patch.stop()


if __name__ == '__main__':
    sys.exit(main())
