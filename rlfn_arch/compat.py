"""Import-time compatibility of basicsr 1.4.2 with the current stack, installed before basicsr is first imported
(``rlfn_arch/__init__.py`` imports this module first; so does :mod:`rlfn_arch.basicsr_seam`).

=====================================================  =========================================================
what basicsr 1.4.2 imports                             why it needs help
=====================================================  =========================================================
torchvision.transforms.functional_tensor               removed in torchvision 0.17: an alias of its private
                                                       successor is registered (:func:`install`)
distutils.version.LooseVersion                         gone in Python 3.12: a minimal stand-in where missing
                                                       (:func:`install_distutils`)
=====================================================  =========================================================

Nothing in site-packages is edited; both are idempotent.
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
