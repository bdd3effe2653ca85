"""The one seam between this project and BasicSR's internals. Nothing else reaches into basicsr.

Everything else uses basicsr's public API only: the registries, ``build_network``/``build_loss``,
``SRModel`` (subclassed), ``PairedImageDataset`` (subclassed), the metrics, ``lmdb_util``,
``set_random_seed`` and ``get_root_logger``. What this module touches, and why (basicsr 1.4.2; the test
``tests/unit/seam/test_seam.py`` pins every name against the installed basicsr, so an upgrade that
renames one fails there, with one message):

=====================================================  =========================================================
basicsr name                                           touched because
=====================================================  =========================================================
import of torchvision.transforms.functional_tensor     removed in torchvision 0.17: an alias module is registered
                                                       before basicsr is imported (:func:`install`)
import of distutils.version.LooseVersion               gone in Python 3.12: a minimal stand-in where missing
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
import importlib
import os
import sys

_OLD_NAME = 'torchvision.transforms.functional_tensor'


def install():
    """Register the ``functional_tensor`` alias if torchvision no longer provides it. Idempotent."""
    if _OLD_NAME in sys.modules:
        return
    try:
        importlib.import_module(_OLD_NAME)
        return  # an old torchvision that still has it
    except ImportError:
        pass
    try:
        new = importlib.import_module('torchvision.transforms._functional_tensor')
    except ImportError:  # pragma: no cover - future torchvision without the private module
        import types

        from torchvision.transforms import functional
        new = types.ModuleType(_OLD_NAME)
        new.rgb_to_grayscale = functional.rgb_to_grayscale
    sys.modules[_OLD_NAME] = new


def install_distutils():
    """Make ``from distutils.version import LooseVersion`` work on Python >= 3.12. Idempotent."""
    try:
        importlib.import_module('distutils.version')
        return
    except ImportError:
        pass
    import re
    import types

    class LooseVersion:
        """Enough of distutils' LooseVersion for basicsr: parse '1.2.3a' into comparable parts."""

        def __init__(self, vstring):
            self.vstring = str(vstring)
            self.version = [int(p) if p.isdigit() else p for p in re.findall(r'\d+|[a-z]+', self.vstring.lower())]

        def _cmp(self, other):
            other = other if isinstance(other, LooseVersion) else LooseVersion(other)
            a, b = [str(x).zfill(8) for x in self.version], [str(x).zfill(8) for x in other.version]
            return (a > b) - (a < b)

        def __eq__(self, other):
            return self._cmp(other) == 0

        def __lt__(self, other):
            return self._cmp(other) < 0

        def __le__(self, other):
            return self._cmp(other) <= 0

        def __gt__(self, other):
            return self._cmp(other) > 0

        def __ge__(self, other):
            return self._cmp(other) >= 0

    pkg = sys.modules.get('distutils') or types.ModuleType('distutils')
    pkg.__path__ = getattr(pkg, '__path__', [])
    version = types.ModuleType('distutils.version')
    version.LooseVersion = LooseVersion
    pkg.version = version
    sys.modules['distutils'] = pkg
    sys.modules['distutils.version'] = version


install()
install_distutils()

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


