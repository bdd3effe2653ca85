"""BasicSR's ``--force_yml key:path=value``, parsed safely (no exec/eval)."""
from .errors import OptionError
from .load import yaml_load


def apply_force_yml(opt, entries, source):
    """BasicSR's ``--force_yml a:b=value``, parsed safely (no exec/eval); existing keys only."""
    for entry in entries or []:
        if '=' not in entry:
            raise OptionError(f'--force_yml {entry!r}: expected key:path=value')
        keys, value = entry.split('=', 1)
        node = opt
        parts = keys.strip().split(':')
        for k in parts[:-1]:
            if not isinstance(node, dict) or k not in node:
                raise OptionError(f'--force_yml {entry!r}: {source} has no key {k!r}')
            node = node[k]
        node[parts[-1]] = yaml_load(value.strip(), source='--force_yml')
    return opt


