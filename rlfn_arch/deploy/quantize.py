"""int8 ONNX models run by ONNX Runtime (QDQ: per-channel symmetric int8 weights, uint8 activations), two ways.

(library; ``python -m rlfn_arch.quantize --model_path FILE --output model_int8.onnx`` is its front.)

Weights are int8 in [-127, 127], or in [-64, 64] with ``weight_bits=7`` (ONNX Runtime's ``reduce_range``): CPUs
without int8 dot-product instructions (AVX2, AVX-512 without VNNI) add pairs of uint8 x int8 products in 16 bits,
which 8-bit weights can overflow (OpenVINO's "saturation issue"; measured: docs/int8.md); 7-bit weights cannot.

* **Trained for int8** (:func:`quantize_checkpoint`): the checkpoint of a quantization-aware stage
  (``train: qat``, :mod:`rlfn_arch.archs.qat`) holds the int8 convs and every activation scale it trained
  with; they are written into the model as they are (ONNX Runtime's ``TensorQuantOverrides``), so the int8
  model computes what the stage validated. No calibration data.
* **Post-training** (:func:`quantize_calibrated`, any float weights, no training): the convs of
  :data:`PTQ_CONVS` in int8, ranges calibrated on a few LR patches by :data:`PTQ_CALIBRATION`. The default,
  ``block_3x3`` calibrated by the int8 stage's own quantizers (``stage``: what the stage computes before its
  first training step), was measured on five official and shipped models (Set5 / Set14, ONNX Runtime; docs/int8.md):
  within 0.07 dB of fp32 on each, where ONNX Runtime's entropy calibration of the same convs cost 0.15 dB on
  RLFN-S x4 (it quantizes a block's input for the residual addition too); every conv costs 0.35 dB.

ONNX Runtime's int8 convolutions use VNNI / AMX where the CPU has them; PyTorch's eager int8 path cannot
run ESA's resize and sigmoid in int8 and would fall back and forth, so ONNX Runtime is the int8 path.
"""
import os
import tempfile

import cv2
import numpy as np

from rlfn_arch.archs.qat import (
    WEIGHT_QMAX,
    activation_quantizers,
    int8_conv_names,
    int8_preset_of,
    int8_settings_of,
    layout_problem,
    prepare_qat,
    qparams,
)
from rlfn_arch.archs.rlfn_arch import RLFN
from rlfn_arch.archs.rlfn_weights import detect_config
from rlfn_arch.data.builders import build_sample_dataset, sample_ready
from rlfn_arch.data.builders.sample import sample_folder
from rlfn_arch.data.image_io import list_images, read_image
from rlfn_arch.utils.checkpoint import split_quant_state, strip_module
from rlfn_arch.utils.fs import atomic_write
from rlfn_arch.utils.options.schema import QAT_PLACEMENTS
from rlfn_arch.utils.runtime import project_root

from .onnx import export_onnx, int8_weight_bits_onnx  # noqa: F401 (int8_weight_bits_onnx: part of this API)

#: How post-training quantization calibrates activation ranges: ``stage`` (the int8 stage's own quantizers, no
#: training; RLFN's own layout) or ONNX Runtime's ``entropy``, ``minmax``, ``percentile``.
CALIBRATIONS = ('stage', 'entropy', 'minmax', 'percentile')
#: The post-training defaults (:func:`ptq_defaults`): which convs run in int8 (:data:`rlfn_arch.archs.qat.INT8_CONVS`)
#: and how their ranges are calibrated, for RLFN's own layout; for the derivation layouts (RFDN blocks, full ESA,
#: concatenation), which the int8 stage's quantizers do not know, the earlier defaults.
PTQ_CONVS, PTQ_CALIBRATION = 'block_3x3', 'stage'
PTQ_CONVS_OTHER_LAYOUTS, PTQ_CALIBRATION_OTHER_LAYOUTS = 'blocks', 'entropy'


