"""Training: stage options, records and resume, distributed setup, the BasicSR adapter, the stage runner
and the final report. ``python -m rlfn_arch.train`` is the command-line front of :func:`train_stages`."""
from .plan import StagePlan, build_plans  # noqa: F401
from .runner import train_stages  # noqa: F401
from .stages import check_datasets, ensure_sample_dataset, stage_options  # noqa: F401
