"""What a run keeps about its stages (``stages.json``) and how a stage finds the state to resume from."""
import json
import os
from os import path as osp

from rlfn_arch.utils.checkpoint import CheckpointError, safe_load
from rlfn_arch.utils.fs import atomic_write

STAGES_JSON = 'stages.json'


def find_resume_state(stage_dir, device, log=print):
    """The newest loadable ``training_states/<iter>.state`` whose ``models/net_g_<iter>.pth`` loads too.

    Returns:
        (dict | None, str | None): the state and its path.
    """
    states_dir = osp.join(stage_dir, 'training_states')
    if not osp.isdir(states_dir):
        return None, None
    iters = sorted((int(f[:-6]) for f in os.listdir(states_dir) if f.endswith('.state') and f[:-6].isdigit()),
                   reverse=True)
    for it in iters:
        path = osp.join(states_dir, f'{it}.state')
        net = osp.join(stage_dir, 'models', f'net_g_{it}.pth')
        try:
            state = safe_load(path, map_location=device)
            safe_load(net)
            if state.get('iter') != it:
                raise CheckpointError(f'{path}: holds iter {state.get("iter")}, expected {it}')
            return state, path
        except CheckpointError as e:
            log(f'WARNING: cannot resume from {path} ({e}); trying the previous training state')
    return None, None


class StageRecords:
    """``stages.json``: each stage's status, final checkpoint and last validation metrics (rank 0 writes).

    Raises:
        ValueError: the file is not JSON or not a mapping with a ``stages`` mapping (the caller names it).
    """

    def __init__(self, path, rank, data=None):
        self.path, self.rank = path, rank
        self.data = data if data is not None else {'stages': {}}
        if data is None and osp.isfile(path):
            with open(path, encoding='utf-8') as f:
                self.data = json.load(f)
        if not isinstance(self.data, dict) or not isinstance(self.data.get('stages'), dict):
            raise ValueError('expected a JSON mapping with a "stages" mapping')

    def get(self, name):
        return self.data['stages'].get(name, {})

    def update(self, name, **kw):
        self.data['stages'].setdefault(name, {}).update(kw)
        if self.rank == 0:
            atomic_write(self.path, lambda f: json.dump(self.data, f, indent=1), binary=False)

    def close_killed_segment(self, name, stage_dir):
        """A stage found 'running' was killed: add the wall time its last segment ran (from the segment's
        start to the newest file it wrote) to the stage's ``seconds``."""
        rec = self.get(name)
        start = rec.get('segment_start')
        if rec.get('status') != 'running' or not start or not osp.isdir(stage_dir):
            return
        newest = max((osp.getmtime(osp.join(d, f)) for d, _, fs in os.walk(stage_dir) for f in fs), default=start)
        self.update(name, seconds=round(rec.get('seconds', 0) + max(0.0, newest - start), 1), segment_start=None)
