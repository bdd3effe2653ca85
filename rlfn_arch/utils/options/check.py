"""Strict option checks: every unknown key, wrong type and out-of-range value, listed with the file,
the key path and what was expected (with a "did you mean")."""
import difflib
import inspect

import torch

from basicsr.models import lr_scheduler
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

from ..precision import PRECISIONS
from .errors import OptionError
from .schema import (
    _DATASET_COMMON,
    _DIST,
    _FLOAT_RE,
    _IO_BACKEND,
    _LOGGER,
    _METRIC_COMMON,
    _PAIRED,
    _PATH,
    _QAT,
    _STAGE,
    _STRING_KEYS,
    _TOP,
    _TRAIN_BASE,
    _VAL,
    _WANDB,
    CROSS_SCALE_MODES,
    INT8_CONV_SETS,
    LOSS_KEYS,
    QAT_PLACEMENTS,
    QAT_RANGES,
    QAT_TARGETS,
    QAT_WEIGHT_BITS,
    name_problem,
    qat_problem,
    qat_settings,
)


def _suggest(key, allowed):
    close = difflib.get_close_matches(str(key), sorted(allowed), n=1, cutoff=0.6)
    return f'; did you mean {close[0]!r}?' if close else ''


class _Checker:

    def __init__(self, source):
        self.source = source
        self.errors = []
        self.network = None  # the network_g built on the meta device, when it builds

    def err(self, path, msg):
        self.errors.append(f'{self.source}: {path}: {msg}')

    def keys(self, mapping, allowed, path):
        if mapping is None:
            return
        if not isinstance(mapping, dict):
            self.err(path, f'expected a mapping, got {type(mapping).__name__} {mapping!r}')
            return
        for k in mapping:
            if k not in allowed:
                self.err(f'{path}.{k}' if path else str(k),
                         f'unknown key {k!r}{_suggest(k, allowed)} (allowed: {", ".join(sorted(allowed))})')

    def strings_as_numbers(self, obj, path=''):
        if isinstance(obj, dict):
            for k, v in obj.items():
                p = f'{path}.{k}' if path else str(k)
                if isinstance(v, str) and k not in _STRING_KEYS and _FLOAT_RE.match(v.strip()):
                    self.err(p, f'{v!r} was read as a string, not a number (YAML reads 1e-3 without a dot as '
                             f'text); write `{k}: !!float {v}`')
                else:
                    self.strings_as_numbers(v, p)
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                self.strings_as_numbers(v, f'{path}[{i}]')


