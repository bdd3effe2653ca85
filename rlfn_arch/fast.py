"""``rlfn_arch.fast.optimize_for_inference``: the documented name of the fast inference path, which lives in
:mod:`rlfn_arch.deploy.fast`."""
from rlfn_arch.deploy.fast import FastRLFN, optimize_for_inference  # noqa: F401
