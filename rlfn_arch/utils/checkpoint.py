"""Safe loading and atomic saving of checkpoints.

basicsr 1.4.2 loads checkpoints with ``torch.load`` (full unpickling) and saves them in place, so a
downloaded file can run code and a kill during a save destroys the previous file. Everything in this
project goes through :func:`safe_load` (``weights_only=True``) and :func:`atomic_save` instead.
"""
import copy
import io
import os
import re
from collections import OrderedDict

import torch

from basicsr.archs import build_network

from .fs import atomic_write


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used, with the file and the reason."""


def is_safetensors(path):
    """True when the file's content is a safetensors file (an 8-byte little-endian header length, then a
    JSON header starting with ``{``), whatever its name ends with."""
    try:
        with open(path, 'rb') as f:
            head = f.read(9)
    except OSError:
        return False
    # a header length the file cannot hold (truncated, or tampered: 2**60) still means safetensors: the reader
    # names the problem, and such a file never reaches torch.load
    return len(head) == 9 and head[8:9] == b'{' and int.from_bytes(head[:8], 'little') > 0


def read_safetensors(path, map_location='cpu'):
    """``(tensors, metadata)`` of a safetensors file, read by the safetensors library (nothing is unpickled).

    Raises:
        CheckpointError: a corrupt header or data, naming the file.
    """
    from safetensors import safe_open
    try:
        with safe_open(path, framework='pt', device=str(map_location)) as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as e:  # SafetensorError, OSError, ValueError: one message naming the file
        raise CheckpointError(f'{path}: not a readable safetensors file: {str(e).strip().splitlines()[0]}') from e


def save_safetensors(state_dict, path, metadata=None):
    """Write ``state_dict`` (tensors) as safetensors with string ``metadata``, atomically
    (:func:`rlfn_arch.utils.fs.atomic_write`)."""
    from safetensors.torch import save
    data = save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
                metadata={str(k): str(v) for k, v in (metadata or {}).items()})
    atomic_write(path, lambda f: f.write(data))


def safe_load(path, map_location='cpu'):
    """Load a checkpoint without running code: a torch file with ``weights_only=True`` (tensors, dicts,
    lists, numbers, strings only), or a safetensors file (detected by content, not by the name's ending;
    returned as its flat state dict).

    CUDA storages are mapped to ``map_location`` (CPU by default), so files saved on GPU open anywhere.

    Raises:
        CheckpointError: the file is missing, truncated, not a torch or safetensors file, or holds Python
            objects that are not allow-listed (for example a pickled class that would run code).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f'{path}: no such file')
    if is_safetensors(path):
        return read_safetensors(path, map_location)[0]
    try:
        with open(path, 'rb') as f:  # a file object: torch.load reads a path named *.safetensors as safetensors
            return torch.load(f, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types: UnpicklingError, RuntimeError, EOFError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if 'weights only load failed' in first.lower() or 'weights_only' in first:
            # torch's text goes on to suggest an unsafe load: never passed on
            first = ('it holds Python objects other than tensors, numbers and strings (a pickled class or '
                     'function, which could run code); save the weights as a plain state dict or as safetensors')
        raise CheckpointError(f'{path}: cannot be loaded safely as a torch checkpoint: {first}') from e


#: The state of int8 fake quantizers (quantization-aware training, :mod:`rlfn_arch.archs.qat`) in a state dict:
#: not weights; float loaders leave it out (:func:`split_quant_state`).
QUANT_KEY_RE = re.compile(r'(^|\.)(input_fq|output_fq|weight_fake_quant)\.')
#: An observer's range before it has seen data is (+inf, -inf) by PyTorch's convention: not a broken value.
_UNOBSERVED_RE = re.compile(r'activation_post_process\.(min_val|max_val)$')


def split_quant_state(state_dict):
    """``(weights, quantizer state)``: a state dict split into its float weights and its int8 fake quantizers'
    state (empty for a float checkpoint). Both are ordered dicts."""
    weights, quant = OrderedDict(), OrderedDict()
    for k, v in state_dict.items():
        (quant if QUANT_KEY_RE.search(k) else weights)[k] = v
    return weights, quant


def check_finite(state_dict, path='<state dict>'):
    """Raise :class:`CheckpointError` naming the first floating-point tensor with NaN or Inf values.

    A network with non-finite weights produces non-finite (after clamping: black) images; every
    entry point refuses such weights when it loads them instead of writing garbage with exit code 0.
    An int8 observer that has seen no data yet holds (+inf, -inf) by PyTorch's convention; that is allowed.
    """
    for name, value in state_dict.items():
        if _UNOBSERVED_RE.search(name) and QUANT_KEY_RE.search(name):
            continue
        if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(f'{path}: tensor {name} has {bad} non-finite value(s) (NaN or Inf); '
                                  'these weights cannot be used')
    return state_dict


#: The entries a checkpoint may hold its weights under, in the order they are preferred: BasicSR's EMA
#: weights (what its validation used), its plain weights, then other trainers' names.
WEIGHT_KEYS = ('params_ema', 'params', 'state_dict', 'model')


def select_weights(ckpt, path='<checkpoint>', key=None):
    """Which weights a loaded checkpoint holds: the one answer for every loader in the project.

    Args:
        ckpt: what :func:`safe_load` returned.
        path (str): for messages.
        key (str | None): the entry asked for (``path.param_key_g``); when absent, the preference
            :data:`WEIGHT_KEYS` decides (a flat state dict of tensors, e.g. a safetensors or an official
            file, is the weights itself).

    Returns:
        (dict, str | None): the state dict and the entry it came from (None for a flat state dict).

    Raises:
        CheckpointError: nothing in ``ckpt`` is a state dict.
    """
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'{path}: expected a state dict, got {type(ckpt).__name__}')
    for k in ((key, ) if key else ()) + WEIGHT_KEYS:
        if isinstance(ckpt.get(k), dict):
            return ckpt[k], k
    if ckpt and all(torch.is_tensor(v) for v in ckpt.values()):
        return ckpt, None
    raise CheckpointError(f'{path}: holds no weights under {", ".join((key, ) if key else WEIGHT_KEYS)} '
                          f'(keys: {", ".join(map(str, list(ckpt)[:5]))})')