def _signature_keys(obj, skip=(), ignore_var_keyword=False):
    """Keyword arguments a class or function accepts (None if it takes **kwargs: anything goes).

    ``ignore_var_keyword``: treat ``**kwargs`` as accepting nothing (basicsr's metric functions take
    ``**kwargs`` only to swallow extra keys, so a typo there would be silently ignored).
    """
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return None
    if not ignore_var_keyword and any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return None
    return {n for n, p in params.items() if n not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _registered(registry, name, what, ck, path):
    """The registered class or function ``name``, or None with an error (public registry API only:
    ``in`` and ``keys()``; ``get`` is called only for known names, as it prints for unknown ones)."""
    if name is None:
        ck.err(f'{path}.type', f'missing; expected a registered {what}')
        return None
    if name not in registry:
        ck.err(f'{path}.type', f'unknown {what} {name!r}{_suggest(name, registry.keys())}')
        return None
    return registry.get(name)


def _check_typed(section, registry, what, ck, path, skip=('self', )):
    if section is None:
        return
    if not isinstance(section, dict):
        ck.err(path, f'expected a mapping with a "type", got {section!r}')
        return
    cls = _registered(registry, section.get('type'), what, ck, path)
    if cls is None:
        return
    allowed = _signature_keys(cls, skip)
    if allowed is not None:
        ck.keys(section, allowed | {'type'}, path)


def _check_optim(section, ck, path):
    if section is None:
        return
    name = section.get('type') if isinstance(section, dict) else None
    cls = getattr(torch.optim, str(name), None) if name else None
    if name != 'Adam':  # basicsr 1.4.2's get_optimizer supports Adam only
        ck.err(f'{path}.type', f'{name!r} is not supported by basicsr 1.4.2 (only Adam)')
        return
    allowed = _signature_keys(cls, ('self', 'params'))
    ck.keys(section, (allowed or set()) | {'type'}, path)
    _positive_number(section.get('lr'), ck, f'{path}.lr', required=True)


def _check_scheduler(section, ck, path):
    if section is None:
        return
    name = section.get('type') if isinstance(section, dict) else None
    classes = {'MultiStepLR': lr_scheduler.MultiStepRestartLR, 'MultiStepRestartLR': lr_scheduler.MultiStepRestartLR,
               'CosineAnnealingRestartLR': lr_scheduler.CosineAnnealingRestartLR}
    if name not in classes:
        ck.err(f'{path}.type', f'unknown scheduler {name!r}{_suggest(name, classes)} (allowed: {", ".join(classes)})')
        return
    ck.keys(section, _signature_keys(classes[name], ('self', 'optimizer', 'last_epoch')) | {'type'}, path)
    if 'eta_min' in section:
        _number(section['eta_min'], ck, f'{path}.eta_min', minimum=0)
    if 'gamma' in section:
        _positive_number(section['gamma'], ck, f'{path}.gamma')
    for key in ('periods', 'milestones', 'restarts'):
        if key in section:
            _int_list(section[key], ck, f'{path}.{key}', minimum=1 if key == 'periods' else 0)
    if 'restart_weights' in section:
        weights = section['restart_weights']
        if not isinstance(weights, list) or not all(_is_number(w) and w >= 0 for w in weights):
            ck.err(f'{path}.restart_weights', f'must be a list of numbers >= 0, got {weights!r}')
        elif name == 'CosineAnnealingRestartLR' and isinstance(section.get('periods'), list) \
                and len(weights) != len(section['periods']):
            ck.err(f'{path}.restart_weights', f'has {len(weights)} entries for {len(section["periods"])} periods')


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value, ck, path, minimum=None):
    if not _is_number(value) or value != value:
        ck.err(path, f'must be a number, got {value!r}')
    elif minimum is not None and value < minimum:
        ck.err(path, f'must be >= {minimum}, got {value!r}')


def _positive_number(value, ck, path, required=False):
    if value is None and not required:
        return
    if not _is_number(value) or not value > 0 or value == float('inf'):
        ck.err(path, f'must be a positive number, got {value!r}')


def _int_list(value, ck, path, minimum=0):
    if not isinstance(value, list) or not value or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value):
        ck.err(path, f'must be a non-empty list of integers >= {minimum}, got {value!r}')


def _positive_int(value, ck, path, minimum=1):
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < minimum:
        ck.err(path, f'must be an integer >= {minimum}, got {value!r}')


def check_options(opt, source='<options>', is_train=True):
    """Check a (stage-merged) option dict against what BasicSR and our classes read.

    Raises:
        OptionError: listing every problem, each with the file, the key path and what was expected.
    """

    ck = _Checker(source)
    _check_top(opt, ck)
    datasets = _check_datasets(opt, ck)
    if is_train and 'train' not in datasets:
        ck.err('datasets.train', 'missing; a training option file needs a train dataset')
    if is_train:
        _check_train(opt, ck)
    _check_val(opt.get('val'), ck)
    _check_logging(opt, ck)
    if ck.errors:
        raise OptionError('invalid options:\n  ' + '\n  '.join(ck.errors))


def _check_top(opt, ck):
    """Top-level keys, name, scale, device, model and network."""
    ck.keys(opt, _TOP, '')
    ck.strings_as_numbers(opt)
    problem = name_problem(opt.get('name'))
    if problem:
        ck.err('name', problem)
    scale = opt.get('scale')
    if scale not in (2, 3, 4):
        ck.err('scale', f'must be 2, 3 or 4, got {scale!r}')
    if opt.get('num_gpu', 'auto') not in ('auto', ) and not (isinstance(opt.get('num_gpu'), int)
                                                           and opt.get('num_gpu') >= 0):
        ck.err('num_gpu', f'must be "auto" or an integer >= 0, got {opt.get("num_gpu")!r}')
    model_type = opt.get('model_type')
    if model_type is not None and model_type not in MODEL_REGISTRY:
        ck.err('model_type', f'unknown model {model_type!r}{_suggest(model_type, MODEL_REGISTRY.keys())}')
    net = opt.get('network_g')
    _check_typed(net, ARCH_REGISTRY, 'architecture', ck, 'network_g')
    if isinstance(net, dict) and net.get('type') in ('RLFN', 'RFDN') and 'upscale' in net and net['upscale'] != scale:
        ck.err('network_g.upscale', f'{net["upscale"]} differs from scale: {scale}')
    elif isinstance(net, dict) and net.get('type') in ARCH_REGISTRY and not any('network_g' in e for e in ck.errors):
        _check_builds(net, ck)


