"""Dataset preparation: ``python -m rlfn_arch.prepare {bicubic,subimages,lmdb,df2k,sample,check} ...``.

* ``bicubic``   HR folder -> ``LR_bicubic/X{s}/<name>x{s}.png``, MATLAB ``imresize(modcrop(HR,s),1/s)``
                bit for bit (see :mod:`rlfn_arch.data.matlab_resize`).
* ``subimages`` crop HR (and LR) images into overlapping sub-images (BasicSR's DIV2K convention).
* ``lmdb``      image folder -> ``*.lmdb`` with ``meta_info.txt`` (basicsr's ``lmdb_util``), built in a
                temporary folder and renamed when complete.
* ``df2k``      DIV2K + Flickr2K as downloaded -> the HR/LR sub-image LMDBs of the paper recipes.
* ``sample``    the embedded default dataset from the photographs inside scikit-image.
* ``check``     check an HR/LR pair, two folders or two LMDBs (names, sizes, truncation, keys; ``--deep``
                decodes every image) and list every problem.

Every command uses all CPU cores by default (``--workers``), shows a progress bar and prints a summary.
"""
import argparse
import sys

import rlfn_arch  # noqa: F401  compatibility shim before basicsr
from rlfn_arch.data.builders import (
    DF2K_LAYOUT,
    PrepareError,
    build_df2k,
    build_lmdb,
    build_sample_dataset,
    check_pair,
    make_bicubic_lr,
    make_subimages,
)
from rlfn_arch.data.builders.sample import sample_folder
from rlfn_arch.utils.fs import WriteError
from rlfn_arch.utils.runtime import project_root


def build_parser():
    p = argparse.ArgumentParser(prog='python -m rlfn_arch.prepare', description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n\n', 1)[1])
    sub = p.add_subparsers(dest='cmd', required=True)
    w = dict(type=int, default=None, help='processes (default: all CPU cores)')

    b = sub.add_parser('bicubic', help='MATLAB-exact bicubic LR images')
    b.add_argument('--hr', required=True, help='folder of HR images')
    b.add_argument('--output', default=None,
                   help='output folder (default: <hr>/../LR_bicubic); writes X{s}/<name>x{s}.png')
    b.add_argument('--scales', type=int, nargs='+', default=[2, 3, 4], choices=[2, 3, 4, 8])
    b.add_argument('--overwrite', action='store_true', help='replace existing LR files of the same names')
    b.add_argument('--workers', **w)

    s = sub.add_parser('subimages', help='crop into overlapping sub-images')
    s.add_argument('--input', required=True, help='HR folder')
    s.add_argument('--output', required=True, help='HR sub-image folder')
    s.add_argument('--crop', type=int, default=480, help='HR crop size (default 480)')
    s.add_argument('--step', type=int, default=240, help='HR step (default 240)')
    s.add_argument('--thresh', type=int, default=48, help='leftover above which an extra end crop is added (48)')
    s.add_argument('--min_size', type=int, default=0, help='leave out images whose shorter HR side is below this '
                   '(e.g. the gt_size you train with); default 0')
    s.add_argument('--lr', default=None, help='matching LR folder (<name>x{s}.* or <name>.*), cropped at crop/scale')
    s.add_argument('--lr_output', default=None, help='LR sub-image folder (same names as the HR sub-images)')
    s.add_argument('--scale', type=int, default=None, choices=[2, 3, 4])
    s.add_argument('--overwrite', action='store_true', help='replace existing sub-images of the same names')
    s.add_argument('--workers', **w)

    m = sub.add_parser('lmdb', help='image folder -> LMDB (basicsr layout, meta_info.txt)')
    m.add_argument('--input', required=True, help='image folder')
    m.add_argument('--output', required=True, help='LMDB folder, ending in .lmdb')
    m.add_argument('--overwrite', action='store_true',
                   help='replace an existing LMDB (only once the new one is complete)')
    m.add_argument('--compress_level', type=int, default=1, help='PNG compression inside the LMDB (default 1)')
    m.add_argument('--workers', **w)

    d = sub.add_parser('df2k', help='DIV2K + Flickr2K -> sub-image LMDBs for the paper recipes',
                       description=DF2K_LAYOUT, formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument('--div2k', required=True, help='folder holding DIV2K_train_HR/')
    d.add_argument('--flickr2k', default=None, help='folder holding Flickr2K_HR/ (omit for DIV2K only)')
    d.add_argument('--output', default='datasets/DF2K', help='output folder (default datasets/DF2K)')
    d.add_argument('--scales', type=int, nargs='+', default=[2, 4], choices=[2, 3, 4])
    d.add_argument('--overwrite', action='store_true')
    d.add_argument('--workers', **w)

    e = sub.add_parser('sample', help='the embedded default dataset (scikit-image photographs, no download)')
    e.add_argument('--output', default=None, help='default: datasets/sample under the project root')
    e.add_argument('--overwrite', action='store_true')
    e.add_argument('--workers', **w)

    c = sub.add_parser('check', help='check an HR/LR pair (two folders or two LMDBs) and list every problem')
    c.add_argument('--hr', required=True)
    c.add_argument('--lr', required=True)
    c.add_argument('--scale', type=int, required=True, choices=[2, 3, 4, 8])
    c.add_argument('--filename_tmpl', default='{}x{s}', help="LR name template for folders (default '{}x{s}')")
    c.add_argument('--deep', action='store_true', help='also decode every image once (in parallel) and list '
                   'every unreadable or truncated one')
    c.add_argument('--workers', **w)
    return p


def main(argv=None):
    """Exit codes: 0 done; 1 some inputs failed (listed; the rest was written) or ``check`` found
    problems; 2 bad arguments or paths, or outputs that would replace files (nothing written); 4 a write
    failed (disk full, read-only), no partial output left."""
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == 'bicubic':
            summaries = [make_bicubic_lr(args.hr, args.output, args.scales, args.workers, args.overwrite)]
        elif args.cmd == 'subimages':
            summaries = [make_subimages(args.input, args.output, args.crop, args.step, args.thresh, args.lr,
                                       args.lr_output, args.scale, args.workers, args.overwrite, args.min_size)]
        elif args.cmd == 'lmdb':
            summaries = [build_lmdb(args.input, args.output, args.overwrite, args.compress_level, args.workers)]
        elif args.cmd == 'df2k':
            summaries = build_df2k(args.div2k, args.flickr2k, args.output, args.scales, workers=args.workers,
                                 overwrite=args.overwrite)
        elif args.cmd == 'sample':
            summaries = build_sample_dataset(args.output or sample_folder(project_root()),
                                             args.workers, args.overwrite)
        elif args.cmd == 'check':
            count, report = check_pair(args.hr, args.lr, args.scale, args.filename_tmpl, args.deep, args.workers)
            print('\n'.join(report))
            return 1 if count else 0
    except WriteError as e:  # a full disk or a read-only folder while writing: no partial output is left
        print(f'error: {e}', file=sys.stderr)
        return 4
    except (PrepareError, OSError) as e:  # bad paths: an output that is a file, a missing folder, ...
        print(f'error: {e}', file=sys.stderr)
        return 2
    for summ in summaries:
        print('\n' + '\n'.join(summ.lines()))
    failed = sum(len(s.failed) for s in summaries)
    if failed:
        print(f'error: {failed} input(s) failed (listed above); the others were written', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
