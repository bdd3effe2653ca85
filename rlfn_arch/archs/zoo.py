"""The models that ship inside the package, reached by name (``--model rlfn_s_x3``).

Each model is a ``.safetensors`` file in ``rlfn_arch/archs/weights/`` with its model card beside it
(``<name>.json``, the fields a model zoo uses: OpenModelDB's names, plus the benchmark numbers and how it was
made). The official RLFN x2/x4 files are not shipped (their authors publish them); what this project trained
is. ``python -m rlfn_arch.zoo`` (``rlfn models``) lists them.
"""
import hashlib
import json
import os

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'weights')


class UnknownModelError(ValueError):
    """A model name that does not ship, with the names that do."""


def model_cards():
    """``{name: card}`` of every model that ships, from the ``<name>.json`` cards (sorted by name)."""
    cards = {}
    if not os.path.isdir(WEIGHTS_DIR):
        return cards
    for f in sorted(os.listdir(WEIGHTS_DIR)):
        if f.endswith('.json'):
            with open(os.path.join(WEIGHTS_DIR, f), encoding='utf-8') as fh:
                cards[f[:-5]] = json.load(fh)
    return cards


def model_names():
    """The names ``--model`` accepts."""
    return list(model_cards())


def sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def model_file(name):
    """The weights file of a shipped model.

    Raises:
        UnknownModelError: ``name`` does not ship (the message lists what does).
        ValueError: the file is missing or does not match the sha256 of its card (a damaged install).
    """
    cards = model_cards()
    if name not in cards:
        raise UnknownModelError(f'--model {name!r}: no such model ships with rlfn-basicsr (available: '
                                f'{", ".join(cards) or "none"}; python -m rlfn_arch.zoo lists them)')
    res = cards[name]['resources'][0]
    path = os.path.join(WEIGHTS_DIR, res['file'])
    if not os.path.isfile(path) or sha256(path) != res['sha256']:
        raise ValueError(f'{path}: missing or damaged (sha256 differs from its model card); reinstall rlfn-basicsr')
    return path
