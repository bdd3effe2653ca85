"""Run-time option processing shared by ``rlfn_arch.train`` and ``rlfn_arch.test``.

Mirrors the post-processing in basicsr's ``parse_options`` (dataset phase and scale, experiment and
result folders, ``num_gpu: auto``) on options read by our safe loader, and resolves every relative
path against the project root, so a command gives the same result from any working directory.
"""
import os
import random
from os import path as osp

import torch

from basicsr.utils import set_random_seed

from .options import OptionError

_PACKAGE_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))


def project_root(opt=None):
    """Where ``experiments/``, ``results/`` and relative dataset paths live.

    In order: ``path.root`` in the options, the ``RLFN_ROOT`` environment variable, the source checkout
    holding the package (BasicSR's convention: the folder with ``setup.py``; an editable install),
    else the current working directory.
    """
    root = (opt or {}).get('path', {}) or {}
    root = root.get('root') if isinstance(root, dict) else None
    if root:
        return osp.abspath(osp.expanduser(root))
    if os.environ.get('RLFN_ROOT'):
        return osp.abspath(osp.expanduser(os.environ['RLFN_ROOT']))
    checkout = osp.dirname(_PACKAGE_DIR)
    if osp.isfile(osp.join(checkout, 'setup.py')):
        return checkout
    return os.getcwd()


def resolve(path, root):
    if path is None:
        return None
    path = osp.expanduser(str(path))
    return path if osp.isabs(path) else osp.normpath(osp.join(root, path))


def resolve_device(opt, source='<options>'):
    """Fill ``num_gpu`` (BasicSR's device switch): 'auto' (the default) means every visible CUDA GPU."""
    num_gpu = opt.get('num_gpu', 'auto')
    available = torch.cuda.device_count()
    if num_gpu == 'auto':
        num_gpu = available
    if num_gpu > available:
        raise OptionError(f'{source}: num_gpu: {num_gpu} GPUs requested but {available} available '
                          '(use num_gpu: auto or 0 for CPU)')
    opt['num_gpu'] = num_gpu
    return opt


def finalize(opt, root, is_train, experiments_root=None, source='<options>'):
    """BasicSR's parse_options post-processing, on an already-loaded and checked option dict."""
    resolve_device(opt, source)
    opt['is_train'] = is_train
    if opt.get('model_type', 'SRModel') == 'SRModel':
        # basicsr's SRModel loads weights with a plain torch.load (no safetensors, CUDA-minded map_location):
        # WarmStartModel is SRModel with the project's loading; an SRModel file keeps SRModel's fp32 NCHW training
        opt['model_type'] = 'WarmStartModel'
        if is_train and isinstance(opt.get('train'), dict):
            opt['train'].setdefault('precision', 'fp32')
            opt['train'].setdefault('channels_last', False)
    opt.setdefault('dist', False)
    opt.setdefault('rank', 0)
    opt.setdefault('world_size', 1)
    opt.setdefault('auto_resume', False)
    if opt.get('manual_seed') is None:  # basicsr: a random seed when the file sets none
        opt['manual_seed'] = random.randint(1, 10000)
    if not is_train:  # basicsr seeds in parse_options; the training runner seeds each stage itself
        set_random_seed(opt['manual_seed'] + opt['rank'])
    opt['root_path'] = root
    for phase, dataset in opt['datasets'].items():
        dataset['phase'] = phase.split('_')[0]
        if 'scale' in opt:
            dataset['scale'] = opt['scale']
        for key in ('dataroot_gt', 'dataroot_lq', 'meta_info_file'):
            if dataset.get(key) is not None:
                dataset[key] = resolve(dataset[key], root)
    opt.setdefault('path', {})
    opt['path'].pop('root', None)  # consumed by project_root(); basicsr would mkdir every path value
    for key, val in list(opt['path'].items()):
        if val is not None and ('resume_state' in key or 'pretrain_network' in key):
            opt['path'][key] = resolve(val, root)
    if is_train:
        exp = experiments_root or osp.join(root, 'experiments', opt['name'])
        opt['path']['experiments_root'] = exp
        opt['path']['models'] = osp.join(exp, 'models')
        opt['path']['training_states'] = osp.join(exp, 'training_states')
        opt['path']['log'] = exp
        opt['path']['visualization'] = osp.join(exp, 'visualization')
        if 'debug' in opt['name']:  # BasicSR's debug mode (--debug prefixes the name with debug_)
            if opt.get('val'):
                opt['val']['val_freq'] = 8
            opt.setdefault('logger', {})
            opt['logger']['print_freq'] = 1
            opt['logger']['save_checkpoint_freq'] = 8
    else:
        res = osp.join(root, 'results', opt['name'])
        opt['path']['results_root'] = res
        opt['path']['log'] = res
        opt['path']['visualization'] = osp.join(res, 'visualization')
    return opt


def pick_device(name=None):
    """``torch.device(name)``, or CUDA when available, else the CPU."""
    if name:
        return torch.device(name)
    return torch.device('cuda' if torch.cuda.is_available() else 'cpu')


def default_workers():
    """The CPUs this process may use (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)


def worker_pool(workers=None):
    """The process pool of every builder and check: ``workers`` processes (default :func:`default_workers`),
    forked on POSIX."""
    import multiprocessing
    context = multiprocessing.get_context('fork' if os.name == 'posix' else 'spawn')
    return context.Pool(max(1, workers or default_workers()))
