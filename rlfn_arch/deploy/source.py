"""Where an entry point's model comes from, decided once for every command-line tool.

:func:`add_model_args` adds the model arguments (a checkpoint, a preset, an ONNX file; ``--opt``,
``--input_range``, ``--device``, ``--precision``) and :func:`open_model` turns them into an
:class:`OpenModel`: the network in eval mode on its device, its settings, and the precision that runs there
(:func:`rlfn_arch.utils.precision.resolve_precision`, the one rule training uses too). Every problem is a
``ValueError`` or ``OSError`` naming the file or the value; the entry points map both to exit code 2. So
each CLI reads as: parse, open, run, exit code.
"""
import dataclasses
import os
from typing import Any

import torch

from rlfn_arch.archs.rlfn_arch import PRESETS
from rlfn_arch.archs.rlfn_weights import load_model
from rlfn_arch.archs.zoo import model_file, model_names
from rlfn_arch.utils.precision import PRECISIONS, resolve_precision
from rlfn_arch.utils.runtime import pick_device

from .onnx import RUNTIME_CHOICES, OnnxRLFN, check_runtime, onnx_precision, resolve_runtime


@dataclasses.dataclass(frozen=True)
class OpenModel:
    """An opened model.

    Attributes:
        net: the network (``torch.nn.Module`` in eval mode, or an :class:`OnnxRLFN` for ONNX files).
        cfg (dict): its settings (``upscale`` at least).
        device (torch.device): where it runs (ONNX: the CPU).
        precision (str): the precision that runs there (ONNX: that of its float operations, ``fp32`` except in
            OpenVINO, :func:`rlfn_arch.deploy.onnx.onnx_precision`).
        name (str): the preset or the file's name, for reports.
        kind (str): ``checkpoint``, ``preset`` or ``onnx``.
    """
    net: Any
    cfg: dict
    device: torch.device
    precision: str
    name: str
    kind: str


def add_model_args(parser, preset=False, onnx=False, opt=True, input_range=False, device=True, precision='auto'):
    """Add the model arguments to ``parser``: ``--model_path`` and, as asked, ``--preset`` / ``--onnx`` (one of
    them required), ``--scale`` (for presets), ``--opt``, ``--input_range``, ``--device`` and ``--precision``
    (default ``precision``; None leaves it out)."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('--model_path', help='checkpoint (BasicSR {"params": ...}, a converted or an official file); '
                     'network settings read from its tensors')
    src.add_argument('--model', help=f'a model that ships with the package, by name ({", ".join(model_names())}; '
                     'python -m rlfn_arch.zoo lists them)')
    if preset:
        src.add_argument('--preset', choices=list(PRESETS), help='a published configuration, random weights')
        parser.add_argument('--scale', type=int, default=4, choices=[2, 3, 4], help='upscale for --preset (4)')
    if onnx:
        src.add_argument('--onnx', help='an exported ONNX model (fp32 from rlfn_arch.export or int8 from '
                         'rlfn_arch.quantize or an int8 training stage), run on the CPU by --runtime')
        add_runtime_arg(parser)
    if opt:
        parser.add_argument('--opt', default=None, help='option file whose network_g to use')
    if input_range:
        parser.add_argument('--input_range', type=float, default=None,
                            help='the range the weights work in: 255 for the official files as released, 1 for '
                            'ours; default: detected from what the network does')
    if device:
        parser.add_argument('--device', default=None, help='cpu, cuda, cuda:1 (default: cuda if available)')
    if precision:
        parser.add_argument('--precision', default=precision, choices=PRECISIONS,
                            help=f'{precision} (default); auto = bf16 where the device runs it natively (AVX512_BF16 '
                            'or AMX CPU, bf16 GPU), else fp32; bf16/fp16 where they are not native run emulated, '
                            'with a warning')
    return parser


def add_runtime_arg(parser):
    """``--runtime``: what runs ``--onnx`` models (:data:`rlfn_arch.deploy.onnx.RUNTIME_CHOICES`)."""
    parser.add_argument('--runtime', default='auto', choices=RUNTIME_CHOICES,
                        help='what runs --onnx models on the CPU: auto (default: onnxruntime, or openvino for an int8 '
                        'model trained with train.qat.placement: inputs, which runs in int8 there only), onnxruntime '
                        '(fp32 float operations) or openvino (pip install openvino; faster on the CPUs measured, and '
                        'it follows --precision: auto = bf16 float operations where the CPU has bf16 natively; '
                        'docs/int8.md)')


def open_model(args, model_path=None):
    """Open the model ``args`` name (or ``model_path`` instead of ``args.model_path``).

    Raises:
        ValueError: unusable weights (missing, unsafe, non-finite, not an RLFN layout), an unknown preset;
            the message names the file or the value.
        OSError: a file that cannot be read.
    """
    path = model_path or getattr(args, 'model_path', None)
    if not path and getattr(args, 'model', None):
        path = model_file(args.model)
    if hasattr(args, 'onnx'):  # a tool whose model may be an ONNX file (add_model_args(onnx=True)): --runtime fits
        check_runtime(getattr(args, 'runtime', 'auto'), args.onnx and not model_path)
    if getattr(args, 'onnx', None) and not model_path:
        runtime = resolve_runtime(getattr(args, 'runtime', 'auto'), args.onnx)
        precision = onnx_precision(getattr(args, 'precision', 'fp32'), runtime)
        net = OnnxRLFN(args.onnx, runtime=runtime, precision=precision)
        return OpenModel(net, {'upscale': net.upscale}, torch.device('cpu'), precision, os.path.basename(args.onnx),
                         'onnx')
    # a tool without --device (export, quantize) runs on the CPU
    device = pick_device(args.device) if hasattr(args, 'device') else torch.device('cpu')
    preset = None if path else getattr(args, 'preset', None)
    net, cfg = load_model(path, getattr(args, 'opt', None), preset=preset, scale=getattr(args, 'scale', 4),
                          input_range=getattr(args, 'input_range', None), device=device)
    precision = resolve_precision(getattr(args, 'precision', 'fp32'), device)  # the one policy (utils.precision)
    kind = 'preset' if preset else 'checkpoint'
    shipped = getattr(args, 'model', None) if not model_path else None
    name = preset or shipped or os.path.basename(path)
    return OpenModel(net, cfg, device, precision, name, kind)