def _check_builds(net, ck):
    """Build the network on the meta device (no memory, no weights): settings the constructor refuses
    (``block: foo``, a negative width, ``upscale: 4.0``) are option errors before anything is touched."""
    try:
        with torch.device('meta'):
            ck.network = ARCH_REGISTRY.get(net['type'])(**{k: v for k, v in net.items() if k != 'type'})
    except (TypeError, ValueError, RuntimeError, AssertionError) as e:
        ck.err('network_g', f'{net["type"]} cannot be built from these settings: {str(e).strip().splitlines()[0]}')


def _check_datasets(opt, ck):
    """Every dataset block; returns the datasets mapping ({} when missing)."""
    scale = opt.get('scale')
    net_name, min_size = _min_input_size(opt.get('network_g'))
    datasets = opt.get('datasets')
    if not isinstance(datasets, dict) or not datasets:
        ck.err('datasets', 'missing or empty; expected train/val_*/test_* entries')
        datasets = {}
    for phase, ds in datasets.items():
        p = f'datasets.{phase}'
        if phase.split('_')[0] not in ('train', 'val', 'test'):
            ck.err(p, 'phase names must be train, val[_*] or test[_*]')
        if not isinstance(ds, dict):
            ck.err(p, f'expected a mapping, got {ds!r}')
            continue
        cls = _registered(DATASET_REGISTRY, ds.get('type'), 'dataset', ck, p)
        allowed = set(_DATASET_COMMON)
        if cls is not None and cls.__name__ in ('PairedImageDataset', 'CheckedPairedImageDataset'):
            allowed |= _PAIRED
        elif cls is not None:
            allowed = None  # other datasets read keys we do not model; accept them
        if allowed is not None:
            ck.keys(ds, allowed, p)
        if isinstance(ds.get('io_backend'), dict):
            ck.keys(ds['io_backend'], _IO_BACKEND, f'{p}.io_backend')
        elif 'io_backend' not in ds:
            ck.err(f'{p}.io_backend', 'missing; expected {type: disk} or {type: lmdb}')
        if phase == 'train':
            _positive_int(ds.get('batch_size_per_gpu'), ck, f'{p}.batch_size_per_gpu')
            _positive_int(ds.get('num_worker_per_gpu'), ck, f'{p}.num_worker_per_gpu', 0)
            gt = ds.get('gt_size')
            _positive_int(gt, ck, f'{p}.gt_size')
            if isinstance(gt, int) and scale in (2, 3, 4):
                if gt % scale:
                    ck.err(f'{p}.gt_size', f'{gt} is not divisible by scale {scale}')
                elif gt // scale < min_size:
                    ck.err(f'{p}.gt_size', f'{gt} gives an LR patch of {gt // scale}px; {net_name} needs at least '
                           f'{min_size} (gt_size >= {min_size * scale})')
    return datasets


def _min_input_size(net):
    """(type, smallest LR patch) of the registered network class (its ``min_input_size``; 1 if it has none)."""
    name = net.get('type') if isinstance(net, dict) else None
    cls = ARCH_REGISTRY.get(name) if name in ARCH_REGISTRY else None
    return name, getattr(cls, 'min_input_size', 1)


