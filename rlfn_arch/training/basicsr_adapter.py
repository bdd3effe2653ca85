"""How one stage runs inside ``basicsr.train.train_pipeline``, BasicSR's own training loop, unchanged.

``train_pipeline(root_path)`` takes no options argument: it calls module-level functions of
``basicsr.train`` for everything around the loop. :func:`run_stage` swaps six of them for the duration
of one stage (:class:`swapped` puts the originals back, also on an error). Following ``opt`` from the
YAML: ``rlfn_arch.train.main`` loads and checks it, :func:`rlfn_arch.training.runner.train_stages`
merges each stage and finalizes its paths, and the first swap below hands that dict to
``train_pipeline``, which builds datasets, the model and the loop from it exactly as BasicSR does.

=============================  =====================================================================
basicsr.train name             replaced because (basicsr 1.4.2 line it replaces)
=============================  =====================================================================
parse_options                  returns our already-checked ``opt`` and args (``opt, args =
                               parse_options(root_path, is_train=True)``): basicsr's parser reads the
                               YAML unsafely, execs --force_yml and hard-codes nccl
load_resume_state              the stage's own newest loadable state, found before the stage starts
                               (``resume_state = load_resume_state(opt)``): basicsr looks relative to
                               the working directory and maps to CUDA
create_train_val_dataloader    epochs from the real batches per rank (``drop_last``), and the checked
                               dataset class whose errors name the sample (``result =
                               create_train_val_dataloader(opt, logger)``)
build_model                    the same builder, but keeps the model so the runner can read its final
                               metrics and check DDP replicas (``model = build_model(opt)``)
make_exp_dirs                  creates the folders without basicsr's rename-on-exist: the runner has
                               already archived or cleaned them, inside the folder it owns
get_root_logger                the stage name on every log line, console on stdout
=============================  =====================================================================
"""
import copy
import math
import os
from os import path as osp

from rlfn_arch.utils.fs import atomic_write
from rlfn_arch.utils.options import OptionError, yaml_dump
from rlfn_arch.utils.runtime import logger_factory, reset_basicsr_logger

import basicsr.train as bt

from .distributed import barrier


class swapped:
    """Context manager: set attributes of ``module`` to ``replacements`` and restore the originals on exit.

    Example:
        >>> with swapped(bt, build_model=my_builder):
        ...     bt.train_pipeline(root)
    """

    def __init__(self, module, **replacements):
        missing = [name for name in replacements if not hasattr(module, name)]
        if missing:  # a basicsr release that renamed one: fail loudly instead of silently doing nothing
            raise AttributeError(f'{module.__name__} has no {missing}; this basicsr version is not supported')
        self.module, self.replacements, self.originals = module, replacements, {}

    def __enter__(self):
        for name, value in self.replacements.items():
            self.originals[name] = getattr(self.module, name)
            setattr(self.module, name, value)
        return self

    def __exit__(self, *exc):
        for name, value in self.originals.items():
            setattr(self.module, name, value)


def make_exp_dirs(opt):
    """basicsr's make_exp_dirs without its rename: the runner already archived or cleaned the folder."""
    if opt['rank'] == 0:
        for key, path in opt['path'].items():
            if key in ('experiments_root', 'models', 'training_states', 'log', 'visualization') and path:
                os.makedirs(path, exist_ok=True)


def plain(obj):
    """OrderedDicts and tuples as plain dicts and lists (for YAML output)."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def run_stage(opt, args, stage_dir, resume_state, stage_label):
    """Run one stage with ``basicsr.train.train_pipeline``. Returns the trained model."""
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
        atomic_write(tmp_yml, lambda f: f.write(yaml_dump(plain(opt))), binary=False)
    barrier()
    args = copy.copy(args)
    args.opt = tmp_yml
    reset_basicsr_logger()
    try:
        with swapped(bt, parse_options=lambda *a, **k: (opt, args), load_resume_state=load_resume_state,
                     create_train_val_dataloader=create_train_val_dataloader, build_model=build_model,
                     make_exp_dirs=make_exp_dirs, get_root_logger=logger_factory(bt.get_root_logger, stage_label)):
            bt.train_pipeline(stage_dir)
    finally:
        if opt['rank'] == 0 and osp.exists(tmp_yml):
            os.unlink(tmp_yml)
        reset_basicsr_logger()
    return captured.get('model')