def ptq_defaults(net):
    """``(convs, calibration)`` post-training quantization uses for ``net`` when the user names neither: ``block_3x3``
    with ``stage`` calibration for RLFN's layout (within 0.07 dB of fp32 on five models: docs/int8.md); ``blocks``
    with ONNX Runtime's entropy calibration for the RFDN-derived layouts."""
    if layout_problem(net):
        return PTQ_CONVS_OTHER_LAYOUTS, PTQ_CALIBRATION_OTHER_LAYOUTS
    return PTQ_CONVS, PTQ_CALIBRATION


def _reduce_range(weight_bits):
    """ONNX Runtime's ``reduce_range`` for ``weight_bits``: its reduced int8 range is exactly the 7-bit one
    here (checked, so the two cannot drift apart)."""
    if weight_bits not in WEIGHT_QMAX:
        raise ValueError(f'weight bits {weight_bits!r}: expected one of {", ".join(map(str, WEIGHT_QMAX))}')
    if weight_bits == 8:
        return False
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import get_qmin_qmax_for_qType
    qmin, qmax = (int(v) for v in get_qmin_qmax_for_qType(TensorProto.INT8, reduce_range=True, symmetric=True))
    if (qmin, qmax) != (-WEIGHT_QMAX[7], WEIGHT_QMAX[7]):
        raise ValueError(f'this ONNX Runtime reduces int8 weights to [{qmin}, {qmax}], not the [-64, 64] that 7-bit '
                         'weights train with')
    return True


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


def conv_nodes(model, names):
    """The Conv nodes of ``model`` (an ONNX ModelProto of :func:`rlfn_arch.deploy.onnx.export_onnx`) that read the
    weights of the convs ``names`` (module names, e.g. ``block_1.c2_r``), in that order.

    Raises:
        ValueError: a conv the graph does not have.
    """
    by_weight = {n.input[1]: n for n in model.graph.node if n.op_type == 'Conv'}
    nodes = []
    for name in names:
        node = by_weight.get(f'net.{name}.weight', by_weight.get(f'{name}.weight'))
        if node is None:
            raise ValueError(f'no Conv node of the ONNX graph reads {name}.weight')
        nodes.append(node)
    return nodes


def quantize(fp32_onnx, out_path, patches, choose, method='entropy', metadata=None, weight_bits=8, placement='qlinear'):
    """ONNX Runtime's static QDQ quantization of ``fp32_onnx`` into ``out_path`` (atomically): per-channel symmetric
    int8 weights of ``weight_bits`` (8: [-127, 127]; 7: [-64, 64]), uint8 activations calibrated on ``patches`` by
    ``method``, at each int8 conv's input and output (``placement`` ``qlinear``) or its input only (``inputs``:
    :data:`rlfn_arch.utils.options.schema.QAT_PLACEMENTS`); the model's ``metadata`` added, with ``int8_placement``.

    Args:
        choose (callable): ``choose(model) -> (Conv node names, extra_options)`` on the pre-processed ModelProto
            (which it may edit in place); ``extra_options`` are ONNX Runtime's (e.g. fixed scales).
    """
    if placement not in QAT_PLACEMENTS:
        raise ValueError(f'int8 placement {placement!r}: expected one of {", ".join(QAT_PLACEMENTS)}')
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    with tempfile.TemporaryDirectory() as tmp:
        pre = os.path.join(tmp, 'pre.onnx')
        quant_pre_process(fp32_onnx, pre, skip_symbolic_shape=True)
        model = onnx.load(pre)
        nodes, extra = choose(model)
        if placement == 'inputs':  # no QuantizeLinear after an int8 conv: its output stays float
            extra = {**(extra or {}), 'OpTypesToExcludeOutputQuantization': ['Conv']}
        onnx.save(model, pre)
        quantized = os.path.join(tmp, 'int8.onnx')
        quantize_static(pre, quantized, _PatchReader(patches), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method={'minmax': CalibrationMethod.MinMax, 'entropy': CalibrationMethod.Entropy,
                                          'percentile': CalibrationMethod.Percentile}[method],
                        nodes_to_quantize=list(nodes), op_types_to_quantize=['Conv'], extra_options=extra or {},
                        reduce_range=_reduce_range(weight_bits))
        qmodel = onnx.load(quantized)
        for k, v in {**(metadata or {}), 'int8_placement': placement}.items():  # what the model says about itself
            entry = qmodel.metadata_props.add()
            entry.key, entry.value = str(k), str(v)
        data = qmodel.SerializeToString()  # the finished model only, atomically: no partial file at out_path
    atomic_write(out_path, lambda f: f.write(data))
    return out_path


