"""Quantization-aware training (QAT) for RLFN: PyTorch's own fake quantization (``torch.ao.quantization``)
placed where ONNX Runtime's int8 model quantizes, so that what the stage trains is what runs.

Which convs run in int8 is one of :data:`INT8_CONVS` (``all``, ``body``, ``blocks``). For each of them:

* its weight: per output channel, symmetric int8 in [-127, 127] (scale = max |w| / 127, recomputed at every
  forward: ``torch.ao.nn.qat.Conv2d`` with a moving-average observer of constant 1), or with ``weight_bits=7``
  in [-64, 64] (:data:`WEIGHT_QMAX`: for CPUs without int8 dot-product instructions, whose int8 kernels add
  pairs of products in 16 bits: 2 x 255 x 64 fits, 2 x 255 x 127 can saturate);
* its output tensor (``placement='qlinear'``, the default; ``'inputs'`` leaves it float, OpenVINO's form):
  per tensor, asymmetric uint8 in [0, 255] (an int8 conv's output is uint8 for every reader, as in ONNX
  Runtime's QLinearConv), its range calibrated on the stage's first training batches
  (:class:`ActivationFakeQuant`: a histogram, the range of least quantization error) and then frozen, while
  the weights train to it, or (``ranges='learned'``) trained with them from there;
* its input, unless an int8 conv made it (with ``'inputs'``: always): quantized on the way into this conv only
  (other readers, such as a block's residual addition, keep the float tensor; the export gives the conv its own
  copy of the tensor to quantize).

The network's input and output are 8-bit images: their quantizers are fixed to step 1/255 on [0, 1], which
loses nothing an 8-bit image holds (the output is rounded and clipped to [0, 1] when it is saved anyway) and
can never clip a bright or dark image the way an observed range of a few training patches would.

:func:`activation_quantizers` names, for each int8 conv, the quantizers of its input and output;
:mod:`rlfn_arch.deploy.quantize` writes exactly these scales into the ONNX model.

Fake quantization runs in fp32 whatever the training precision (autocast is off inside). Weights are int8
from the start; an activation quantizer that has not seen a training batch yet does nothing (a network just
prepared, or loaded from float weights, keeps float activations until its first training step calibrates them).
The quantizers' state (scales, observed ranges) is in the state dict, so checkpoints, resume and DDP (buffers
broadcast from rank 0) keep it; float weights (an official file, a previous stage) load into a prepared
network as they are.
"""
import re

import torch
import torch.ao.nn.qat as nnqat
from torch import nn
from torch.ao.quantization import FakeQuantize, FixedQParamsFakeQuantize, QConfig
from torch.ao.quantization.observer import (
    FixedQParamsObserver,
    HistogramObserver,
    MovingAveragePerChannelMinMaxObserver,
)

from rlfn_arch.utils.checkpoint import QUANT_KEY_RE
from rlfn_arch.utils.options.schema import INT8_CONV_SETS, QAT_PLACEMENTS, QAT_RANGES, QAT_WEIGHT_BITS, qat_problem

#: Which convs run in int8 (names as in the state dict; ``block_*`` stands for every block).
#: ``all``: every conv. ``body``: all but the first and the last (``conv_1``, ``upsampler.0``).
#: ``block_3x3``: the three 3x3 convs of each block (``c1_r``, ``c2_r``, ``c3_r``: 84% of RLFN-S's multiply-adds).
#: ``blocks``: the second and third 3x3 conv of each block (``c2_r``, ``c3_r``), the post-training default.
INT8_CONVS = {
    'all': lambda name: True,
    'body': lambda name: name not in ('conv_1', 'upsampler.0'),
    'block_3x3': lambda name: re.fullmatch(r'block_\d+\.c[123]_r', name) is not None,
    'blocks': lambda name: re.fullmatch(r'block_\d+\.c[23]_r', name) is not None,
}
if tuple(INT8_CONVS) != INT8_CONV_SETS:  # the option check (floor 0) lists the same names
    raise ImportError(f'INT8_CONVS {tuple(INT8_CONVS)} and the schema\'s INT8_CONV_SETS {INT8_CONV_SETS} differ')
