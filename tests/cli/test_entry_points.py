"""One real process per entry point and for the ``rlfn`` console command: the module runs as ``python -m``
(its ``__main__`` guard, the shim before basicsr in a fresh interpreter), prints its help and exits 0.
Behaviour is tested in-process under tests/unit; here the process boundary is the point."""
import os
import shutil
import subprocess
import sys

from helpers import REPO

TOOLS = ['train', 'test', 'prepare', 'infer', 'export', 'quantize', 'convert', 'benchmark', 'compare']


def test_every_entry_point_and_the_rlfn_command_start_in_a_fresh_interpreter():
    """All started at once (each pays the torch + basicsr import), then checked one by one."""
    exe = shutil.which('rlfn') or os.path.join(os.path.dirname(sys.executable), 'rlfn')
    assert os.path.isfile(exe), 'the rlfn console command is not installed (pip install -e .)'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    cmds = {t: [sys.executable, '-m', f'rlfn_arch.{t}', '--help'] for t in TOOLS}
    cmds['rlfn train'] = [exe, 'train', '--help']
    procs = {name: subprocess.Popen(cmd, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, cmd in cmds.items()}
    listing = subprocess.run([exe], capture_output=True, text=True, cwd=REPO)
    assert listing.returncode == 2 and all(t in listing.stdout for t in TOOLS)
    for name, p in procs.items():
        out, err = p.communicate(timeout=300)
        tool = name.split()[-1]
        assert p.returncode == 0 and f'python -m rlfn_arch.{tool}' in out and 'Traceback' not in err, (name, err)
        if name == 'rlfn train':
            assert '--dry_run' in out  # the console command dispatched to the train tool