def _check_train(opt, ck):
    """The train section: optimizer, scheduler, iterations, losses, EMA, precision."""
    train = opt.get('train')
    if not isinstance(train, dict):
        ck.err('train', 'missing; expected optim_g, scheduler, total_iter and a loss')
        return
    ck.keys(train, _TRAIN_BASE, 'train')
    _check_optim(train.get('optim_g'), ck, 'train.optim_g')
    _check_scheduler(train.get('scheduler'), ck, 'train.scheduler')
    _positive_int(train.get('total_iter'), ck, 'train.total_iter')
    for loss_key in LOSS_KEYS:
        _check_typed(train.get(loss_key), LOSS_REGISTRY, 'loss', ck, f'train.{loss_key}')
    if train.get('contrastive_opt') and opt.get('model_type') != 'WarmStartModel':
        ck.err('train.contrastive_opt', f'needs model_type: WarmStartModel (model_type is '
               f'{opt.get("model_type")!r}, which would ignore it: it cannot feed the loss the LR input)')
    ema = train.get('ema_decay', 0)
    if not isinstance(ema, (int, float)) or not 0 <= ema < 1:
        ck.err('train.ema_decay', f'must be in [0, 1), got {ema!r}')
    _positive_int(train.get('max_nonfinite'), ck, 'train.max_nonfinite')
    trainable = train.get('trainable_g')
    if trainable is not None and not (isinstance(trainable, list) and trainable and
                                      all(isinstance(t, str) and t for t in trainable)):
        ck.err('train.trainable_g', f'{trainable!r}: expected a list of parameter-name prefixes, e.g. [upsampler.0.]')
    elif trainable and ck.network is not None and \
            not any(n.startswith(tuple(trainable)) for n, _ in ck.network.named_parameters()):
        ck.err('train.trainable_g', f'{trainable!r}: no parameter of network_g starts with these (e.g. upsampler.0.)')
    _check_qat(opt, train, ck)
    if train.get('precision', 'auto') not in PRECISIONS:
        ck.err('train.precision', f'{train["precision"]!r}: expected {", ".join(PRECISIONS)}')
    if train.get('channels_last', 'auto') not in ('auto', True, False):
        ck.err('train.channels_last', f'{train["channels_last"]!r}: expected auto, true or false')
    if (train.get('precision') not in (None, 'auto', 'fp32') or train.get('channels_last') is True) \
            and opt.get('model_type') != 'WarmStartModel':
        ck.err('train.precision', f'needs model_type: WarmStartModel (model_type is {opt.get("model_type")!r}, '
               'which trains in fp32 NCHW only)')


def _check_qat(opt, train, ck):
    """``train.qat: {convs: all | body | ... | blocks, calibration_batches: 100, target: float | gt, weight_bits: 8 |
    7, ranges: calibrated | learned, placement: qlinear | inputs}``: int8 fake quantization (RLFN's layout, no EMA
    copy, fp32)."""
    qat = train.get('qat')
    if qat is None:
        return
    if not isinstance(qat, dict):
        ck.err('train.qat', f'{qat!r}: expected a mapping, e.g. {{convs: all}}')
        return
    ck.keys(qat, _QAT, 'train.qat')
    _positive_int(qat.get('calibration_batches'), ck, 'train.qat.calibration_batches')
    if qat_settings(qat)['convs'] not in INT8_CONV_SETS:
        ck.err('train.qat.convs', f'{qat.get("convs")!r}: expected one of {", ".join(INT8_CONV_SETS)}')
    bits = qat_settings(qat)['weight_bits']
    if isinstance(bits, bool) or bits not in QAT_WEIGHT_BITS:
        ck.err('train.qat.weight_bits', f'{bits!r}: expected 8 (the default) or 7 (for CPUs without int8 dot-product '
               'instructions: AVX2, AVX-512 without VNNI)')
    if qat_settings(qat)['ranges'] not in QAT_RANGES:
        ck.err('train.qat.ranges', f'{qat.get("ranges")!r}: expected calibrated (frozen after the calibration batches, '
               'the default) or learned (trained with the weights from there)')
    if qat_settings(qat)['placement'] not in QAT_PLACEMENTS:
        ck.err('train.qat.placement', f'{qat.get("placement")!r}: expected qlinear (each int8 conv reads and writes '
               '8 bits: int8 in ONNX Runtime and OpenVINO, the default) or inputs (each int8 conv reads 8 bits, '
               'writes float: int8 in OpenVINO only)')
    if qat_settings(qat)['target'] not in QAT_TARGETS:
        ck.err('train.qat.target', f'{qat.get("target")!r}: expected float (the output of the weights the stage '
               'started from, the default) or gt (the HR patch)')
    problem = qat_problem(opt.get('network_g'))
    if problem:
        ck.err('train.qat', problem)
    if train.get('ema_decay', 0):
        ck.err('train.qat', f'needs train.ema_decay: 0 (it is {train["ema_decay"]}): the EMA copy is a float network '
               'that never sees the int8 ranges, so its validation and weights would not be the int8 model')
    if opt.get('model_type') != 'WarmStartModel':
        ck.err('train.qat', f'needs model_type: WarmStartModel (model_type is {opt.get("model_type")!r})')
    if train.get('precision', 'auto') not in ('auto', 'fp32'):
        ck.err('train.qat', f'trains in fp32 (train.precision is {train["precision"]!r}): the int8 model computes '
               'its float operations in fp32; use precision: auto or fp32')


