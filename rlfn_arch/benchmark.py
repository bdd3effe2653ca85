"""NTIRE-style efficiency report: ``python -m rlfn_arch.benchmark --preset rlfn_ntire`` (or a model).

Parameters, FLOPs, activations and convs counted as the NTIRE 2022 challenge did (see
:mod:`rlfn_arch.deploy.efficiency` for the exact rules), then runtime and peak memory in the chosen
precision, eager and (``--fast``) the fastest path. Prints a table and writes JSON.
"""
import argparse
import json
import os
import sys

import torch

import rlfn_arch  # noqa: F401
from rlfn_arch.deploy.efficiency import benchmark, time_model
from rlfn_arch.deploy.fast import optimize_for_inference
from rlfn_arch.deploy.onnx import OnnxRLFN, check_runtime, onnx_precision, resolve_runtime
from rlfn_arch.deploy.source import add_model_args, add_runtime_arg, open_model
from rlfn_arch.utils.fs import atomic_write, check_output
from rlfn_arch.utils.report import format_table


def print_table(rows):
    cols = ['model', 'scale', 'params', 'flops_G', 'activations_M', 'convs', 'runtime_ms', 'peak_memory_MB',
            'device', 'threads', 'path', 'precision', 'layout']
    print(format_table(rows, cols))
    print(f'hardware: {rows[0]["hardware"]}')


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m rlfn_arch.benchmark', description=__doc__.split('\n\n')[0])
    add_model_args(p, preset=True)  # with --device and --precision (auto)
    p.add_argument('--size', type=int, nargs=2, default=[256, 256], metavar=('H', 'W'), help='LR input (256 256)')
    p.add_argument('--runs', type=int, default=10)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--threads', type=int, default=None, help='CPU threads (default: torch default)')
    p.add_argument('--fast', action='store_true', help='time the fastest path for that precision as well '
                   '(channels_last + torch.compile at this one input shape)')
    # its own name: --onnx here adds ONNX models beside the network, it is not the network (open_model's --onnx)
    p.add_argument('--onnx', nargs='+', default=[], dest='onnx_models',
                   help='also time these ONNX models (fp32 or int8) with --runtime')
    add_runtime_arg(p)
    p.add_argument('--json', default='benchmark.json', help='output JSON (default benchmark.json)')
    p.add_argument('--overwrite', action='store_true', help='replace an existing --json file')
    args = p.parse_args(argv)
    try:
        check_output(args.json, [args.model_path, args.opt, *args.onnx_models], args.overwrite)
        check_runtime(args.runtime, args.onnx_models)
        model = open_model(args)
        sessions = []
        for path in args.onnx_models:
            runtime = resolve_runtime(args.runtime, path)
            onnx_prec = onnx_precision(args.precision, runtime)
            sessions.append((path, runtime, onnx_prec,
                             OnnxRLFN(path, threads=args.threads, runtime=runtime, precision=onnx_prec)))
    except (ValueError, OSError) as e:  # CheckpointError (missing, unsafe, non-finite) is a ValueError
        print(f'error: {e}', file=sys.stderr)
        return 2
    net, cfg, device, precision, name = model.net, model.cfg, model.device, model.precision, model.name
    eager = net if precision == 'fp32' else optimize_for_inference(net, precision, channels_last=False)
    rows = [benchmark(eager, name, cfg['upscale'], tuple(args.size), args.runs, args.warmup, device, args.threads)]
    if args.fast:
        fast = optimize_for_inference(net, precision, compile=True)
        rows.append(benchmark(fast, name, cfg['upscale'], tuple(args.size), args.runs, args.warmup, device,
                              args.threads, path='fast'))
        rows[-1].update({k: rows[0][k] for k in ('params', 'flops_G', 'activations_M', 'convs')})
    for path, runtime, onnx_prec, sess in sessions:
        x = torch.rand(1, 3, *args.size)
        row = dict(rows[0], path=f'{runtime} {os.path.basename(path)}', device='cpu', precision=onnx_prec,
                   runtime_ms=round(time_model(sess, x, args.runs, args.warmup), 2))
        rows.append(row)
    print_table(rows)
    atomic_write(args.json, lambda f: json.dump(rows, f, indent=1), binary=False)
    print(f'wrote {args.json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