def stage_calibrated(net, patches, convs=PTQ_CONVS, weight_bits=8, placement='qlinear'):
    """A copy of ``net`` prepared as the int8 stage prepares it (:func:`rlfn_arch.archs.qat.prepare_qat`) with its
    activation ranges calibrated on ``patches`` by the stage's own quantizers and no training: a histogram of
    every patch, the range of least error; an input quantized for its conv alone; the network's input and output
    fixed 8-bit images. Returned in eval mode, ranges frozen; ``net`` is untouched.

    Args:
        patches (list[np.ndarray]): LR patches, each (3, h, w) float32 in [0, 1] (:func:`calibration_patches`).
    """
    import copy

    import torch
    qnet = prepare_qat(copy.deepcopy(net).float().cpu(), convs, calibration_batches=len(patches),
                       weight_bits=weight_bits, placement=placement).train()
    with torch.no_grad():
        for patch in patches:  # one patch a batch: patches may differ in size
            qnet(torch.from_numpy(np.ascontiguousarray(patch))[None])
    return qnet.eval()


def quantize_calibrated(net, out_path, patches, convs=None, method=None, metadata=None, weight_bits=8,
                        placement='qlinear'):
    """Post-training int8 (no training): ``net``'s convs ``convs`` (:data:`rlfn_arch.archs.qat.INT8_CONVS`) in
    int8 with ``weight_bits`` weights and activations quantized at ``placement`` (:func:`quantize`), activation
    ranges calibrated on ``patches`` by ``method``: ``stage``
    (:func:`stage_calibrated`: what the int8 stage computes before its first training step) or one of ONNX
    Runtime's calibrations (``entropy``, ``minmax``, ``percentile``; each conv's input quantized for all its
    readers). ``convs`` and ``method`` default to :func:`ptq_defaults`. Measured: docs/int8.md, "Post-training".

    Raises:
        ValueError: an unknown ``method`` or ``convs``; ``stage`` for a layout the int8 stage does not know.
    """
    default_convs, default_method = ptq_defaults(net)
    convs, method = convs or default_convs, method or default_method
    if method not in CALIBRATIONS:
        raise ValueError(f'calibration {method!r}: expected one of {", ".join(CALIBRATIONS)}')
    if method == 'stage' and layout_problem(net):
        raise ValueError(f'calibration stage: {layout_problem(net)}; calibrate this layout with entropy, minmax or '
                         'percentile')
    names = int8_conv_names(net, convs)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(net, os.path.join(tmp, 'fp32.onnx'))
        if method == 'stage':
            return quantize_trained(fp32, out_path, stage_calibrated(net, patches, convs, weight_bits, placement),
                                    metadata)
        return quantize(fp32, out_path, patches, lambda m: ([n.name for n in conv_nodes(m, names)], {}), method=method,
                        metadata=metadata, weight_bits=weight_bits, placement=placement)


def _own_input(model, node):
    """Give ``node`` its own copy of its input (an Identity), so that quantizing it leaves the other readers of
    the tensor (a residual addition) in float; returns the copy's name. ONNX Runtime removes the Identity when
    it optimizes the graph; the quantization of this one edge stays."""
    import onnx
    name = f'{node.name}/int8_input'
    model.graph.node.append(onnx.helper.make_node('Identity', [node.input[0]], [name], name=f'{node.name}/own_input'))
    node.input[0] = name
    return name