#: Activation range: uint8, asymmetric (ONNX Runtime's activation type).
ACT_RANGE = dict(quant_min=0, quant_max=255, dtype=torch.quint8, qscheme=torch.per_tensor_affine)
#: Weight range by bits: int8 per output channel, symmetric in [-qmax, qmax]: 8 bits [-127, 127] (ONNX Runtime's
#: symmetric int8 weights), 7 bits [-64, 64] (its ``reduce_range``, for CPUs without int8 dot products).
WEIGHT_QMAX = {8: 127, 7: 64}
#: ``train.qat.ranges: learned``: how fast a learned range moves against the weights' learning rate, as a share of
#: itself (scale) and in levels (zero point): :class:`ActivationFakeQuant`. Measured with lr 1e-4: docs/int8.md.
SCALE_RATE, ZERO_POINT_RATE = 100.0, 1000.0
if tuple(WEIGHT_QMAX) != QAT_WEIGHT_BITS:
    raise ImportError(f'WEIGHT_QMAX {tuple(WEIGHT_QMAX)} and the schema\'s QAT_WEIGHT_BITS {QAT_WEIGHT_BITS} differ')


def weight_range(bits=8):
    """The weight quantizer's settings for ``bits`` (8 or 7, :data:`WEIGHT_QMAX`)."""
    if bits not in WEIGHT_QMAX:
        raise ValueError(f'weight bits {bits!r}: expected one of {", ".join(map(str, WEIGHT_QMAX))}')
    q = WEIGHT_QMAX[bits]
    return dict(quant_min=-q, quant_max=q, dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0)


