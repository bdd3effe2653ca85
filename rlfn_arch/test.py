"""Test with BasicSR's test pipeline: ``python -m rlfn_arch.test -opt options/test/<file>.yml``.

``--onnx MODEL`` tests an exported (fp32 or int8) ONNX model in the same pipeline, run by ONNX Runtime or
(``--runtime openvino``) OpenVINO.

Runs basicsr's ``test_pipeline`` unchanged, with our option parsing (safe YAML, strict checks, paths
resolved against the project root, CPU when there is no GPU) and the metric lines on stdout.
"""
import argparse
import os
import sys

import rlfn_arch  # noqa: F401  registers RLFN & co. and installs the compatibility shim
from rlfn_arch.archs.zoo import model_file, model_names
from rlfn_arch.basicsr_seam import run_test
from rlfn_arch.deploy.onnx import check_runtime, onnx_precision, resolve_runtime
from rlfn_arch.deploy.source import add_runtime_arg
from rlfn_arch.training.stages import check_pretrain
from rlfn_arch.utils.options import OptionError, apply_force_yml, check_options, load_options
from rlfn_arch.utils.precision import PRECISIONS
from rlfn_arch.utils.runtime import finalize, project_root


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog='python -m rlfn_arch.test', description=__doc__.split('\n\n')[0])
    parser.add_argument('-opt', required=True, help='path to the test option YAML file')
    parser.add_argument('--launcher', choices=['none'], default='none', help='testing runs on one process')
    parser.add_argument('--force_yml', nargs='+', default=None, help='e.g. path:pretrain_network_g=FILE')
    parser.add_argument('--model', default=None, help='test a model that ships with the package, by name '
                        f'({", ".join(model_names())}): sets path.pretrain_network_g')
    parser.add_argument('--onnx', default=None, help='test an exported ONNX model (fp32, or int8 from '
                        'rlfn_arch.quantize or an int8 training stage) on the CPU instead of network_g and its weights')
    add_runtime_arg(parser)
    parser.add_argument('--datasets_root', default=None,
                        help='folder holding <Set>/HR and <Set>/LR_bicubic/X<s> (e.g. ../shared/datasets); '
                        'replaces the leading "datasets/" of the dataroots in the option file')
    parser.add_argument('--precision', default='fp32', choices=PRECISIONS,
                        help='fp32 (default: the paper protocol), auto (bf16 where native), bf16, fp16 (CUDA)')
    parser.add_argument('--auto_resume', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--debug', action='store_true', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def load_test_options(opt_path, force_yml=None, datasets_root=None, precision='fp32', model=None, onnx=None,
                      runtime='auto'):
    """Load, check and finalize test options. Datasets whose folders are missing are dropped with a
    message; none left is an error. ``precision`` other than fp32 runs the network under autocast
    through WarmStartModel's ``test()`` (a SRModel subclass; basicsr's SRModel has no precision)."""
    opt = load_options(opt_path)
    apply_force_yml(opt, force_yml, opt_path)
    if model:
        opt.setdefault('path', {})['pretrain_network_g'] = model_file(model)
    try:
        check_runtime(runtime, onnx)
    except ValueError as e:
        raise OptionError(str(e)) from e
    if onnx:  # the ONNX model replaces network_g and its weights; it must upscale by the options' scale
        if model:
            raise OptionError(f'--onnx {onnx} and --model {model}: test one model at a time')
        if not os.path.isfile(onnx):
            raise OptionError(f'--onnx {onnx}: not found')
        runtime = resolve_runtime(runtime, onnx)
        if precision != 'fp32' and runtime != 'openvino':
            raise OptionError(f'--onnx {onnx}: ONNX Runtime runs it as exported; --precision {precision} applies '
                              'with --runtime openvino (the precision of its float operations)')
        try:
            onnx_prec = onnx_precision(precision, runtime)
        except ValueError as e:
            raise OptionError(f'--onnx {onnx}: {e}') from e
        opt['network_g'] = {'type': 'OnnxNetwork', 'path': os.path.abspath(onnx), 'upscale': opt.get('scale'),
                            'runtime': runtime, 'precision': onnx_prec}
        opt.setdefault('path', {}).pop('pretrain_network_g', None)
    elif precision != 'fp32':
        opt.setdefault('val', {})['precision'] = precision
        if opt.get('model_type') == 'SRModel':
            opt['model_type'] = 'WarmStartModel'
    check_options(opt, opt_path, is_train=False)
    root = project_root(opt)
    if datasets_root:
        for ds in opt['datasets'].values():
            for key in ('dataroot_gt', 'dataroot_lq'):
                if str(ds.get(key, '')).startswith('datasets/'):
                    ds[key] = os.path.join(os.path.abspath(datasets_root), ds[key][len('datasets/'):])
    opt = finalize(opt, root, is_train=False, source=opt_path)
    for phase, ds in list(opt['datasets'].items()):
        missing = [ds[k] for k in ('dataroot_gt', 'dataroot_lq') if ds.get(k) and not os.path.isdir(ds[k])]
        if missing:
            print(f'skipping {ds.get("name", phase)}: {", ".join(missing)} not found (see datasets/README.md)',
                  flush=True)
            del opt['datasets'][phase]
    if not opt['datasets']:
        raise OptionError(f'{opt_path}: none of the test datasets was found')
    weights = opt['path'].get('pretrain_network_g')
    if weights and not os.path.isfile(weights):
        raise OptionError(f'{opt_path}: path.pretrain_network_g: {weights} not found '
                          '(convert the official weights with python -m rlfn_arch.convert, or train a model)')
    if weights:
        check_pretrain([(None, opt)])
    return opt, root


def main(argv=None):
    args = parse_args(argv)
    try:
        opt, root = load_test_options(args.opt, args.force_yml, args.datasets_root, args.precision, args.model,
                                      args.onnx, args.runtime)
    except (OptionError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    run_test(opt, args, root)
    return 0


if __name__ == '__main__':
    sys.exit(main())
