"""int8 post-training static quantization with ONNX Runtime (QDQ, per-channel weights, uint8
activations), calibrated on a few LR training patches.

(library; ``python -m rlfn_arch.quantize --model_path FILE --output model_int8.onnx`` is its front.)

ONNX Runtime's int8 convolutions use VNNI where the CPU has it; PyTorch's eager int8 path cannot run
ESA's resize and sigmoid in int8 and would fall back and forth, so ONNX Runtime is our int8 path.
Which layers are int8 was chosen by measurement (official RLFN-S x4, Set5 x4 PSNR-Y, 2 CPU threads;
docs/deployment.md): quantizing every conv costs 0.45 dB; ESA (gating through a sigmoid), the 1x1
``c5``, the head, ``conv_2`` and the upsampler are sensitive and cheap, so they stay float; of the three
3x3 convs per block, ``c1_r`` (which reads the block input, whose range the ESA gating widens) costs the
most accuracy. Default: ``c2_r`` and ``c3_r`` in int8 with entropy calibration (about -0.06 dB; MinMax:
-0.07 dB), the rest float.
"""
import os
import tempfile

import cv2
import numpy as np

from rlfn_arch.data.builders import build_sample_dataset, sample_ready
from rlfn_arch.data.builders.sample import sample_folder
from rlfn_arch.data.image_io import list_images, read_image
from rlfn_arch.utils.fs import atomic_write
from rlfn_arch.utils.runtime import project_root


class _PatchReader:
    """onnxruntime CalibrationDataReader over LR patches (N, 3, p, p) float32 in [0, 1]."""

    def __init__(self, patches):
        self.patches = list(patches)
        self.i = 0

    def get_next(self):
        if self.i >= len(self.patches):
            return None
        self.i += 1
        return {'lq': self.patches[self.i - 1][None]}

    def rewind(self):
        self.i = 0


def calibration_patches(folder=None, n=32, size=96, seed=0):
    """LR patches from ``folder`` (default: the sample dataset's x4 LR training images)."""

    if folder is None:
        sample = sample_folder(project_root())
        if not sample_ready(sample):
            build_sample_dataset(sample)
        folder = os.path.join(sample, 'train', 'LR_bicubic', 'X4')
    rng = np.random.default_rng(seed)
    imgs = []
    for name in list_images(folder)[0]:
        img = read_image(os.path.join(folder, name))
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        imgs.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    if not imgs:
        raise ValueError(f'{folder}: no calibration images')
    patches = []
    for k in range(n):
        img = imgs[k % len(imgs)]
        h, w = img.shape[:2]
        s = min(size, h, w)
        y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
        patches.append(img[y:y + s, x:x + s].transpose(2, 0, 1).astype(np.float32) / 255)
    return patches


KEEP_FLOAT = ('upsampler', 'esa', 'c5', 'conv_1', 'conv_2', 'c1_r')


def quantize(fp32_onnx, out_path, patches, keep_float=KEEP_FLOAT, op_types=('Conv', ), method='entropy', extra=None,
             metadata=None):
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    with tempfile.TemporaryDirectory() as tmp:
        pre = os.path.join(tmp, 'pre.onnx')
        quant_pre_process(fp32_onnx, pre, skip_symbolic_shape=True)
        model = onnx.load(pre)
        exclude = [n.name for n in model.graph.node if any(k in n.name for k in keep_float)]
        quantized = os.path.join(tmp, 'int8.onnx')
        quantize_static(pre, quantized, _PatchReader(patches), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method={'minmax': CalibrationMethod.MinMax, 'entropy': CalibrationMethod.Entropy,
                                          'percentile': CalibrationMethod.Percentile}[method],
                        nodes_to_exclude=exclude, op_types_to_quantize=list(op_types), extra_options=extra or {})
        qmodel = onnx.load(quantized)
        for k, v in (metadata or {}).items():  # what the model says about itself (scale, network, range)
            entry = qmodel.metadata_props.add()
            entry.key, entry.value = str(k), str(v)
        data = qmodel.SerializeToString()  # the finished model only, atomically: no partial file at out_path
    atomic_write(out_path, lambda f: f.write(data))
    return out_path
