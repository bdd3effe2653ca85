"""rlfn-basicsr: a trainable RLFN for BasicSR.

Importing this package registers everything in BasicSR's registries: the ``RLFN`` architecture,
the ``ContrastiveLoss``, the ``WarmStartModel`` and the ``CheckedPairedImageDataset``.
"""
# The BasicSR seam installs the compatibility shims, which must run before basicsr is imported anywhere.
from . import basicsr_seam  # noqa: F401  isort:skip
from .archs import *  # noqa: F401,F403,E402
from .data import *  # noqa: F401,F403,E402
from .losses import *  # noqa: F401,F403,E402
from .models import *  # noqa: F401,F403,E402

__version__ = '0.1.0'
