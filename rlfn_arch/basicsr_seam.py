"""The one seam between this project and BasicSR's internals. Nothing else reaches into basicsr (the import-time
shims that let basicsr 1.4.2 import at all live in :mod:`rlfn_arch.compat`).

Everything else uses basicsr's public API only: the registries, ``build_network``/``build_loss``,
``SRModel`` (subclassed), ``PairedImageDataset`` (subclassed), the metrics, ``lmdb_util``,
``set_random_seed`` and ``get_root_logger``. What this module touches, and why (basicsr 1.4.2; the test
``tests/unit/seam/test_seam.py`` pins every name against the installed basicsr, so an upgrade that
renames one fails there, with one message):

=====================================================  =========================================================
basicsr name                                           touched because
=====================================================  =========================================================
basicsr.train.parse_options                            returns the plan's checked options: basicsr's parser reads
                                                       the YAML unsafely, execs --force_yml, hard-codes nccl
basicsr.train.load_resume_state                        the plan's training state (basicsr looks relative to the
                                                       working directory and maps to CUDA)
basicsr.train.create_train_val_dataloader              epochs from the real batches per rank (``drop_last``), and
                                                       the checked dataset class whose errors name the sample
basicsr.train.EnlargedSampler                          :class:`rlfn_arch.data.sampler.ResumableSampler`: the same
                                                       order, resumed at the batch where the run stopped (its
                                                       position is saved with each training state), and
                                                       per-sample augmentation keys (a resumed run is the same run)
basicsr.train.build_model                              the same builder, but the runner keeps the model (final
                                                       metrics, DDP replica check)
basicsr.train.make_exp_dirs                            creates the folders without basicsr's rename-on-exist: the
                                                       runner already archived an old folder, inside what it owns
basicsr.train.copy_opt_file                            writes the plan's finalized options atomically into the
                                                       stage folder. ``train_pipeline(root_path)`` takes no
                                                       options argument and copies ``args.opt`` (a file path), so
                                                       without this swap a temporary YAML file would be needed
basicsr.train.get_root_logger, basicsr.test.*          the stage name on every log line, console on stdout
basicsr.test.parse_options                             the checked test options (same reasons as for training)
basicsr.utils.logger.initialized_logger                forgotten between stages, so each stage gets its own log
basicsr.utils.lmdb_util.tqdm                           a disabled bar off a terminal (one bar per image floods
                                                       logs); the summary line still reports the work
=====================================================  =========================================================
"""
import os
import sys

from . import compat  # noqa: F401  the import-time shims, before anything imports basicsr

#: Every basicsr attribute this module swaps or reads, by module (pinned by the seam test).
TOUCHED = {
    'basicsr.train': ('train_pipeline', 'parse_options', 'load_resume_state', 'create_train_val_dataloader',
                      'EnlargedSampler', 'build_model', 'make_exp_dirs', 'copy_opt_file', 'get_root_logger'),
    'basicsr.test': ('test_pipeline', 'parse_options', 'get_root_logger'),
    'basicsr.utils.logger': ('initialized_logger', ),
    'basicsr.utils.lmdb_util': ('tqdm', 'make_lmdb_from_imgs'),
}


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


def quiet_lmdb_progress(quiet):
    """``basicsr.utils.lmdb_util``'s per-image progress bar disabled when ``quiet`` (a no-op otherwise)."""
    from functools import partial

    from tqdm import tqdm

    from basicsr.utils import lmdb_util
    return swapped(lmdb_util, tqdm=partial(tqdm, disable=True)) if quiet else swapped(lmdb_util)


# ------------------------------------------------------------------------------------------- logging
class _PrefixFilter:

    def __init__(self, prefix):
        self.prefix = prefix

    def filter(self, record):
        if self.prefix and not getattr(record, '_rlfn_prefixed', False):
            record.msg = f'[{self.prefix}] {record.msg}'
            record._rlfn_prefixed = True
        return True


def reset_basicsr_logger():
    """Forget basicsr's 'basicsr' logger so the next get_root_logger() opens a new log file."""
    import logging

    from basicsr.utils import logger as bl
    lg = logging.getLogger('basicsr')
    for h in list(lg.handlers):
        lg.removeHandler(h)
        h.close()
    for f in list(lg.filters):
        lg.removeFilter(f)
    bl.initialized_logger.pop('basicsr', None)


def logger_factory(original, prefix=None):
    """Wrap basicsr's get_root_logger: console output to stdout, every line tagged with ``prefix``."""
    import logging

    def get_root_logger(*args, **kwargs):
        lg = original(*args, **kwargs)
        for h in lg.handlers:
            if type(h) is logging.StreamHandler and h.stream is sys.stderr:
                h.setStream(sys.stdout)
        if prefix and not any(isinstance(f, _PrefixFilter) for f in lg.filters):
            lg.addFilter(_PrefixFilter(prefix))
        return lg

    return get_root_logger


# ------------------------------------------------------------------------------------------ training
class TrainDataError(ValueError):
    """The training data gives no full batch per process (raised while the loaders are built)."""


