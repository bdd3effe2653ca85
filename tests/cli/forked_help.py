"""Run ``python -m rlfn_arch.<tool> --help`` for each tool named on the command line, each in a child forked
from this fresh interpreter after it has imported torch and torchvision only (the 5 s every tool would
pay again; nothing of rlfn_arch or basicsr is imported here, so each child imports them itself, shim first,
as a fresh ``python -m`` would). Prints one JSON object: {tool: [exit code, stdout, stderr]}."""
import json
import os
import runpy
import sys
import tempfile

import torch  # noqa: F401  (the shared, tool-independent part of every start)
import torchvision  # noqa: F401


def _child(tool, out_path, err_path):
    for fd, path in ((1, out_path), (2, err_path)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_TRUNC), fd)
    sys.stdout, sys.stderr = open(1, 'w', closefd=False), open(2, 'w', closefd=False)
    sys.argv = [f'rlfn_arch.{tool}', '--help']
    code = 0
    try:
        runpy.run_module(f'rlfn_arch.{tool}', run_name='__main__', alter_sys=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - reported to the parent as a traceback on stderr
        import traceback
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(tools):
    assert not any(m == 'basicsr' or m.startswith(('rlfn_arch', 'basicsr.')) for m in sys.modules)
    with tempfile.TemporaryDirectory() as tmp:
        children = {}
        for tool in tools:
            out, err = os.path.join(tmp, f'{tool}.out'), os.path.join(tmp, f'{tool}.err')
            for p in (out, err):
                open(p, 'w').close()
            pid = os.fork()
            if pid == 0:
                _child(tool, out, err)
            children[tool] = (pid, out, err)
        result = {}
        for tool, (pid, out, err) in children.items():
            _, status = os.waitpid(pid, 0)
            result[tool] = [os.waitstatus_to_exitcode(status), open(out).read(), open(err).read()]
    print(json.dumps(result))


if __name__ == '__main__':
    main(sys.argv[1:])
