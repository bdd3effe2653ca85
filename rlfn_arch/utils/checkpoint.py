"""Safe loading and atomic saving of checkpoints.

basicsr 1.4.2 loads checkpoints with ``torch.load`` (full unpickling) and saves them in place, so a
downloaded file can run code and a kill during a save destroys the previous file. Everything in this
project goes through :func:`safe_load` (``weights_only=True``) and :func:`atomic_save` instead.
"""
import os
import tempfile

import torch


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used, with the file and the reason."""


def safe_load(path, map_location='cpu'):
    """Load a torch file with ``weights_only=True`` (tensors, dicts, lists, numbers, strings only).

    CUDA storages are mapped to ``map_location`` (CPU by default), so files saved on GPU open anywhere.

    Raises:
        CheckpointError: the file is missing, truncated, not a torch file, or holds Python objects
            that are not allow-listed (for example a pickled class that would run code).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f'{path}: no such file')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types: UnpicklingError, RuntimeError, EOFError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f'{path}: cannot be loaded safely as a torch checkpoint '
                              f'(weights_only=True): {first}') from e


def atomic_save(obj, path):
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A kill or a write error (disk full, read-only folder) leaves any previous ``path`` intact and no
    partial file behind.

    Raises:
        OSError: with the path in the message, when the file cannot be written.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise OSError(e.errno, f'cannot write {path}: {e.strerror or e}') from e
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
