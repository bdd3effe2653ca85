"""Loading option files safely: YAML without Python objects or aliases, ordered mappings like BasicSR's,
``base:`` inheritance, deep merging, and read-only views for stage plans."""
import copy
import os
from collections import OrderedDict
from types import MappingProxyType

import yaml

from .errors import OptionError

#: Option files are small; a larger file is a mistake (a dataset given as -opt), refused before parsing.
MAX_OPTION_BYTES = 4 * 2**20


class _SafeOrderedLoader(yaml.SafeLoader):
    """SafeLoader (no Python object construction) that returns OrderedDict mappings like BasicSR's.

    Anchors and aliases (``&a`` / ``*a``, ``<<: *a``) are refused: nested aliases expand exponentially
    (the "billion laughs" pattern: a 1 KB file that never finishes loading), and option files share
    settings with ``base:`` instead.
    """

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, 'anchor', None) is not None:
            kind = 'alias *' if isinstance(event, yaml.AliasEvent) else 'anchor &'
            raise yaml.composer.ComposerError(
                None, None, f'YAML {kind}{event.anchor} is not allowed in option files (anchors and aliases can '
                'expand without bound); share settings with "base: other.yml" instead', event.start_mark)
        return super().compose_node(parent, index)


def _construct_ordered(loader, node):
    loader.flatten_mapping(node)
    pairs = loader.construct_pairs(node)
    keys = [k for k, _ in pairs]
    dup = sorted({k for k in keys if keys.count(k) > 1}, key=str)
    if dup:
        raise yaml.constructor.ConstructorError(None, None, f'duplicate key(s) {dup}', node.start_mark)
    return OrderedDict(pairs)


_SafeOrderedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_ordered)


def yaml_load(text_or_stream, source='<string>'):
    """Parse YAML safely into OrderedDicts. Python tags are refused with an OptionError naming ``source``."""
    try:
        return yaml.load(text_or_stream, Loader=_SafeOrderedLoader)
    except yaml.YAMLError as e:
        raise OptionError(f'{source}: not a safe, valid YAML option file: {e}') from e
    except RecursionError as e:  # thousands of nested [[[...]]]: the composer recurses once per level
        raise OptionError(f'{source}: nested too deeply to be an option file (YAML nesting beyond what the parser '
                          'can follow)') from e
    except ValueError as e:  # e.g. an integer of thousands of digits (Python's int conversion limit)
        first = str(e).strip().splitlines()[0].split(';')[0][:200]  # no advice to raise interpreter limits
        raise OptionError(f'{source}: a value cannot be read: {first}') from e


#: No option file nests deeper than this (BasicSR's own go 4 levels down); deeper ones are refused before any
#: recursive check or copy could exhaust Python's stack.
MAX_DEPTH = 32


def _too_deep(obj):
    """True when ``obj`` nests mappings/lists deeper than :data:`MAX_DEPTH` (checked without recursion)."""
    stack = [(obj, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False


def _represent_ordered(dumper, data):
    return dumper.represent_dict(data.items())


class _OrderedDumper(yaml.SafeDumper):
    pass


_OrderedDumper.add_representer(OrderedDict, _represent_ordered)


def freeze(obj):
    """A read-only view of nested options: mappings become ``MappingProxyType``, lists tuples."""
    if isinstance(obj, dict):
        return MappingProxyType({k: freeze(v) for k, v in obj.items()})
    if isinstance(obj, (list, tuple)):
        return tuple(freeze(v) for v in obj)
    return obj


def thaw(obj):
    """A mutable deep copy of (frozen or plain) options: plain dicts and lists, for BasicSR and YAML."""
    if isinstance(obj, (dict, MappingProxyType)):
        return {k: thaw(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [thaw(v) for v in obj]
    return copy.deepcopy(obj)


def yaml_dump(obj):
    return yaml.dump(obj, Dumper=_OrderedDumper, sort_keys=False, default_flow_style=None)


def load_options(path, _seen=()):
    """Read an option file safely. Returns an OrderedDict.

    ``base: other.yml`` (relative to the file) is loaded first and this file is deep-merged into it,
    so recipes share one file of common settings instead of copies. ``stages`` lists are replaced,
    not merged.
    """
    try:
        if not os.path.isfile(path):  # a FIFO or a device would block or never end
            what = 'does not exist' if not os.path.lexists(path) else 'is not a regular file'
            raise OptionError(f'{path}: cannot read option file: it {what}')
        with open(path, 'rb') as f:
            data = f.read(MAX_OPTION_BYTES + 1)
        if len(data) > MAX_OPTION_BYTES:
            raise OptionError(f'{path}: cannot read option file: larger than {MAX_OPTION_BYTES // 2**20} MiB')
        text = data.decode('utf-8')
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b'\n') + 1
        raise OptionError(f'{path}: not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}); save the option file '
                          'as UTF-8') from e
    except OSError as e:
        raise OptionError(f'{path}: cannot read option file: {e.strerror or e}') from e
    opt = yaml_load(text, source=path)
    if not isinstance(opt, dict):
        raise OptionError(f'{path}: an option file must be a YAML mapping, got {type(opt).__name__}')
    if _too_deep(opt):
        raise OptionError(f'{path}: nests more than {MAX_DEPTH} levels deep; an option file holds a few levels')
    base = opt.pop('base', None)
    if base is not None:
        base_path = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), str(base)))
        if base_path in _seen:
            raise OptionError(f'{path}: base: {base} includes itself')
        if not os.path.isfile(base_path):
            raise OptionError(f'{path}: base: {base_path} not found')
        opt = deep_merge(load_options(base_path, _seen + (base_path, )), opt)
    return opt


def deep_merge(base, override):
    """Return a copy of ``base`` with ``override`` merged in recursively (mappings merge, others replace).

    A mapping whose ``type`` differs from the base's (say a scheduler changed from MultiStepLR to
    CosineAnnealingRestartLR) replaces it whole: the old type's arguments would not fit.
    """
    out = copy.deepcopy(base)
    for k, v in override.items():
        old = out.get(k)
        if isinstance(v, dict) and isinstance(old, dict) and 'type' in v and v['type'] != old.get('type'):
            out[k] = copy.deepcopy(v)
        elif isinstance(v, dict) and isinstance(old, dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


