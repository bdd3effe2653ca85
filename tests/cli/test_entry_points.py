"""One real process per entry point and for the ``rlfn`` console command: the module runs as ``python -m``
(its ``__main__`` guard, the shim before basicsr in a fresh interpreter), prints its help and exits 0.
Behaviour is tested in-process under tests/unit; here the process boundary is the point."""
import os
import shutil
import subprocess
import sys

from helpers import REPO

TOOLS = ['train', 'test', 'prepare', 'infer', 'export', 'quantize', 'convert', 'benchmark', 'compare']


def test_every_python_m_entry_point_starts_and_prints_its_help():
    """All started at once (each pays the torch + basicsr import), then checked one by one."""
    env = dict(os.environ, OMP_NUM_THREADS='1')
    procs = {t: subprocess.Popen([sys.executable, '-m', f'rlfn_arch.{t}', '--help'], cwd=REPO, env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE) for t in TOOLS}
    for tool, p in procs.items():
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and f'python -m rlfn_arch.{tool}' in out and 'Traceback' not in err, (tool, err)


def test_the_rlfn_console_command_dispatches_to_a_tool():
    exe = shutil.which('rlfn') or os.path.join(os.path.dirname(sys.executable), 'rlfn')
    assert os.path.isfile(exe), 'the rlfn console command is not installed (pip install -e .)'
    listing = subprocess.run([exe], capture_output=True, text=True, cwd=REPO)
    assert listing.returncode == 2 and all(t in listing.stdout for t in TOOLS)
    proc = subprocess.run([exe, 'train', '--help'], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0 and '--dry_run' in proc.stdout