class ActivationFakeQuant(FakeQuantize):
    """A uint8 per-tensor fake quantizer whose range is calibrated on the first ``calibration_batches`` training
    batches (``HistogramObserver``: the range that minimizes the quantization error over everything seen, so a
    few large values do not coarsen the step for all the others) and then frozen for the rest of training;
    eval mode never moves it. It passes its input through until it has observed once. The number of batches
    seen is state (``batches``), so a resumed stage continues the calibration or keeps the frozen range.

    With ``learned=True`` the calibrated range is where training starts, not where it stays (LSQ+: the scale
    and the zero point learn by gradient, through PyTorch's own learnable fake quantization,
    ``torch._fake_quantize_learnable_per_tensor_affine``, the op of ``torch.ao``'s ``_LearnableFakeQuantize``).
    They are parameters relative to the calibrated range (``range_scale``, ``range_zero_point``, both 0 at the
    start): scale = calibrated scale x (1 + :data:`SCALE_RATE` x ``range_scale``), zero point = calibrated zero
    point + :data:`ZERO_POINT_RATE` x ``range_zero_point``, so that Adam, whose step is about the learning rate
    whatever the gradient, moves every range by the same share of itself (at 1e-4: up to 1% of the scale and 0.1
    level of the zero point per step) and they train with the weights' optimizer and schedule. :func:`qparams`
    reads the learned range; the ``scale`` and ``zero_point`` buffers hold it in every state dict.

    Args:
        calibration_batches (int): training batches that calibrate the range. Default: 100.
        learned (bool): the range keeps training after its calibration. Default: False (frozen).

    Shape: any tensor, returned as fp32.
    """

    def __init__(self, calibration_batches=100, learned=False):
        super().__init__(observer=HistogramObserver, **ACT_RANGE)
        self.calibration_batches = calibration_batches
        self.register_buffer('batches', torch.zeros(1, dtype=torch.long))
        self.disable_fake_quant()  # nothing observed yet: pass through
        self.learned = learned
        if learned:
            self.range_scale = nn.Parameter(torch.zeros(1))
            self.range_zero_point = nn.Parameter(torch.zeros(1))
            self.register_buffer('calibrated_scale', torch.ones(1))
            self.register_buffer('calibrated_zero_point', torch.zeros(1))

    def train(self, mode=True):
        super().train(mode)
        self.enable_observer(mode and int(self.batches[0]) < self.calibration_batches)
        return self

    def forward(self, x):
        x = x.float()
        calibrating = self.training and int(self.batches[0]) < self.calibration_batches
        if self.learned and not calibrating and int(self.fake_quant_enabled[0]):
            scale, zero_point = self._learned_qparams()
            return torch._fake_quantize_learnable_per_tensor_affine(x, scale, zero_point, self.quant_min,
                                                                     self.quant_max, 1.0)
        if calibrating:
            self.batches += 1
            self.enable_observer()
            self.enable_fake_quant()  # observed from this batch on: quantizes
        out = super().forward(x)
        if calibrating and int(self.batches[0]) >= self.calibration_batches:
            self.disable_observer()  # calibrated: the range is frozen from here on
            if self.learned:  # ... and learns from here on, starting where the calibration ended
                with torch.no_grad():
                    self.calibrated_scale.copy_(self.scale.reshape(1))
                    self.calibrated_zero_point.copy_(self.zero_point.float().reshape(1))
        if self.learned:  # every parameter takes part in every forward (DDP expects it); the range is unchanged
            out = out + 0 * (self.range_scale + self.range_zero_point).sum()
        return out

    def _learned_qparams(self):
        """The learned range as tensors that carry gradients: (scale, zero point), each of shape (1,)."""
        floor = float(self.activation_post_process.eps)
        scale = (self.calibrated_scale * (1 + SCALE_RATE * self.range_scale)).clamp(min=floor)
        return scale, self.calibrated_zero_point + ZERO_POINT_RATE * self.range_zero_point

    def _integer(self, zero_point):
        return zero_point.detach().round().clamp(self.quant_min, self.quant_max).to(self.zero_point.dtype)

    def current_qparams(self):
        """``(scale, zero_point)`` this quantizer applies now, as Python numbers (a learned range: from its
        parameters as the last optimizer step left them)."""
        if self.learned and int(self.batches[0]) >= self.calibration_batches:
            scale, zero_point = self._learned_qparams()
            return float(scale.detach()[0]), int(self._integer(zero_point)[0])
        return float(self.scale.reshape(-1)[0]), int(self.zero_point.reshape(-1)[0])

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        if self.learned and int(self.batches[0]) >= self.calibration_batches:  # the buffers say the current range
            scale, zero_point = self.current_qparams()
            self.scale.fill_(scale)
            self.zero_point.fill_(zero_point)
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def reset(self):
        """Forget the observed range (new float weights: the next training batches calibrate again)."""
        self.disable_fake_quant()
        self.batches.zero_()
        observer = self.activation_post_process
        observer.histogram.zero_()
        observer.min_val.fill_(float('inf'))
        observer.max_val.fill_(float('-inf'))
        self.scale.fill_(1.0)
        self.zero_point.zero_()
        if self.learned:
            with torch.no_grad():
                self.range_scale.zero_()
                self.range_zero_point.zero_()
            self.calibrated_scale.fill_(1.0)
            self.calibrated_zero_point.zero_()


def _qconfig(weight_bits=8):
    weight = FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver, averaging_constant=1.0,
                                    **weight_range(weight_bits))
    return QConfig(activation=ActivationFakeQuant, weight=weight)


def image_fake_quant():
    """The quantizer of the network's input and output: an 8-bit image in [0, 1], step 1/255, zero point 0
    (fixed)."""
    return FixedQParamsFakeQuantize(observer=FixedQParamsObserver.with_args(scale=1.0 / 255, zero_point=0,
                                                                           dtype=torch.quint8, quant_min=0,
                                                                           quant_max=255))


