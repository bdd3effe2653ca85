"""The package's floors, read from its source: library below, entry points on top, no import upward, no
circle. Floors (an import may go to its own floor or lower):

    0  utils, _compat
    1  archs, losses, data
    2  models, deploy (and rlfn_arch.fast, the documented name of deploy.fast)
    3  training, and the package root (which imports the floors below to register BasicSR classes)
    4  entry points: python -m rlfn_arch.<tool> modules and the rlfn console command

Importing the bare package ``rlfn_arch`` (which installs the compatibility shim) is allowed everywhere.
Entry points never import each other (the ``rlfn`` command dispatches to them by name).
"""
import ast
import os

from conftest import REPO

PKG = os.path.join(REPO, 'rlfn_arch')
ENTRY = {'train', 'test', 'prepare', 'infer', 'export', 'quantize', 'convert', 'benchmark', 'compare', 'cli'}
FLOOR = {'utils': 0, '_compat': 0, 'archs': 1, 'losses': 1, 'data': 1, 'models': 2, 'deploy': 2, 'fast': 2,
         'training': 3, '': 3}


def modules():
    """{dotted name: path} of every module of the package."""
    out = {}
    for d, _, files in os.walk(PKG):
        for f in files:
            if f.endswith('.py'):
                rel = os.path.relpath(os.path.join(d, f), REPO)[:-3].replace(os.sep, '.')
                out[rel[:-len('.__init__')] if rel.endswith('.__init__') else rel] = os.path.join(d, f)
    return out


def floor(module):
    parts = module.split('.')[1:]
    if not parts:
        return FLOOR['']
    if len(parts) == 1 and parts[0] in ENTRY:
        return 4
    return FLOOR[parts[0]]


def imports(module, path, known):
    """The package modules ``module`` imports (absolute and relative; module-level and inside functions)."""
    is_pkg = path.endswith('__init__.py')
    base = module.split('.') if is_pkg else module.split('.')[:-1]
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ''
            if node.level:
                target = '.'.join(base[:len(base) - node.level + 1] + ([target] if target else []))
            names = [target] + [f'{target}.{a.name}' for a in node.names]
        for n in names:
            while n and n not in known:  # `from pkg import name`: the module is pkg (or pkg.name)
                n = n.rpartition('.')[0]
            if n and n != 'rlfn_arch' and n != module:
                found.add(n)
    return found


def test_no_import_runs_upward_and_entry_points_do_not_import_each_other():
    known = modules()
    assert len(known) > 30 and 'rlfn_arch.training.runner' in known
    problems = []
    for mod, path in sorted(known.items()):
        for imp in sorted(imports(mod, path, known)):
            if floor(imp) > floor(mod):
                problems.append(f'{mod} (floor {floor(mod)}) imports {imp} (floor {floor(imp)})')
            elif floor(mod) == 4 and floor(imp) == 4:
                problems.append(f'entry point {mod} imports entry point {imp}')
    assert not problems, '\n'.join(problems)


def test_no_import_cycles():
    known = modules()
    graph = {m: imports(m, p, known) for m, p in known.items()}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 'open'
        stack.append(m)
        for n in graph[m]:
            if state.get(n) == 'open':
                cycles.append(' -> '.join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 'done'
    for m in sorted(graph):
        if m not in state:
            visit(m)
    # a package __init__ that re-exports its own modules is not a cycle of behaviour; all else is
    real = [c for c in cycles if not all(x.startswith(c.split(' -> ')[0]) for x in c.split(' -> '))]
    assert not real, '\n'.join(real)


def test_the_checker_catches_an_upward_import(tmp_path):
    """The rule itself: a utils module importing the training floor is reported."""
    fake = tmp_path / 'bad.py'
    fake.write_text('from rlfn_arch.training.runner import train_stages\nfrom ..deploy import fast\n')
    known = modules()
    found = imports('rlfn_arch.utils.bad', str(fake), known)
    assert found == {'rlfn_arch.training.runner', 'rlfn_arch.deploy', 'rlfn_arch.deploy.fast'}
    assert all(floor(f) > floor('rlfn_arch.utils.bad') for f in found)
