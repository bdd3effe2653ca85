"""A regular (non-editable) install works: the wheel holds every module, imports them all with the source
tree out of the path, and its entry points start."""
import os
import subprocess
import sys
import zipfile

from helpers import REPO


def test_the_wheel_installs_and_imports_every_module(tmp_path):
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w',
                    str(tmp_path / 'dist'), REPO], check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = [tmp_path / 'dist' / f for f in os.listdir(tmp_path / 'dist') if f.endswith('.whl')]
    in_wheel = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith('rlfn_arch/') and n.endswith('.py')}
    in_tree = {os.path.relpath(os.path.join(d, f), REPO).replace(os.sep, '/')
               for d, _, fs in os.walk(os.path.join(REPO, 'rlfn_arch')) for f in fs if f.endswith('.py')}
    assert in_tree <= in_wheel, f'left out of the wheel: {sorted(in_tree - in_wheel)}'
    names = set(zipfile.ZipFile(wheel).namelist())  # the shipped models and their cards travel in the wheel
    assert {'rlfn_arch/archs/weights/rlfn_s_x3.safetensors', 'rlfn_arch/archs/weights/rlfn_s_x3.json'} <= names
    site = tmp_path / 'site'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '-q', '--target', str(site), str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300)
    modules = sorted(n[:-3].replace('/', '.').replace('.__init__', '') for n in in_wheel)
    code = ('import importlib, sys, rlfn_arch\n'
            f'assert rlfn_arch.__file__.startswith({str(site)!r}), rlfn_arch.__file__\n'
            f'for m in {modules!r}:\n    importlib.import_module(m)\n'
            'from rlfn_arch.archs.zoo import model_file\nassert model_file("rlfn_s_x3").startswith('
            f'{str(site)!r})\n'
            'print("imported", len(sys.modules))')
    env = dict(os.environ, PYTHONPATH=str(site))
    out = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and 'imported' in out.stdout, out.stderr[-3000:]
    for cmd in (['-m', 'rlfn_arch.prepare', '--help'], ['-m', 'rlfn_arch.cli', 'train', '--help']):
        run = subprocess.run([sys.executable, *cmd], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0 and 'usage' in run.stdout, run.stderr[-2000:]
    assert (site / 'bin' / 'rlfn').is_file()  # the console command
