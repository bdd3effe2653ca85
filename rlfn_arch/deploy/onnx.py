"""ONNX: export with dynamic batch/height/width (opset >= 17), compare with PyTorch, run with ONNX Runtime or
OpenVINO.

ESA's resize back to the input's own size and PixelShuffle (DepthToSpace) export with dynamic shapes.
``onnx`` and ``onnxruntime`` are optional dependencies (the ``export`` extra), ``openvino`` too (the ``openvino``
extra), imported where used.
"""
import importlib.util
import os
import warnings
from collections import OrderedDict

import numpy as np
import torch
from torch.nn import functional as F

from rlfn_arch.archs.qat import WEIGHT_QMAX
from rlfn_arch.archs.rlfn_arch import MIN_INPUT_SIZE
from rlfn_arch.utils.fs import atomic_write
from rlfn_arch.utils.precision import int8_saturates, resolve_precision

from basicsr.utils.registry import ARCH_REGISTRY

CHECK_SIZES = [(MIN_INPUT_SIZE, MIN_INPUT_SIZE), (17, 23), (64, 64), (120, 80), (256, 256)]


class _Export(torch.nn.Module):
    """The network without the small-input padding branch (ONNX graphs have no Python control flow):
    exported models need inputs of at least 15x15."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.forward_features(x)


def export_onnx(net, path, opset=17, metadata=None):
    """Export ``net`` to ``path`` (atomically); ``metadata`` (strings) goes into the model's ``metadata_props``."""
    import io
    net = net.eval().cpu()
    x = torch.rand(1, net.conv_1.in_channels, 32, 32)
    buf = io.BytesIO()
    torch.onnx.export(_Export(net), (x, ), buf, opset_version=opset, input_names=['lq'], output_names=['sr'],
                      dynamic_axes={'lq': {0: 'batch', 2: 'height', 3: 'width'},
                                    'sr': {0: 'batch', 2: 'out_height', 3: 'out_width'}}, dynamo=False)
    data = buf.getvalue()
    if metadata:
        import onnx
        model = onnx.load_from_string(data)
        for k, v in metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = str(k), str(v)
        data = model.SerializeToString()
    atomic_write(path, lambda f: f.write(data))
    return path


def onnx_metadata(path):
    """The ``metadata_props`` of an ONNX file as a dict ({} when it has none)."""
    import onnx
    return {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}


def _metadata_or_empty(path):
    """:func:`onnx_metadata`, or {} where the ``onnx`` package is missing or cannot parse the file (the runtime
    that read the model decides whether it runs; the scale is checked by running it)."""
    try:
        return onnx_metadata(path)
    except Exception:  # noqa: BLE001 - ImportError, or onnx's own parse errors
        return {}


def check_onnx(net, path, sizes=CHECK_SIZES, batch=1, seed=0):
    """Max abs difference between onnxruntime and PyTorch per size: list of (h, w, diff)."""
    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    g = torch.Generator().manual_seed(seed)
    out = []
    for h, w in sizes:
        x = torch.rand(batch, 3, h, w, generator=g)
        with torch.inference_mode():
            ref = net.eval().cpu()(x).numpy()
        got = sess.run(['sr'], {'lq': x.numpy()})[0]
        if got.shape != ref.shape:
            raise AssertionError(f'{path}: output {got.shape} for input {tuple(x.shape)}, PyTorch gives {ref.shape}')
        diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
        # NaN defeats max() comparisons; a non-finite output on either side is an infinite difference
        out.append((h, w, float(diff.max()) if np.isfinite(diff).all() else float('inf')))
    return out


#: The runtimes that run an exported model on the CPU (``--runtime``): ``onnxruntime`` (the default: the
#: ``export`` extra) or ``openvino`` (the ``openvino`` extra; on an Intel Xeon with AMX it ran the fp32 model
#: 1.2x, the trained int8 model 1.6x faster than ONNX Runtime, and in bf16 faster still: docs/int8.md).
ONNX_RUNTIMES = ('onnxruntime', 'openvino')
#: What ``--runtime`` takes: a runtime, or ``auto`` (:func:`resolve_runtime`: the model decides).
RUNTIME_CHOICES = ('auto',) + ONNX_RUNTIMES
#: OpenVINO's inference precision hint for each precision the operations an ONNX model keeps in float run in.
_OPENVINO_HINTS = {'fp32': 'f32', 'bf16': 'bf16'}


