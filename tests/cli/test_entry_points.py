"""Every entry point starts in a fresh interpreter: ``python -m rlfn_arch.<tool> --help`` (its ``__main__``
guard, the shim before basicsr) prints its help and exits 0, and so does the ``rlfn`` console command.
Behaviour is tested in-process under tests/unit; here the process boundary is the point.

The nine tools run in children forked from one fresh interpreter that has imported torch and torchvision
only (``forked_help.py``): each child still imports rlfn_arch and basicsr itself, as ``python -m`` would,
without paying the 5 s torch start nine times. The ``rlfn`` command runs as the real installed script."""
import json
import os
import shutil
import subprocess
import sys

from helpers import REPO

from rlfn_arch.cli import MODULES
from rlfn_arch.cli import TOOLS as NAMES

TOOLS = [MODULES.get(t, t) for t in NAMES]  # the module behind each tool of the rlfn command


def test_every_entry_point_and_the_rlfn_command_start_in_a_fresh_interpreter():
    exe = shutil.which('rlfn') or os.path.join(os.path.dirname(sys.executable), 'rlfn')
    assert os.path.isfile(exe), 'the rlfn console command is not installed (pip install -e .)'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    forked = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), 'forked_help.py'), *TOOLS],
                              cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    console = subprocess.run([exe, 'train', '--help'], cwd=REPO, env=env, capture_output=True, text=True)
    assert console.returncode == 0 and '--dry_run' in console.stdout, console.stderr  # dispatched to train
    listing = subprocess.run([exe], capture_output=True, text=True, cwd=REPO, env=env)
    assert listing.returncode == 2 and all(t in listing.stdout for t in NAMES)
    out, err = forked.communicate(timeout=300)
    assert forked.returncode == 0, err
    results = json.loads(out)
    assert sorted(results) == sorted(TOOLS)
    for tool, (code, stdout, stderr) in results.items():
        assert code == 0 and f'python -m rlfn_arch.{tool}' in stdout and 'Traceback' not in stderr, (tool, stderr)
