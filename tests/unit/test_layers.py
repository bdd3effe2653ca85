"""The package's floors, read from its source: library below, entry points on top, no import upward, no
circle. Floors (an import may go to its own floor or lower):

    0  utils, compat (import-time shims), basicsr_seam (the one module that reaches into basicsr's internals)
    1  archs, losses, data
    2  models, deploy, integrations (and rlfn_arch.fast, the documented name of deploy.fast)
    3  training, and the package root (which imports the floors below to register BasicSR classes)
    4  entry points: python -m rlfn_arch.<tool> modules and the rlfn console command

Importing the bare package ``rlfn_arch`` (which installs the compatibility shim) is allowed everywhere.
Entry points never import each other (the ``rlfn`` command dispatches to them by name).
"""
import ast
import os

from helpers import REPO

from rlfn_arch.cli import MODULES, TOOLS

PKG = os.path.join(REPO, 'rlfn_arch')
ENTRY = {MODULES.get(t, t) for t in TOOLS} | {'cli'}
FLOOR = {'utils': 0, 'compat': 0, 'basicsr_seam': 0, 'archs': 1, 'losses': 1, 'data': 1, 'models': 2, 'deploy': 2,
         'integrations': 2, 'fast': 2, 'training': 3, '': 3}


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


SEAM = 'rlfn_arch.basicsr_seam'


def _private_basicsr_calls(tree, basicsr_names):
    """Calls of a basicsr base class's private method (``self._x()`` / ``super()._x()`` in a class that subclasses
    a basicsr class, ``_x`` not defined by the module itself)."""
    own = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    found = []
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        if not any(isinstance(b, ast.Name) and b.id in basicsr_names for b in cls.bases):
            continue
        for node in ast.walk(cls):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                attr, owner = node.func.attr, node.func.value
                is_self = isinstance(owner, ast.Name) and owner.id == 'self'
                is_super = isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == 'super'
                if (is_self or is_super) and attr.startswith('_') and not attr.startswith('__') and \
                        (is_super or attr not in own):
                    found.append(f'{cls.name} calls the basicsr private method {attr}')
    return found


def seam_problems(module, source):
    """What ``source`` does that only the seam may do: import a private basicsr name, call a private method of a
    basicsr base class, assign or setattr an attribute of a basicsr module, or use the seam's ``swapped``."""
    problems, basicsr_names = [], set()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith('basicsr'):
                    basicsr_names.add((a.asname or a.name).split('.')[0])
                    if any(p.startswith('_') for p in a.name.split('.')):
                        problems.append(f'{module}: imports the private {a.name}')
        elif isinstance(node, ast.ImportFrom) and (node.module or '').startswith('basicsr'):
            for a in node.names:
                basicsr_names.add(a.asname or a.name)
                if a.name.startswith('_') or any(p.startswith('_') for p in node.module.split('.')):
                    problems.append(f'{module}: imports the private {node.module}.{a.name}')
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, (ast.AugAssign, ast.AnnAssign)) else []
        for t in targets:
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id in basicsr_names:
                problems.append(f'{module}: assigns {t.value.id}.{t.attr}')
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ('setattr', 'swapped'):
            first = node.args[0] if node.args else None
            if node.func.id == 'swapped' or (isinstance(first, ast.Name) and first.id in basicsr_names):
                problems.append(f'{module}: {node.func.id}() on a basicsr module')
    problems += [f'{module}: {p}' for p in _private_basicsr_calls(tree, basicsr_names)]
    return problems


def test_only_the_seam_reaches_into_basicsr():
    problems = []
    for mod, path in sorted(modules().items()):
        if mod != SEAM:
            problems += seam_problems(mod, open(path).read())
    assert not problems, '\n'.join(problems)


def test_the_seam_rule_catches_a_swap_and_a_private_import():
    bad = ('import basicsr.train as bt\nfrom basicsr.utils.logger import _private\nbt.build_model = None\n'
           'from basicsr.utils import lmdb_util\nsetattr(lmdb_util, "tqdm", None)\n')
    found = seam_problems('rlfn_arch.data.bad', bad)
    private = ('from basicsr.models.sr_model import SRModel\nclass M(SRModel):\n    def load(self):\n'
               '        self._print_different_keys_loading(1, 2)\n        super()._log_validation_metric_values(1)\n'
               '        self._mine()\n    def _mine(self):\n        pass\n')
    assert [p.split('method ')[1] for p in seam_problems('rlfn_arch.models.bad', private)] == [
        '_print_different_keys_loading', '_log_validation_metric_values']
    assert len(found) == 3 and any('_private' in f for f in found) and any('bt.build_model' in f for f in found)
    assert any('setattr' in f for f in found)