class QATConv2d(nnqat.Conv2d):
    """``torch.ao.nn.qat.Conv2d`` (int8 per-channel weights) whose output is quantized too and, when no int8 conv
    made it, its input (``input_fq``). Parameter names stay those of ``nn.Conv2d``."""

    @classmethod
    def from_conv(cls, conv, input_fq, output_fq, weight_bits=8):
        conv.qconfig = _qconfig(weight_bits)
        qat = cls.from_float(conv)
        del conv.qconfig
        qat.input_fq = input_fq
        qat.output_fq = output_fq
        return qat.train(conv.training)

    def forward(self, x):
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            if self.input_fq is not None:
                x = self.input_fq(x)
            out = self._conv_forward(x, self.weight_fake_quant(self.weight), self.bias)
            return out if self.output_fq is None else self.output_fq(out)


def _made_by(net):
    """For each conv of RLFN's layout: the conv whose output is its input, or None (the network input, an
    activation, an addition, a pooled or gated tensor)."""
    made_by = {'conv_1': None, 'conv_2': None, 'upsampler.0': None}
    for i in range(1, len(net.blocks()) + 1):
        b = f'block_{i}'
        made_by.update({f'{b}.c1_r': 'conv_1' if i == 1 else None, f'{b}.c2_r': None, f'{b}.c3_r': None,
                        f'{b}.c5': None, f'{b}.esa.conv1': f'{b}.c5', f'{b}.esa.conv2': f'{b}.esa.conv1',
                        f'{b}.esa.conv_f': f'{b}.esa.conv1', f'{b}.esa.conv3': None, f'{b}.esa.conv4': None})
    return made_by


def int8_conv_names(net, convs):
    """The names of the convs of ``net`` that ``convs`` (a key of :data:`INT8_CONVS`) puts in int8."""
    if convs not in INT8_CONVS:
        raise ValueError(f'int8 convs {convs!r}: expected one of {", ".join(INT8_CONVS)}')
    return [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d) and INT8_CONVS[convs](n)]


def _forget_ranges_on_float_load(net, incompatible):
    """Load post-hook: a state dict without quantizer state (float weights) loads into a prepared network;
    its activation ranges are forgotten (recalibrated by the next training batch)."""
    missing = {k for k in incompatible.missing_keys if QUANT_KEY_RE.search(k)}
    # (an observer's constant eps is never reported missing; FakeQuantize reports scale and zero point twice)
    own = {k for k in net.state_dict() if QUANT_KEY_RE.search(k) and not k.endswith('.eps')}
    if missing and missing == own:
        incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if k not in missing]
        for m in net.modules():
            if isinstance(m, ActivationFakeQuant):
                m.reset()


def layout_problem(net):
    """Why an RLFN-family ``net`` (a module) cannot be prepared for int8 fake quantization, or None: RLFN's own
    layout only (:func:`rlfn_arch.utils.options.schema.qat_problem`)."""
    cfg = {'type': 'RLFN', 'block': 'rfdb' if hasattr(net.block_1, 'c1_d') else 'rlfb',
           'esa': 'full' if net.block_1.esa.full else 'trimmed', 'fuse': 'concat' if net.fuse_blocks else 'none'}
    return qat_problem(cfg)