def strip_module(state_dict):
    """Keys without DataParallel/DDP's ``module.`` prefix."""
    return {k[7:] if k.startswith('module.') else k: v for k, v in state_dict.items()}


def network_fit_problem(state_dict, network_opt):
    """Why ``state_dict`` cannot load strictly into ``build_network(network_opt)``: the first missing,
    unexpected or differently shaped tensor, in the network's order; None when it fits."""
    if not isinstance(state_dict, dict):
        return 'it holds no state dict'
    sd = split_quant_state(strip_module(state_dict))[0]  # int8 quantizer state is not weights
    own = build_network(copy.deepcopy(dict(network_opt))).state_dict()
    for k, v in own.items():
        if k not in sd:
            return f'tensor {k} is missing from the checkpoint'
        if tuple(sd[k].shape) != tuple(v.shape):
            return f'tensor {k}: checkpoint {tuple(sd[k].shape)}, network {tuple(v.shape)}'
    extra = [k for k in sd if k not in own]
    return f'tensor {extra[0]} is in the checkpoint but not in the network' if extra else None


def atomic_save(obj, path):
    """``torch.save`` through :func:`rlfn_arch.utils.fs.atomic_write` (temporary file in the same folder,
    fsync, rename over ``path``).

    A kill or a write error (disk full, read-only folder) leaves any previous ``path`` intact and no
    partial file behind.

    Raises:
        WriteError (an OSError): with the path in the message, when the file cannot be written.
    """
    # serialise in memory first (RLFN checkpoints and states are a few MB): torch's zip writer reports a
    # failed write (a short write on a full disk) as a RuntimeError ("unexpected pos ..."), which hides the
    # OS error; a plain write of the bytes raises the real one (ENOSPC, EFBIG, EROFS, ...)
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, lambda f: f.write(buf.getbuffer()))
