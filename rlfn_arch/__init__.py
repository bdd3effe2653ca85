"""rlfn-basicsr: a trainable RLFN for BasicSR.

Importing this package registers everything in BasicSR's registries: the ``RLFN`` architecture,
the ``ContrastiveLoss``, the ``WarmStartModel``, the ``CheckedPairedImageDataset`` and ``OnnxNetwork`` (an ONNX
model as a network, for testing exported models).
"""
# The compatibility shims must run before basicsr is imported anywhere.
from . import compat  # noqa: F401  isort:skip
from .archs import *  # noqa: F401,F403,E402
from .data import *  # noqa: F401,F403,E402
from .deploy.onnx import OnnxNetwork  # noqa: F401,E402  registered: test --onnx
from .losses import *  # noqa: F401,F403,E402
from .models import *  # noqa: F401,F403,E402

__version__ = '0.1.0'
