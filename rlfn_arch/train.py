"""Multi-stage warm-start training with BasicSR's own trainer loop.

    python -m rlfn_arch.train -opt options/train/RLFN_S_x4_quickstart.yml [--auto_resume] [--dry_run]
    torchrun --nproc_per_node=N -m rlfn_arch.train -opt FILE --launcher pytorch [--auto_resume]

This module parses the arguments, loads and checks the options (safe YAML, strict keys, names), builds the
stage plans (:mod:`rlfn_arch.training.plan`: folders, finalized options, initial weights, resume states,
precision), checks pretrained weights and data, all before anything is written, then runs the plans
(:func:`rlfn_arch.training.train_stages`, each stage in ``basicsr.train.train_pipeline`` unchanged; what is
swapped around it, and why: :mod:`rlfn_arch.basicsr_seam`) and maps errors to exit codes.
"""
import argparse
import random
import sys

import rlfn_arch  # noqa: F401  compatibility shim + registrations
from rlfn_arch.basicsr_seam import TrainDataError
from rlfn_arch.data.checked_dataset import DatasetSampleError
from rlfn_arch.models.warmstart_model import NonFiniteLossError
from rlfn_arch.training import build_plans, check_datasets, ensure_sample_dataset, stage_options, train_stages
from rlfn_arch.training.distributed import init_dist
from rlfn_arch.training.stages import check_pretrain
from rlfn_arch.utils.fs import LockedError, UnsafePathError, WriteError
from rlfn_arch.utils.options import OptionError, apply_force_yml, load_options, thaw
from rlfn_arch.utils.runtime import project_root


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog='python -m rlfn_arch.train', description=__doc__.split('\n\n')[0])
    parser.add_argument('-opt', required=True, help='path to the option YAML file')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none', help='job launcher')
    parser.add_argument('--auto_resume', action='store_true', help='continue the unfinished stage; skip finished ones')
    parser.add_argument('--debug', action='store_true',
                        help="BasicSR's debug mode (name prefixed with debug_); also prints the stage plans")
    parser.add_argument('--dry_run', action='store_true',
                        help='check everything, print the stage plans and exit without writing anything')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help='set by torch.distributed.launch')
    parser.add_argument('--force_yml', nargs='+', default=None, help='override options: train:total_iter=10')
    return parser.parse_args(argv)


def _worker_message(e):
    """The last line of an error re-raised from a DataLoader worker (which carries the worker's traceback)."""
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    last = lines[-1] if lines else type(e).__name__
    return last.split('DatasetSampleError: ', 1)[-1]


def prepare_run(args, rank=0, world=1):
    """Load, check and plan a run; nothing is written (except the embedded sample dataset when an option
    file reads from it and it is missing). Returns (experiments root, experiment folder, plans).

    Raises:
        OptionError, UnsafePathError: refused input, named.
    """
    raw = load_options(args.opt)
    apply_force_yml(raw, args.force_yml, args.opt)
    if args.debug and isinstance(raw.get('name'), str) and not raw['name'].startswith('debug'):
        raw['name'] = 'debug_' + raw['name']
    if raw.get('manual_seed') is None:  # basicsr draws a random seed; one for every stage of the run
        raw['manual_seed'] = random.randint(1, 10000)
    stage_list = stage_options(raw, args.opt)
    root = project_root(raw)
    experiments, exp_root, plans = build_plans(raw, stage_list, root, args.opt, auto_resume=args.auto_resume,
                                               rank=rank, world=world, launcher=args.launcher)
    options = [p.options for p in plans]
    check_pretrain([(p.label, thaw(p.options)) for p in plans if p.init_kind == 'pretrain' and not p.skip])
    if not args.dry_run:
        ensure_sample_dataset(options, root)
    check_datasets(options, world, root, skip_missing_sample=args.dry_run)
    return experiments, exp_root, plans


def main(argv=None):
    """Exit codes: 0 done; 2 options, data, names or a busy experiment refused (nothing written);
    3 too many non-finite losses; 4 a file could not be written (disk full, read-only)."""
    args = parse_args(argv)
    rank, world = 0, 1
    try:
        if args.launcher != 'none':
            rank, world = init_dist(args.launcher, load_options(args.opt))
        experiments, exp_root, plans = prepare_run(args, rank, world)
    except (OptionError, UnsafePathError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    if (args.dry_run or args.debug) and rank == 0:
        print(f'experiment {exp_root}{" (auto_resume)" if args.auto_resume else ""}:')
        for p in plans:
            print(p.describe())
        if args.dry_run:
            print('dry run: nothing was written')
            return 0
    try:
        return train_stages(plans, experiments, exp_root, args.auto_resume, rank, world, source=args.opt)
    except NonFiniteLossError as e:
        print(f'error: {e}', file=sys.stderr)
        return 3
    except (OptionError, LockedError, UnsafePathError, TrainDataError) as e:
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
