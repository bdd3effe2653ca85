"""What reports share: one markdown table formatter and one description of the CPU."""
import platform


def format_table(rows, columns):
    """A markdown table of ``rows`` (dicts, or sequences in ``columns`` order) with aligned columns.

    Args:
        rows (list[dict | Sequence]): the cells (printed with str(); round numbers first); missing dict
            keys and None print as '-'.
        columns (Sequence[str]): the header (and the dict keys, in order).
    Returns:
        str: header, separator and one line per row, without a trailing newline.
    """
    cells = [[_cell(r.get(c) if isinstance(r, dict) else r[i]) for i, c in enumerate(columns)] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]

    def line(values):
        return '| ' + ' | '.join(v.ljust(w) for v, w in zip(values, widths)) + ' |'
    return '\n'.join([line(columns), '|' + '|'.join('-' * (w + 2) for w in widths) + '|'] + [line(r) for r in cells])


def _cell(value):
    return '-' if value is None else str(value)


def cpuinfo_field(name):
    """The first value of ``name`` in /proc/cpuinfo ('model name', 'flags', ...), or None where it is not
    readable (not Linux) or absent."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                key, _, value = line.partition(':')
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_name():
    """The CPU model as /proc/cpuinfo names it (e.g. 'AMD EPYC'), else what the platform module says."""
    return cpuinfo_field('model name') or platform.processor() or platform.machine()