def onnx_precision(requested, runtime):
    """The precision the float operations of an ONNX model (all of an fp32 model; what an int8 model keeps in
    float: ESA, additions, the convs left float) run in: the project's rule
    (:func:`rlfn_arch.utils.precision.resolve_precision`, ``auto`` = bf16 where the CPU has it natively) where
    the runtime can follow it (OpenVINO: fp32 or bf16); always fp32 in ONNX Runtime, which runs the model as
    exported (so ``benchmark --precision bf16 --onnx m.onnx`` times PyTorch in bf16 beside ONNX Runtime as is).

    Raises:
        ValueError: a precision OpenVINO cannot run here (names it).
    """
    if runtime == 'onnxruntime':
        return 'fp32'
    precision = resolve_precision(requested, 'cpu')
    if precision not in _OPENVINO_HINTS:
        raise ValueError(f'--precision {requested}: OpenVINO runs an ONNX model\'s float operations in '
                         f'{" or ".join(_OPENVINO_HINTS)} here')
    return precision


def check_runtime(runtime, onnx):
    """Refuse a ``--runtime`` that cannot apply before anything runs: one that is not in :data:`RUNTIME_CHOICES`,
    OpenVINO without an ``--onnx`` model (a PyTorch checkpoint runs in PyTorch) or not installed.

    Raises:
        ValueError: the message names the value and what was expected.
    """
    if runtime not in RUNTIME_CHOICES:
        raise ValueError(f'--runtime {runtime!r}: expected one of {", ".join(RUNTIME_CHOICES)}')
    if runtime == 'openvino' and not onnx:
        raise ValueError('--runtime openvino runs --onnx models (export one with python -m rlfn_arch.export or '
                         'rlfn_arch.quantize); a checkpoint runs in PyTorch')
    if runtime == 'openvino' and importlib.util.find_spec('openvino') is None:
        raise ValueError('--runtime openvino: OpenVINO is not installed (pip install openvino)')


def resolve_runtime(requested, path):
    """The runtime that runs the ONNX model ``path`` for ``--runtime requested``: a named runtime as it is;
    ``auto``: OpenVINO for an int8 model whose convs write float (``train.qat.placement: inputs``, int8 in OpenVINO
    only) when OpenVINO is installed, else ONNX Runtime (which warns about such a model)."""
    if requested != 'auto':
        return requested
    if importlib.util.find_spec('openvino') is None:
        return 'onnxruntime'
    try:
        return 'openvino' if int8_placement_onnx(path) == 'inputs' else 'onnxruntime'
    except Exception:  # no onnx package, or not a readable ONNX file: ONNX Runtime opens it and says why
        return 'onnxruntime'