def prepare_qat(net, convs='all', calibration_batches=100, weight_bits=8, ranges='calibrated', placement='qlinear'):
    """Put the convs ``convs`` names (:data:`INT8_CONVS`) of an RLFN ``net`` under int8 fake quantization, in
    place; the weights are kept. Activation ranges are calibrated on the first ``calibration_batches`` training
    batches, then frozen (``ranges='calibrated'``) or trained from there with the weights (``'learned'``:
    :class:`ActivationFakeQuant`); weights are quantized to ``weight_bits`` (8, or 7 for CPUs without int8 dot
    products: :data:`WEIGHT_QMAX`). ``placement`` ``qlinear``: each int8 conv's output is 8-bit for every reader,
    its input too unless an int8 conv made it; ``inputs``: each int8 conv quantizes its own copy of its input and
    writes float (:data:`rlfn_arch.utils.options.schema.QAT_PLACEMENTS`). Returns ``net``.

    Raises:
        ValueError: a network that is not RLFN's layout, an unknown ``convs``, ``ranges`` or ``placement``, a
            network prepared already.
    """
    problem = layout_problem(net)
    if problem:
        raise ValueError(problem)
    if getattr(net, 'int8_convs', None):
        raise ValueError('the network is prepared for int8 training already')
    names = int8_conv_names(net, convs)
    weight_range(weight_bits)  # refuses other bits before anything changes
    if ranges not in QAT_RANGES:
        raise ValueError(f'activation ranges {ranges!r}: expected one of {", ".join(QAT_RANGES)}')
    if placement not in QAT_PLACEMENTS:
        raise ValueError(f'int8 placement {placement!r}: expected one of {", ".join(QAT_PLACEMENTS)}')
    learned, qlinear = ranges == 'learned', placement == 'qlinear'
    made_by = _made_by(net)
    modules = dict(net.named_modules())
    for name in names:
        input_fq = image_fake_quant() if name == 'conv_1' else \
            None if qlinear and made_by[name] in names else ActivationFakeQuant(calibration_batches, learned)
        # qlinear: the output is uint8 for every reader; the network's output (the pixel shuffle only moves it) is an
        # 8-bit image. inputs: the output stays float
        output_fq = None if not qlinear else image_fake_quant() if name == 'upsampler.0' else \
            ActivationFakeQuant(calibration_batches, learned)
        parent, _, attr = name.rpartition('.')
        setattr(modules[parent] if parent else net, attr,
                QATConv2d.from_conv(modules[name], input_fq, output_fq, weight_bits))
    net.int8_convs = tuple(names)
    net.int8_preset = convs
    net.int8_weight_bits = weight_bits
    net.int8_ranges = ranges
    net.int8_placement = placement
    net.register_load_state_dict_post_hook(_forget_ranges_on_float_load)
    return net


def activation_quantizers(net):
    """For each int8 conv of a prepared ``net``: ``(input quantizer, output quantizer, own input)``; ``own input``
    is True when the input is quantized for this conv only (else an int8 conv made it, quantized for all)."""
    modules = dict(net.named_modules())
    made_by = _made_by(net)
    out = {}
    for name in net.int8_convs:
        conv = modules[name]
        own = conv.input_fq is not None
        out[name] = (conv.input_fq if own else modules[made_by[name]].output_fq, conv.output_fq, own)
    return out


def qparams(fq):
    """``(scale, zero_point)`` of a calibrated activation quantizer as Python numbers.

    Raises:
        ValueError: the quantizer never saw a training batch.
    """
    if int(fq.fake_quant_enabled[0]) == 0:
        raise ValueError('an activation range was never observed (the network did not train with int8)')
    if isinstance(fq, ActivationFakeQuant):
        return fq.current_qparams()
    return float(fq.scale.reshape(-1)[0]), int(fq.zero_point.reshape(-1)[0])


def int8_preset_of(state_dict):
    """The :data:`INT8_CONVS` key whose convs are the ones ``state_dict`` holds weight quantizers for, or None
    (float weights)."""
    convs = sorted({k.split('.weight_fake_quant.')[0] for k in state_dict if '.weight_fake_quant.' in k})
    if not convs:
        return None
    names = sorted(k[:-len('.weight')] for k, v in state_dict.items()
                   if k.endswith('.weight') and not QUANT_KEY_RE.search(k) and getattr(v, 'dim', lambda: 0)() == 4)
    for preset, rule in INT8_CONVS.items():
        if convs == sorted(n for n in names if rule(n)):
            return preset
    raise ValueError(f'weight quantizers for {len(convs)} convs ({convs[0]}, ...): not one of the int8 sets '
                     f'{", ".join(INT8_CONVS)}')


