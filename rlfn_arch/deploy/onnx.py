"""ONNX: export with dynamic batch/height/width (opset >= 17), compare with PyTorch, run with ONNX Runtime.

ESA's resize back to the input's own size and PixelShuffle (DepthToSpace) export with dynamic shapes.
``onnx`` and ``onnxruntime`` are optional dependencies (the ``export`` extra), imported where used.
"""
import numpy as np
import torch
from torch.nn import functional as F

from rlfn_arch.archs.rlfn_arch import MIN_INPUT_SIZE
from rlfn_arch.utils.fs import atomic_write

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


class OnnxRLFN:
    """Run an exported (fp32 or int8) RLFN ONNX model with ONNX Runtime like the PyTorch network:
    ``(N, 3, H, W)`` tensor in, tensor out. Inputs below 15x15 are replicate-padded and cropped, as
    RLFN's own small-input handling does."""

    def __init__(self, path, threads=None, scale=None):
        import onnxruntime as ort
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        self.path = path
        try:
            self.sess = ort.InferenceSession(path, so, providers=['CPUExecutionProvider'])
        except Exception as e:  # onnxruntime's own exception types: one message naming the file
            raise ValueError(f'{path}: not an ONNX model ONNX Runtime can run: {str(e).strip()[:300]}') from e
        meta = self.sess.get_modelmeta().custom_metadata_map or {}
        self.metadata = dict(meta)
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

    def _probe_scale(self):
        """The scale the model computes: one run on a 16x16 input."""
        y = self.sess.run(None, {'lq': np.zeros((1, 3, 16, 16), np.float32)})[0]
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
        y = torch.from_numpy(self.sess.run(None, {'lq': np.ascontiguousarray(x.detach().cpu().float().numpy())})[0])
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
    {type: OnnxNetwork, path: FILE}`` runs it with ONNX Runtime on the CPU inside BasicSR's test pipeline
    (``python -m rlfn_arch.test -opt FILE --onnx MODEL`` sets it). No trainable parameters.

    Args:
        path (str): the .onnx file.
        upscale (int | None): the scale it must upscale by (checked against what it does). Default: None.
        threads (int | None): ONNX Runtime's intra-op threads. Default: ONNX Runtime's choice.

    Shape: (N, 3, H, W) in [0, 1] -> (N, 3, H * upscale, W * upscale), on the input's device.
    """

    def __init__(self, path, upscale=None, threads=None):
        super().__init__()
        self.model = OnnxRLFN(path, threads=threads, scale=upscale)
        self.upscale = self.model.upscale

    def forward(self, x):
        return self.model(x).to(x.device)