def _onnxruntime(path, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    try:
        sess = ort.InferenceSession(path, so, providers=['CPUExecutionProvider'])
    except Exception as e:  # onnxruntime's own exception types: one message naming the file
        raise ValueError(f'{path}: not an ONNX model ONNX Runtime can run: {str(e).strip()[:300]}') from e
    name = sess.get_inputs()[0].name
    return lambda a: sess.run(None, {name: a})[0], dict(sess.get_modelmeta().custom_metadata_map or {})


def openvino_runner(path, threads=None, hint='f32', max_shapes=8):
    """A function running the ONNX file ``path`` with OpenVINO on the CPU: float32 NCHW array in, array out.

    OpenVINO is fastest compiled for one input shape, so it compiles once per shape it meets and keeps the last
    ``max_shapes`` (a tiled image has a few). ``hint``: its inference precision hint, what the operations that are
    not int8 compute in (``f32``: as exported; ``bf16``: faster on CPUs with native bf16, lower quality).

    Raises:
        ImportError: OpenVINO is not installed (``pip install openvino``, or the package's ``openvino`` extra).
        ValueError: a file OpenVINO cannot read, or a model it cannot compile on this CPU (names the file).
    """
    try:
        import openvino as ov
    except ImportError as e:
        raise ImportError(f'{path}: --runtime openvino needs OpenVINO (pip install openvino)') from e
    core = ov.Core()
    try:
        model = core.read_model(path)
    except Exception as e:  # OpenVINO's own exception types
        raise ValueError(f'{path}: not an ONNX model OpenVINO can read: {str(e).strip()[:300]}') from e
    config = {'PERFORMANCE_HINT': 'LATENCY', 'INFERENCE_PRECISION_HINT': hint}
    if threads:
        config['INFERENCE_NUM_THREADS'] = int(threads)
    compiled = OrderedDict()

    def run(a):
        if a.shape not in compiled:
            if len(compiled) >= max_shapes:
                compiled.popitem(last=False)
            m = model.clone()
            m.reshape({m.inputs[0].get_any_name(): list(a.shape)})
            try:
                c = core.compile_model(m, 'CPU', config)
            except Exception as e:
                raise ValueError(f'{path}: OpenVINO could not compile it for input {list(a.shape)} on this CPU: '
                                 f'{str(e).strip().splitlines()[-1][:300]}') from e
            compiled[a.shape] = (c.create_infer_request(), c.output(0))
        compiled.move_to_end(a.shape)
        request, out = compiled[a.shape]
        return np.array(request.infer({0: a})[out])
    return run


def int8_weight_bits_onnx(model):
    """The bits of an int8 ONNX model's conv weights (the largest |q| of its int8 initializers: up to 64 is 7
    bits), or None (no int8 weights). ``model``: a path or a ModelProto."""
    import onnx
    from onnx import numpy_helper
    model = onnx.load(model) if isinstance(model, (str, os.PathLike)) else model
    peak = None
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.INT8 and len(init.dims) == 4:
            a = numpy_helper.to_array(init)
            peak = max(peak or 0, int(np.abs(a.astype(np.int16)).max()) if a.size else 0)
    return None if peak is None else 7 if peak <= WEIGHT_QMAX[7] else 8


def int8_placement_onnx(model):
    """Which tensors of an int8 ONNX model's int8 convs are 8-bit (:data:`rlfn_arch.utils.options.schema.
    QAT_PLACEMENTS`): ``qlinear`` when an int8 conv's output goes to a QuantizeLinear (ONNX Runtime fuses such a
    conv into an int8 QLinearConv), ``inputs`` when none does (the form OpenVINO runs in int8 and ONNX Runtime in
    float), None when no conv reads int8 weights. ``model``: a path or a ModelProto."""
    import onnx
    model = onnx.load(model) if isinstance(model, (str, os.PathLike)) else model
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == 'DequantizeLinear'}
    quantizes = {n.input[0] for n in model.graph.node if n.op_type == 'QuantizeLinear'}
    outputs = [n.output[0] for n in model.graph.node
               if n.op_type == 'Conv' and len(n.input) > 1 and n.input[1] in dequantized]
    if not outputs:
        return None
    return 'qlinear' if any(o in quantizes for o in outputs) else 'inputs'