def _loaders(original, captured):
    """basicsr's ``create_train_val_dataloader`` with the checked dataset class, the epochs counted from the real
    batches per process (``drop_last``, sharded; from where the sampler's epochs start), and the sampler kept."""
    import math

    def create_train_val_dataloader(o, logger):
        # PairedImageDataset -> its subclass whose load errors name the sample (same samples, same options)
        datasets = {phase: dict(ds, type='CheckedPairedImageDataset') if ds.get('type') == 'PairedImageDataset'
                    else ds for phase, ds in o['datasets'].items()}
        train_loader, train_sampler, val_loaders, _, total_iters = original(dict(o, datasets=datasets), logger)
        captured['sampler'] = train_sampler
        per_epoch = len(train_loader)
        if per_epoch == 0:  # the pre-flight check says this first; a second line
            ds = o['datasets']['train']
            raise TrainDataError(f'dataset {ds.get("name")}: {len(train_loader.dataset)} images give no full batch '
                                 f'of {ds["batch_size_per_gpu"]} per process (world size {o["world_size"]})')
        if getattr(train_sampler, 'resume_note', None):
            logger.warning(f'Resume: {train_sampler.resume_note}')
        total_epochs = train_sampler.epochs_to_reach(total_iters) if hasattr(train_sampler, 'epochs_to_reach') \
            else math.ceil(total_iters / per_epoch)
        logger.info(f'Iteration accounting: {per_epoch} iters/epoch per process -> {total_epochs} epochs')
        return train_loader, train_sampler, val_loaders, total_epochs, total_iters
    return create_train_val_dataloader


def _model_builder(original, captured):
    """basicsr's ``build_model``, keeping the model (final metrics, DDP replica check) and handing it the sampler
    whose position it saves with each training state."""
    def build_model(o):
        model = captured['model'] = original(o)
        if hasattr(model, 'attach_sampler') and hasattr(captured.get('sampler'), 'state'):
            model.attach_sampler(captured['sampler'])
        return model
    return build_model


def _make_exp_dirs(o):
    """The stage's folders, without basicsr's rename-on-exist (the runner archived an old folder already)."""
    if o['rank'] == 0:
        for key in ('experiments_root', 'models', 'training_states', 'log', 'visualization'):
            if o['path'].get(key):
                os.makedirs(o['path'][key], exist_ok=True)


def _options_copier(plan, rank):
    """Writes the plan's finalized options into the stage folder (basicsr would copy ``args.opt``, a path)."""
    from .utils.fs import atomic_write
    from .utils.options import thaw, yaml_dump

    def copy_opt_file(_opt_file, experiments_root):
        if rank == 0:
            head = f'# the finalized options of stage {plan.label} (python -m rlfn_arch.train)\n'
            atomic_write(os.path.join(experiments_root, f'{plan.label}.yml'),
                         lambda f: f.write(head + yaml_dump(thaw(plan.options))), binary=False)
    return copy_opt_file


def run_stage(plan, resume_state, args=None, sampler=None):
    """Run one stage plan with ``basicsr.train.train_pipeline``, BasicSR's own loop, unchanged.

    Args:
        plan (StagePlan): the stage (:mod:`rlfn_arch.training.plan`); its options are read, never changed:
            BasicSR receives a mutable copy.
        resume_state (dict | None): the loaded training state the plan names.
        args (argparse.Namespace | None): what basicsr's ``parse_options`` would return as ``args``.
        sampler (callable | None): builds the training sampler in place of basicsr's ``EnlargedSampler``, with
            its signature (:meth:`rlfn_arch.data.sampler.ResumableSampler.for_run`). None keeps basicsr's.

    Returns:
        The trained model (BasicSR's model object).
    """
    import argparse

    import torch.distributed as dist

    import basicsr.train as bt
    from basicsr.utils import set_random_seed

    from .utils.options import thaw

    opt = thaw(plan.options)
    args = args or argparse.Namespace(opt=f'{plan.label}.yml', launcher='pytorch' if opt['dist'] else 'none',
                                      auto_resume=opt['auto_resume'], debug=False, local_rank=0, force_yml=None)
    captured = {}
    set_random_seed(opt['manual_seed'] + opt['rank'])
    reset_basicsr_logger()
    try:
        with swapped(bt, parse_options=lambda *a, **k: (opt, args), load_resume_state=lambda o: resume_state,
                     EnlargedSampler=sampler or bt.EnlargedSampler,
                     create_train_val_dataloader=_loaders(bt.create_train_val_dataloader, captured),
                     build_model=_model_builder(bt.build_model, captured), make_exp_dirs=_make_exp_dirs,
                     copy_opt_file=_options_copier(plan, opt['rank']),
                     get_root_logger=logger_factory(bt.get_root_logger, plan.label)):
            if dist.is_available() and dist.is_initialized():
                dist.barrier()
            bt.train_pipeline(plan.folder)
    finally:
        reset_basicsr_logger()
    return captured.get('model')


# ------------------------------------------------------------------------------------------- testing
def run_test(opt, args, root):
    """``basicsr.test.test_pipeline(root)`` on our checked, finalized options; console log on stdout.

    basicsr's test pipeline calls ``parse_options`` itself (unsafe YAML, exec'd --force_yml): it gets our
    options instead."""
    import basicsr.test as bt
    reset_basicsr_logger()
    try:
        with swapped(bt, parse_options=lambda *a, **k: (opt, args), get_root_logger=logger_factory(bt.get_root_logger)):
            bt.test_pipeline(root)
    finally:
        reset_basicsr_logger()
