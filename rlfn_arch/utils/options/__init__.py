"""Safe option loading and strict option checking (a package: load, schema, check, force_yml).

Why not basicsr's ``parse_options``: it parses YAML with PyYAML's full ``Loader`` (a downloaded file can
run ``!!python/object/apply`` tags), applies ``--force_yml`` with ``exec``, reads every key with
``.get()`` (a typo silently trains something else) and initialises distributed training with a
hard-coded nccl backend. This module keeps BasicSR's ordered-mapping behaviour and its post-processing
of the options, and replaces those parts.
"""
from .check import check_options, check_stage_entries  # noqa: F401
from .errors import OptionError  # noqa: F401
from .force_yml import apply_force_yml  # noqa: F401
from .load import MAX_OPTION_BYTES, deep_merge, freeze, load_options, thaw, yaml_dump, yaml_load  # noqa: F401
from .schema import NAME_RE, name_problem  # noqa: F401