def qat_overrides(net, model):
    """What a quantization-aware network trained, applied to ``model`` (the ONNX export of its float weights):
    ``(Conv node names, extra_options)``; each int8 conv's input and output tensor gets the scale and zero point
    its fake quantizers hold (:func:`rlfn_arch.archs.qat.activation_quantizers`), an input quantized for that
    conv alone gets its own copy. Edits ``model`` in place (the Identity copies, then sorted topologically)."""
    quantizers = activation_quantizers(net)
    nodes, overrides = [], {}
    for node, (name, (fq_in, fq_out, own)) in zip(conv_nodes(model, list(quantizers)), quantizers.items()):
        nodes.append(node.name)
        tensor_in = _own_input(model, node) if own else node.input[0]
        for tensor, fq in ((tensor_in, fq_in), (node.output[0], fq_out)):
            if fq is None:  # placement inputs: the conv's output stays float
                continue
            try:
                scale, zero_point = qparams(fq)
            except ValueError as e:
                raise ValueError(f'{name}: {e}') from e
            overrides[tensor] = [{'scale': np.array(scale, np.float32), 'zero_point': np.array(zero_point, np.uint8)}]
    _sort_nodes(model)
    return nodes, {'TensorQuantOverrides': overrides, 'QDQDisableWeightAdjustForInt32Bias': True}


def _sort_nodes(model):
    """Order the graph's nodes so that each comes after the nodes making its inputs (ONNX requires it)."""
    made = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer} | {''}
    pending, ordered = list(model.graph.node), []
    while pending:
        ready = [n for n in pending if all(i in made for i in n.input)]
        if not ready:
            raise ValueError('the ONNX graph has a cycle or an input nothing makes')
        for n in ready:
            ordered.append(n)
            made.update(n.output)
        pending = [n for n in pending if all(n is not r for r in ready)]
    del model.graph.node[:]
    model.graph.node.extend(ordered)


def quantize_trained(fp32_onnx, out_path, net, metadata=None):
    """The int8 model of a quantization-aware network: its float weights (``fp32_onnx``) with exactly the int8
    convs and activation scales it trained with; weight scales are max |w| / 127 per output channel, as in
    training (max |w| / 64 for a network trained with 7-bit weights). No calibration data is needed (ONNX
    Runtime's quantizer reads one blank patch to run)."""
    blank = [np.zeros((net.conv_1.in_channels, 32, 32), np.float32)]
    return quantize(fp32_onnx, out_path, blank, lambda m: qat_overrides(net, m), method='minmax', metadata=metadata,
                    weight_bits=net.int8_weight_bits, placement=net.int8_placement)


def trained_int8(state_dict):
    """The int8 conv set (:data:`rlfn_arch.archs.qat.INT8_CONVS` key) a checkpoint's weights were trained for by a
    quantization-aware stage, or None for float weights."""
    return int8_preset_of(strip_module(state_dict))


def quantize_checkpoint(state_dict, out_path, metadata=None, source='<state dict>'):
    """The int8 ONNX model of a quantization-aware stage's weights (``state_dict`` with its quantizers' state):
    the network rebuilt and prepared as it trained, its float weights exported, its scales written in."""
    sd = strip_module(state_dict)
    weights, quant = split_quant_state(sd)
    cfg = detect_config(weights, source)
    # weight quantizers that never observed (a network that never trained) say no bits; the export refuses it below
    held = int8_settings_of(sd)
    if held is None:
        raise ValueError(f'{source}: float weights, no int8 quantizer state (quantize them with quantize_calibrated)')
    net = prepare_qat(RLFN(**cfg), held['convs'], weight_bits=held['weight_bits'] or 8, ranges=held['ranges'],
                      placement=held['placement'])
    try:
        net.load_state_dict({**weights, **quant}, strict=True)
    except RuntimeError as e:  # a partial or foreign quantizer state
        raise ValueError(f'{source}: its int8 quantizer state does not fit the network it trained: '
                         f'{str(e).strip().splitlines()[-1][:300]}') from e
    plain = RLFN(**cfg)
    plain.load_state_dict(weights, strict=True)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(plain, os.path.join(tmp, 'fp32.onnx'))
        return quantize_trained(fp32, out_path, net.eval(), metadata)