def run_stage(plan, resume_state, args=None, sampler=None):
    """Run one stage plan with ``basicsr.train.train_pipeline``, BasicSR's own loop, unchanged.

    Args:
        plan (StagePlan): the stage (:mod:`rlfn_arch.training.plan`); its options are read, never changed:
            BasicSR receives a mutable copy.
        resume_state (dict | None): the loaded training state the plan names.
        args (argparse.Namespace | None): what basicsr's ``parse_options`` would return as ``args``.
        sampler (type | None): the training sampler class used in place of basicsr's ``EnlargedSampler``
            (:class:`rlfn_arch.data.sampler.ResumableSampler`; built with the seed, the batch size and the
            resume position). None keeps basicsr's.

    Returns:
        The trained model (BasicSR's model object).
    """
    import argparse
    import math

    import torch.distributed as dist

    import basicsr.train as bt
    from basicsr.utils import set_random_seed

    from .utils.fs import atomic_write
    from .utils.options import thaw, yaml_dump

    opt = thaw(plan.options)
    args = args or argparse.Namespace(opt=f'{plan.label}.yml', launcher='pytorch' if opt['dist'] else 'none',
                                      auto_resume=opt['auto_resume'], debug=False, local_rank=0, force_yml=None)
    captured = {}
    orig_build_model, orig_loaders = bt.build_model, bt.create_train_val_dataloader

    def build_model(o):
        model = captured['model'] = orig_build_model(o)
        if hasattr(model, 'attach_sampler') and hasattr(captured.get('sampler'), 'state'):
            model.attach_sampler(captured['sampler'])  # its position is saved with each training state
        return model

    def create_train_val_dataloader(o, logger):
        # PairedImageDataset -> its subclass whose load errors name the sample (same samples, same options)
        datasets = {phase: dict(ds, type='CheckedPairedImageDataset') if ds.get('type') == 'PairedImageDataset'
                    else ds for phase, ds in o['datasets'].items()}
        train_loader, train_sampler, val_loaders, _, total_iters = orig_loaders(dict(o, datasets=datasets), logger)
        captured['sampler'] = train_sampler
        per_epoch = len(train_loader)  # real batches per rank per epoch (drop_last, sharded)
        if per_epoch == 0:  # the pre-flight check says this first; a second line
            ds = o['datasets']['train']
            raise TrainDataError(f'dataset {ds.get("name")}: {len(train_loader.dataset)} images give no full batch '
                                 f'of {ds["batch_size_per_gpu"]} per process (world size {o["world_size"]})')
        if getattr(train_sampler, 'resume_note', None):
            logger.warning(f'Resume: {train_sampler.resume_note}')
        if hasattr(train_sampler, 'epochs_to_reach'):  # counts from where its epochs start (moved by a data change)
            total_epochs = train_sampler.epochs_to_reach(total_iters)
        else:
            total_epochs = math.ceil(total_iters / per_epoch)
        logger.info(f'Iteration accounting: {per_epoch} iters/epoch per process -> {total_epochs} epochs')
        return train_loader, train_sampler, val_loaders, total_epochs, total_iters

    def make_exp_dirs(o):
        if o['rank'] == 0:
            for key in ('experiments_root', 'models', 'training_states', 'log', 'visualization'):
                if o['path'].get(key):
                    os.makedirs(o['path'][key], exist_ok=True)

    def copy_opt_file(_opt_file, experiments_root):
        if opt['rank'] == 0:
            head = f'# the finalized options of stage {plan.label} (python -m rlfn_arch.train)\n'
            atomic_write(os.path.join(experiments_root, f'{plan.label}.yml'),
                         lambda f: f.write(head + yaml_dump(thaw(plan.options))), binary=False)

    def make_sampler(dataset, num_replicas, rank, ratio=1):
        return sampler(dataset, num_replicas, rank, ratio, seed=opt['manual_seed'],
                       batch_size=opt['datasets']['train']['batch_size_per_gpu'],
                       resume_epoch=resume_state['epoch'] if resume_state else None,
                       resume_iter=resume_state['iter'] if resume_state else None,
                       saved=resume_state.get('sampler') if resume_state else None)

    set_random_seed(opt['manual_seed'] + opt['rank'])
    reset_basicsr_logger()
    try:
        with swapped(bt, parse_options=lambda *a, **k: (opt, args), load_resume_state=lambda o: resume_state,
                     EnlargedSampler=make_sampler if sampler else bt.EnlargedSampler,
                     create_train_val_dataloader=create_train_val_dataloader, build_model=build_model,
                     make_exp_dirs=make_exp_dirs, copy_opt_file=copy_opt_file,
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