class OnnxRLFN:
    """Run an exported (fp32 or int8) RLFN ONNX model with ONNX Runtime or OpenVINO like the PyTorch network:
    ``(N, 3, H, W)`` tensor in, tensor out. Inputs below 15x15 are replicate-padded and cropped, as
    RLFN's own small-input handling does.

    Args:
        path (str): the .onnx file.
        threads (int | None): the runtime's threads. Default: the runtime's choice.
        scale (int | None): the scale it must upscale by (checked against what it does). Default: None.
        runtime (str): ``onnxruntime`` (default) or ``openvino`` (:data:`ONNX_RUNTIMES`).
        precision (str): what the float operations run in (:func:`onnx_precision`): ``fp32`` (default) or, with
            OpenVINO, ``bf16`` or ``auto``.
    """

    def __init__(self, path, threads=None, scale=None, runtime='onnxruntime', precision='fp32'):
        if runtime not in ONNX_RUNTIMES:
            raise ValueError(f'runtime {runtime!r}: expected one of {", ".join(ONNX_RUNTIMES)}')
        self.path, self.runtime, self.precision = path, runtime, onnx_precision(precision, runtime)
        if runtime == 'openvino':
            self._run = openvino_runner(path, threads, _OPENVINO_HINTS[self.precision])
            meta = _metadata_or_empty(path)
        else:
            self._run, meta = _onnxruntime(path, threads)
        self.metadata = meta
        # what the model does decides; the scale the export wrote must agree with it (a tampered or foreign
        # value would crop or stretch every image)
        probed = self._probe_scale()
        written = meta.get('scale')
        if written is not None and str(written).strip() != str(probed):
            raise ValueError(f'{path}: its metadata says scale {written!r}, but the model upscales x{probed}; '
                             'refusing a model that describes itself wrongly (export it again)')
        if scale is not None and scale != probed:
            raise ValueError(f'{path}: upscales x{probed}, not x{scale}')
        self.upscale = probed
        self._check_saturation()
        self._check_placement()

    def _check_placement(self):
        """Warn when ONNX Runtime meets an int8 model whose convs write float (``train.qat.placement: inputs``): it
        computes those convs in float, slower than the fp32 model; OpenVINO runs them in int8."""
        if self.runtime != 'onnxruntime':
            return
        try:
            placement = int8_placement_onnx(self.path)
        except ImportError:  # no onnx package to read the graph with: nothing to say
            return
        if placement == 'inputs':
            warnings.warn(f'{self.path}: its int8 convs read 8 bits and write float (train.qat.placement: inputs), '
                          'which ONNX Runtime computes in float, slower than the fp32 model; OpenVINO runs them in '
                          'int8: --runtime openvino (pip install openvino)', RuntimeWarning, stacklevel=3)

    def _check_saturation(self):
        """Warn when an int8 model with 8-bit weights runs on a CPU whose int8 kernels can saturate (no VNNI/AMX:
        :func:`rlfn_arch.utils.precision.int8_saturates`): its images can lose quality there (docs/int8.md)."""
        if not int8_saturates(capped=self.runtime == 'openvino'):
            return
        try:
            bits = int8_weight_bits_onnx(self.path)
        except ImportError:  # no onnx package to read the weights with: nothing to say
            return
        if bits == 8:
            warnings.warn(f'{self.path}: int8 weights in [-127, 127] on a CPU without int8 dot-product instructions '
                          '(VNNI/AMX): its int8 kernels add pairs of products in 16 bits, which such weights can '
                          'overflow, and the images lose quality (OpenVINO under an AVX2 cap: 0.17 dB on Set5 x4, '
                          'docs/int8.md); a model with 7-bit weights does not (train.qat.weight_bits: 7, or python -m '
                          'rlfn_arch.quantize --weight_bits 7)', RuntimeWarning, stacklevel=3)

    def _probe_scale(self):
        """The scale the model computes: one run on a 16x16 input."""
        y = self._run(np.zeros((1, 3, 16, 16), np.float32))
        h, w = y.shape[-2:]
        if h != w or h % 16 or h // 16 not in (2, 3, 4):
            raise ValueError(f'{self.path}: gives a {h}x{w} output for a 16x16 input; expected an x2, x3 or x4 '
                             'super-resolution model')
        return h // 16

    def __call__(self, x):
        h, w = x.shape[-2:]
        ph, pw = max(0, MIN_INPUT_SIZE - h), max(0, MIN_INPUT_SIZE - w)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode='replicate')
        y = torch.from_numpy(self._run(np.ascontiguousarray(x.detach().cpu().float().numpy())))
        return y[..., :h * self.upscale, :w * self.upscale]

    def eval(self):
        return self


def to_fp16(path, out_path):
    import onnx
    try:
        from onnxconverter_common import float16
        model = float16.convert_float_to_float16(onnx.load(path), keep_io_types=True)
    except ImportError as e:
        raise ImportError('fp16 ONNX conversion needs onnxconverter-common (pip install onnxconverter-common)') from e
    atomic_write(out_path, lambda f: f.write(model.SerializeToString()))
    return out_path


@ARCH_REGISTRY.register()
class OnnxNetwork(torch.nn.Module):
    """An exported ONNX model (fp32, or int8 from ``rlfn_arch.quantize``) as a BasicSR network: ``network_g:
    {type: OnnxNetwork, path: FILE}`` runs it with ONNX Runtime or OpenVINO on the CPU inside BasicSR's test
    pipeline (``python -m rlfn_arch.test -opt FILE --onnx MODEL [--runtime openvino]`` sets it). No trainable
    parameters.

    Args:
        path (str): the .onnx file.
        upscale (int | None): the scale it must upscale by (checked against what it does). Default: None.
        threads (int | None): the runtime's threads. Default: the runtime's choice.
        runtime (str): ``onnxruntime`` (default) or ``openvino``.
        precision (str): the float operations' precision (``fp32``, default; ``bf16`` or ``auto`` with OpenVINO).

    Shape: (N, 3, H, W) in [0, 1] -> (N, 3, H * upscale, W * upscale), on the input's device.
    """

    def __init__(self, path, upscale=None, threads=None, runtime='onnxruntime', precision='fp32'):
        super().__init__()
        self.model = OnnxRLFN(path, threads=threads, scale=upscale, runtime=runtime, precision=precision)
        self.upscale = self.model.upscale

    def forward(self, x):
        return self.model(x).to(x.device)
