"""Helpers shared by the benchmark scripts: a results folder, JSON output and a markdown table."""
import json
import os
import platform

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')


def hardware():
    name = platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            name = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return f'{name}, {len(os.sched_getaffinity(0))} cores available'


def report(name, rows, columns, extra=None):
    """Print ``rows`` (dicts) as a table and write them with ``extra`` to results/<name>.json."""
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print('| ' + ' | '.join(c.ljust(w) for c, w in zip(columns, widths)) + ' |')
    print('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
    for r in rows:
        print('| ' + ' | '.join(_fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths)) + ' |')
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f'{name}.json')
    with open(path, 'w') as f:
        json.dump({'hardware': hardware(), 'rows': rows, **(extra or {})}, f, indent=1)
    print(f'hardware: {hardware()}\nwrote {path}')


def _fmt(v):
    if isinstance(v, float):
        return f'{v:.4g}'
    return '-' if v is None else str(v)
