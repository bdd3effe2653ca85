"""Compatibility shims that must run before ``basicsr`` is first imported.

basicsr 1.4.2 (the latest release on PyPI) imports
``torchvision.transforms.functional_tensor``, a private module that torchvision removed in 0.17.
BasicSR fixed this only on its unreleased master branch. Instead of asking users to edit
site-packages, we register an alias module under the old name, pointing at the module that holds the
same functions today (``torchvision.transforms._functional_tensor``).

This module is imported first by ``rlfn_arch/__init__.py``; every entry point (``python -m
rlfn_arch.<tool>``) and every DataLoader worker (forked, or spawned: spawn re-imports the ``-m``
main module, which imports the package) therefore goes through it before basicsr is imported.
"""
import importlib
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


install()