def _check_val(val, ck):
    """The val section: frequency, metrics (their arguments from the metric functions), precision."""
    if val is None:
        return
    ck.keys(val, _VAL, 'val')
    if not isinstance(val, dict):
        return
    _positive_int(val.get('val_freq'), ck, 'val.val_freq')
    if val.get('precision', 'fp32') not in ('train', ) + PRECISIONS:
        ck.err('val.precision', f'{val["precision"]!r}: expected fp32 (default, the paper protocol), train '
               '(the training precision), auto, bf16 or fp16')
    for mname, m in (val.get('metrics') or {}).items():
        mp = f'val.metrics.{mname}'
        fn = _registered(METRIC_REGISTRY, m.get('type') if isinstance(m, dict) else None, 'metric', ck, mp)
        if fn is not None:
            ck.keys(m, (_signature_keys(fn, ('img', 'img2'), True) or set()) | _METRIC_COMMON, mp)


def _check_logging(opt, ck):
    """path, logger and dist_params keys."""
    ck.keys(opt.get('path'), _PATH, 'path')
    across = (opt.get('path') or {}).get('cross_scale_g') if isinstance(opt.get('path'), dict) else None
    if across not in (None, False) + CROSS_SCALE_MODES:
        ck.err('path.cross_scale_g', f'{across!r}: expected {" or ".join(CROSS_SCALE_MODES)} (warm start from another '
               'scale: the upsampler resampled to this scale, or initialised fresh), or ~ (off)')
    logger = opt.get('logger')
    ck.keys(logger, _LOGGER, 'logger')
    if isinstance(logger, dict):
        ck.keys(logger.get('wandb'), _WANDB, 'logger.wandb')
        _positive_int(logger.get('print_freq'), ck, 'logger.print_freq')
        _positive_int(logger.get('save_checkpoint_freq'), ck, 'logger.save_checkpoint_freq')
    ck.keys(opt.get('dist_params'), _DIST, 'dist_params')


def check_stage_entries(opt, source):
    """Check the ``stages:`` list itself (names and which sections a stage may override)."""
    stages = opt.get('stages')
    if stages is None:
        return
    ck = _Checker(source)
    if not isinstance(stages, list) or not stages:
        raise OptionError(f'{source}: stages: expected a non-empty list of mappings with a "name"')
    names = []
    for i, st in enumerate(stages):
        if not isinstance(st, dict) or not st.get('name'):
            ck.err(f'stages[{i}]', 'each stage needs a "name"')
            continue
        name = st['name']
        problem = name_problem(name)
        if problem:
            ck.err(f'stages[{i}].name', problem)
            continue
        names.append(name)
        p = f'stages[{i}] ({name})'
        ck.keys(st, _STAGE, p)
        ck.keys(st.get('train'), _TRAIN_BASE, f'{p}.train')
        for phase, ds in (st.get('datasets') or {}).items():
            ck.keys(ds, _DATASET_COMMON | _PAIRED, f'{p}.datasets.{phase}')
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        ck.err('stages', f'duplicate stage names {dup}')
    if ck.errors:
        raise OptionError('invalid options:\n  ' + '\n  '.join(ck.errors))
