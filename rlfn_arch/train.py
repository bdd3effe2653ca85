"""Multi-stage warm-start training with BasicSR's own trainer loop.

    python -m rlfn_arch.train -opt options/train/RLFN_S_x4_quickstart.yml [--auto_resume]
    torchrun --nproc_per_node=N -m rlfn_arch.train -opt FILE --launcher pytorch [--auto_resume]

This module parses the arguments, loads and checks the options (safe YAML, strict keys, names, pretrained
weights, data) before anything is written, runs :func:`rlfn_arch.training.train_stages` and maps errors
to exit codes. Each entry of ``stages:`` is deep-merged into the rest of the option file
(:mod:`rlfn_arch.training.stages`) and run by ``basicsr.train.train_pipeline`` unchanged (what is swapped
around it, and why: :mod:`rlfn_arch.training.basicsr_adapter`).
"""
import argparse
import random
import sys

import rlfn_arch  # noqa: F401  compatibility shim + registrations
from rlfn_arch.data.checked_dataset import DatasetSampleError
from rlfn_arch.models.warmstart_model import NonFiniteLossError
from rlfn_arch.training import check_datasets, ensure_sample_dataset, stage_options, train_stages
from rlfn_arch.utils.checkpoint import check_pretrain
from rlfn_arch.utils.fs import LockedError, UnsafePathError, WriteError
from rlfn_arch.utils.options import OptionError, apply_force_yml, load_options
from rlfn_arch.utils.runtime import finalize, project_root


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog='python -m rlfn_arch.train', description=__doc__.split('\n\n')[0])
    parser.add_argument('-opt', required=True, help='path to the option YAML file')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none', help='job launcher')
    parser.add_argument('--auto_resume', action='store_true', help='continue the unfinished stage; skip finished ones')
    parser.add_argument('--debug', action='store_true', help="BasicSR's debug mode (name prefixed with debug_)")
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help='set by torch.distributed.launch')
    parser.add_argument('--force_yml', nargs='+', default=None, help='override options: train:total_iter=10')
    return parser.parse_args(argv)


def _worker_message(e):
    """The last line of an error re-raised from a DataLoader worker (which carries the worker's traceback)."""
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    last = lines[-1] if lines else type(e).__name__
    return last.split('DatasetSampleError: ', 1)[-1]


def main(argv=None):
    """Exit codes: 0 done; 2 options, data, names or a busy experiment refused (nothing written);
    3 too many non-finite losses; 4 a file could not be written (disk full, read-only)."""
    args = parse_args(argv)
    try:
        raw = load_options(args.opt)
        apply_force_yml(raw, args.force_yml, args.opt)
        if args.debug and isinstance(raw.get('name'), str) and not raw['name'].startswith('debug'):
            raw['name'] = 'debug_' + raw['name']
        if raw.get('manual_seed') is None:  # basicsr draws a random seed; one for every stage of the run
            raw['manual_seed'] = random.randint(1, 10000)
        stage_list = stage_options(raw, args.opt)
        root = project_root(raw)
        for _, o in stage_list:
            finalize(o, root, is_train=True, source=args.opt)
        check_pretrain(stage_list)
        ensure_sample_dataset(stage_list, root)
        check_datasets(stage_list)
    except OptionError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    try:
        return train_stages(args, raw, stage_list, root)
    except NonFiniteLossError as e:
        print(f'error: {e}', file=sys.stderr)
        return 3
    except (OptionError, LockedError, UnsafePathError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    except DatasetSampleError as e:
        print(f'error: {_worker_message(e)}', file=sys.stderr)
        return 2
    except WriteError as e:  # atomic writes: the previous file at that path is really intact
        print(f'error: {e} (the previous version of that file is intact; free space or fix permissions, '
              'then resume with --auto_resume)', file=sys.stderr)
        return 4
    except OSError as e:  # any other write failure: say what failed, claim nothing
        print(f'error: {e.filename + ": " if getattr(e, "filename", None) else ""}{e.strerror or e}',
              file=sys.stderr)
        return 4


if __name__ == '__main__':
    sys.exit(main())