def int8_weight_bits_of(state_dict):
    """The weight bits (:data:`WEIGHT_QMAX`) a quantization-aware ``state_dict`` trained with, or None (float
    weights). Read from the weight quantizers' own state: each holds the range it last observed per channel
    (``min_val``, ``max_val``) and the scale it derived, max(|min|, |max|) / qmax, so their ratio is qmax.

    Raises:
        ValueError: quantizer state that fits no known number of bits.
    """
    qmax = set()
    for k, scale in state_dict.items():
        if not k.endswith('.weight_fake_quant.scale'):
            continue
        base = k[:-len('scale')] + 'activation_post_process.'
        lo, hi = state_dict.get(base + 'min_val'), state_dict.get(base + 'max_val')
        if lo is None or hi is None:
            continue
        span = torch.maximum(-lo.float(), hi.float())
        keep = span > 1e-6  # an all-zero channel's scale is the observer's floor, not span / qmax
        if keep.any():
            qmax.update(torch.round(span[keep] / scale.float().reshape(-1)[keep]).long().unique().tolist())
    if not qmax:
        return None
    for bits, q in WEIGHT_QMAX.items():
        if qmax == {q}:
            return bits
    raise ValueError(f'weight quantizers with ranges of {sorted(qmax)} steps per side: expected one of '
                     f'{", ".join(f"{q} ({b} bits)" for b, q in WEIGHT_QMAX.items())}')


def int8_ranges_of(state_dict):
    """How a quantization-aware ``state_dict`` trained its activation ranges (:data:`QAT_RANGES`: ``learned``
    when its quantizers hold learned-range parameters, else ``calibrated``), or None (float weights)."""
    if not any('.weight_fake_quant.' in k for k in state_dict):
        return None
    return 'learned' if any(k.endswith('.range_scale') for k in state_dict) else 'calibrated'


def int8_placement_of(state_dict):
    """Which tensors of its int8 convs a quantization-aware ``state_dict`` quantized (:data:`QAT_PLACEMENTS`:
    ``qlinear`` when its convs hold output quantizers, else ``inputs``), or None (float weights)."""
    if not any('.weight_fake_quant.' in k for k in state_dict):
        return None
    return 'qlinear' if any('.output_fq.' in k for k in state_dict) else 'inputs'


def int8_settings_of(state_dict):
    """The ``train.qat`` settings a quantization-aware ``state_dict`` holds the int8 state of: ``{'convs',
    'weight_bits', 'ranges', 'placement'}`` (``weight_bits`` None when its weight quantizers never observed), or
    None (float weights). What a file holds is read here, once."""
    convs = int8_preset_of(state_dict)
    if convs is None:
        return None
    return {'convs': convs, 'weight_bits': int8_weight_bits_of(state_dict), 'ranges': int8_ranges_of(state_dict),
            'placement': int8_placement_of(state_dict)}


def int8_state_problem(state_dict, qat):
    """Why the int8 state of ``state_dict`` (a quantization-aware checkpoint's weights) cannot continue in a stage
    with ``train.qat`` settings ``qat`` (:func:`rlfn_arch.utils.options.schema.qat_settings`), or None: the convs,
    weight bits, kind of ranges and placement must be the file's."""
    held = int8_settings_of(state_dict) or {}
    differ = [k for k, v in held.items() if v is not None and v != qat[k]]
    if not differ:
        return None
    return (f'its int8 state is for train.qat {", ".join(f"{k} {held[k]}" for k in differ)}; the stage has '
            f'{", ".join(f"{k} {qat[k]}" for k in differ)}: set those to the file\'s, or start from its float weights '
            '(the run\'s .safetensors file)')
