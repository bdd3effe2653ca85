"""RLFN checkpoints: read any known key layout, detect the configuration from the tensor shapes, fold
the official [0, 255] range into [0, 1], load strictly.

Kept beside the architecture (spandrel's manner): everything that knows how RLFN's tensors are named
and shaped lives here, so a new variant changes one folder. ``python -m rlfn_arch.convert`` is the
command-line front of :func:`convert`.
"""
import copy
import json
import math
import os
import re
from collections import OrderedDict

import torch
from torch.nn import functional as F

from rlfn_arch.utils.checkpoint import (
    CheckpointError,
    atomic_save,
    check_finite,
    safe_load,
    save_safetensors,
    select_weights,
    split_quant_state,
    strip_module,
)
from rlfn_arch.utils.options import load_options
from rlfn_arch.utils.options.schema import CROSS_SCALE_MODES

from .rlfn_arch import MIN_INPUT_SIZE, PRESETS, RLFN

# NTIRE 2022 challenge code names (and RFDN's, from which they come) -> released-code names; RFDN's
# concatenation fuse ``c`` (conv + LeakyReLU) is our ``fuse``
_NTIRE_RENAMES = [(r'^fea_conv\.', 'conv_1.'), (r'^B(\d+)\.', r'block_\1.'), (r'^LR_conv\.', 'conv_2.'),
                  (r'^c\.0\.', 'fuse.0.')]
#: RLFN's switch values (an RLFN config leaves them out).
SWITCH_DEFAULTS = dict(block='rlfb', esa='trimmed', fuse='none')


def normalize_keys(state_dict, path='<state dict>'):
    """Map any known RLFN key layout (released code, NTIRE 2022 challenge, DDP 'module.') to ours; the state
    of int8 fake quantizers (a quantization-aware stage's checkpoint) is left out: these are the float weights."""
    out = OrderedDict()
    for key, value in split_quant_state(strip_module(state_dict))[0].items():
        if not hasattr(value, 'shape'):
            raise CheckpointError(f'{path}: entry {key!r} is not a tensor')
        for pattern, repl in _NTIRE_RENAMES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def detect_config(state_dict, path='<state dict>'):
    """Infer RLFN's constructor arguments from tensor shapes.

    Returns:
        dict: ``upscale``, ``in_channels``, ``out_channels``, ``feature_channels``, ``mid_channels``,
        ``esa_channels``, ``num_blocks``.

    Raises:
        CheckpointError: when the tensors are not an RLFN.
    """
    required = ['conv_1.weight', 'conv_2.weight', 'upsampler.0.weight', 'block_1.c1_r.weight',
                'block_1.esa.conv1.weight']
    missing = [k for k in required if k not in state_dict]
    if missing:
        some = ', '.join(list(state_dict)[:5]) or 'none'
        raise CheckpointError(f'{path}: not an RLFN checkpoint: missing {", ".join(missing)} '
                              f'(found keys: {some}{", ..." if len(state_dict) > 5 else ""})')
    feat, in_ch = state_dict['conv_1.weight'].shape[:2]
    mid = state_dict['block_1.c1_r.weight'].shape[0]
    esa = state_dict['block_1.esa.conv1.weight'].shape[0]
    switches = dict(block='rfdb' if 'block_1.c1_d.weight' in state_dict else 'rlfb',
                    esa='full' if 'block_1.esa.conv_max.weight' in state_dict else 'trimmed',
                    fuse='concat' if 'fuse.0.weight' in state_dict else 'none')
    num_blocks = len({m.group(1) for k in state_dict for m in [re.match(r'^block_(\d+)\.', k)] if m})
    up = state_dict['upsampler.0.weight'].shape[0]
    out_ch = in_ch
    scale = math.isqrt(up // out_ch) if up % out_ch == 0 else 0
    if scale not in (2, 3, 4) or out_ch * scale * scale != up:
        raise CheckpointError(f'{path}: upsampler.0 has {up} output channels; expected {out_ch} x s^2 for s in 2, 3, 4')
    cfg = dict(upscale=int(scale), in_channels=int(in_ch), out_channels=int(out_ch), feature_channels=int(feat),
               mid_channels=int(mid), esa_channels=int(esa), num_blocks=int(num_blocks))
    if switches['block'] == 'rfdb':
        cfg.pop('mid_channels')  # an RFDB has no separate width
    cfg.update({k: v for k, v in switches.items() if v != SWITCH_DEFAULTS[k]})
    return cfg


def _canonical(cfg):
    """A config with the switches and ``mid_channels`` spelled out (an RFDB has no ``mid_channels``)."""
    out = dict(SWITCH_DEFAULTS, **cfg)
    out['mid_channels'] = None if out['block'] == 'rfdb' else (cfg.get('mid_channels') or cfg['feature_channels'])
    return out


def preset_name(cfg):
    """The preset name (``rlfn``, ``rlfn_s``, ``rlfn_ntire``, ``rfdn`` or a step between) matching a config,
    or ``custom``."""
    have = _canonical(cfg)
    for name, preset in PRESETS.items():
        if all(have.get(k) == v for k, v in _canonical(preset).items()):
            return name
    return 'custom'


def fold_range(state_dict, input_range=255.0):
    """Fold an input/output range of [0, input_range] into the first and last convs.

    RLFN is affine in its input at ``conv_1`` and affine in its output at ``upsampler.0``; the
    zero padding of ``conv_1`` is scale-invariant. So f(255 x) / 255 == g(x) with conv_1.weight * 255
    and upsampler.0.{weight,bias} / 255.
    """
    sd = OrderedDict((k, v.detach().clone().float()) for k, v in state_dict.items())
    sd['conv_1.weight'] *= input_range
    sd['upsampler.0.weight'] /= input_range
    sd['upsampler.0.bias'] /= input_range
    return sd


def _smooth_image(channels, size=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, channels, 6, 6, generator=g) * 0.6 + 0.2
    return F.interpolate(coarse, size=(size, size), mode='bicubic', align_corners=False).clamp(0, 1)


def value_range(net):
    """255 when ``net`` works in [0, 255] (the official files), else 1.

    A bare state dict does not say its range, so it is decided by what the network does: 255 only when
    the network, fed 255x a smooth test image, returns 255x an upscaled copy of it and the [0, 1] reading
    does not; everything else is read as [0, 1] (BasicSR's range).
    """
    if getattr(net, 'int8_convs', None):  # prepared for int8 training: the float weights decide, not the 8-bit input
        from torch.ao.quantization import disable_fake_quant
        net = copy.deepcopy(net).apply(disable_fake_quant)
    weight = net.conv_1.weight
    x = _smooth_image(net.conv_1.in_channels).to(weight.device, weight.dtype)  # on the network's device
    ref = F.interpolate(x, scale_factor=net.upscale, mode='bicubic', align_corners=False)
    training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            err01 = (net(x) - ref).abs().mean().item()
            err255 = (net(x * 255) / 255 - ref).abs().mean().item()
    finally:
        net.train(training)  # the caller's mode (a network being set up for training stays in training mode)
    return 255 if err255 < 0.05 and err255 < 0.5 * err01 else 1


#: The tensors that depend on the scale: the last conv before the pixel shuffle.
HEAD_PREFIX = 'upsampler.0.'


def subpixel_resampling(src_scale, dst_scale):
    """(dst_scale, src_scale) weights that linearly interpolate the sub-pixel positions of one scale at
    another's (extrapolating at the edges). Sub-pixel ``i`` of scale ``s`` sits at ``(i + 0.5) / s - 0.5``
    LR pixels from its LR pixel's centre."""
    src = [(i + 0.5) / src_scale - 0.5 for i in range(src_scale)]
    out = torch.zeros(dst_scale, src_scale, dtype=torch.float64)
    for a in range(dst_scale):
        t = (a + 0.5) / dst_scale - 0.5
        k = min(max(sum(x <= t for x in src) - 1, 0), src_scale - 2)
        f = (t - src[k]) / (src[k + 1] - src[k])
        out[a, k], out[a, k + 1] = 1 - f, f
    return out


def resample_head(weight, bias, src_scale, dst_scale):
    """An upsampler conv for ``dst_scale`` from one trained for ``src_scale``.

    The conv's ``C x s x s`` output channels are, after the pixel shuffle, the ``s x s`` sub-pixels of each
    LR pixel; each new sub-pixel's kernel is the separable linear interpolation of the trained kernels at
    its position (:func:`subpixel_resampling`). The head then predicts what the trained one predicts,
    resampled; training refines it.

    Args:
        weight (Tensor): (C * src_scale**2, F, k, k).
        bias (Tensor): (C * src_scale**2, ).

    Returns:
        (Tensor, Tensor): (C * dst_scale**2, F, k, k) and (C * dst_scale**2, ), in the input's dtype.
    """
    m = subpixel_resampling(src_scale, dst_scale)
    c = weight.shape[0] // src_scale**2
    w = weight.double().reshape(c, src_scale, src_scale, *weight.shape[1:])
    w = torch.einsum('ai,bj,cij...->cab...', m, m, w).reshape(c * dst_scale**2, *weight.shape[1:])
    b = torch.einsum('ai,bj,cij->cab', m, m, bias.double().reshape(c, src_scale, src_scale)).reshape(-1)
    return w.to(weight.dtype), b.to(bias.dtype)


def cross_scale_state(state_dict, net, path='<state dict>', mode='resample'):
    """``net``'s weights from a checkpoint of another scale (the paper's warm start, across scales).

    Every tensor outside the upsampler must fit ``net`` exactly and is taken as is (bit for bit, after
    the official [0, 255] range is folded, see :func:`fold_range`). The upsampler is taken when its shape
    fits (same scale); else, by ``mode``:

    * ``resample`` (default): the checkpoint's upsampler resampled to the new scale's sub-pixel positions
      (:func:`resample_head`): the network starts as a working model of the new scale.
    * ``fresh``: ``net``'s own fresh initialisation divided by the folded factor: a folded official body
      works at 255 times a [0, 1] body's scale, and a head initialised for a [0, 1] body would start with
      outputs 255 times too large (whose first Adam steps wreck the body).

    Args:
        state_dict (dict): an RLFN state dict (any key layout :func:`normalize_keys` reads).
        net (RLFN): the network to fill; only its ``state_dict()`` and ``upscale`` are read.
        path (str): for messages.
        mode (str): ``resample`` or ``fresh``.

    Returns:
        (OrderedDict, list[str]): the state dict for ``net``, and one note per tensor not loaded as is.

    Raises:
        CheckpointError: a tensor other than the upsampler's is missing, extra or of another shape.
        ValueError: an unknown ``mode``.
    """
    if mode not in CROSS_SCALE_MODES:
        raise ValueError(f'cross_scale_g: {mode!r}; expected one of {", ".join(CROSS_SCALE_MODES)}')
    sd = normalize_keys(state_dict, path)
    src_cfg = detect_config(sd, path)
    sd, factor = adopt_weights(sd, RLFN(**src_cfg).eval(), path)
    own, out, notes = net.state_dict(), OrderedDict(), []
    head = {}
    if sd[HEAD_PREFIX + 'weight'].shape != own[HEAD_PREFIX + 'weight'].shape and mode == 'resample':
        w, b = resample_head(sd[HEAD_PREFIX + 'weight'], sd[HEAD_PREFIX + 'bias'], src_cfg['upscale'], net.upscale)
        head = {HEAD_PREFIX + 'weight': w, HEAD_PREFIX + 'bias': b}
    how = (f'resampled from x{src_cfg["upscale"]} to x{net.upscale} sub-pixel positions' if head else
           f'initialised fresh{f" and divided by {factor:g} (the folded [0, {factor:g}] body)" if factor != 1 else ""}')
    for key, mine in own.items():
        have = sd.get(key)
        if key.startswith(HEAD_PREFIX) and (have is None or have.shape != mine.shape):
            out[key] = head[key] if key in head and head[key].shape == mine.shape else mine.detach().clone() / factor
            was = (f'checkpoint {tuple(have.shape)} (x{src_cfg["upscale"]})' if have is not None
                   else 'not in the checkpoint')
            notes.append(f'{key}: not loaded as is: {was}, network {tuple(mine.shape)} (x{net.upscale}); '
                         f'{how}')
        elif have is None:
            raise CheckpointError(f'{path}: tensor {key} is missing from the checkpoint (across scales only '
                                  f'{HEAD_PREFIX}* may differ)')
        elif have.shape != mine.shape:
            raise CheckpointError(f'{path}: tensor {key}: checkpoint {tuple(have.shape)}, network '
                                  f'{tuple(mine.shape)} (across scales only {HEAD_PREFIX}* may differ)')
        else:
            out[key] = have
    extra = [k for k in sd if k not in own]
    if extra:
        raise CheckpointError(f'{path}: tensor {extra[0]} is in the checkpoint but not in the network')
    return out, notes


def network_yaml(cfg):
    lines = ['network_g:', '  type: RLFN']
    lines += [f'  {k}: {v}' for k, v in cfg.items()]
    return '\n'.join(lines)


def adopt_weights(state_dict, net, path='<state dict>', input_range=None):
    """Any RLFN state dict as ``net`` (built, [0, 1]) needs it: known key layouts mapped, finiteness checked,
    the value range folded into [0, 1]. The one place that decides a file's range.

    Args:
        state_dict (dict): the weights (:func:`rlfn_arch.utils.checkpoint.select_weights`).
        net (RLFN): the network they must fit strictly (it is loaded with them).
        path (str): for messages.
        input_range (float | None): the range the weights work in; None (default) decides it from what the
            network does (:func:`value_range`: 255 for the official files as released, else 1).

    Returns:
        (OrderedDict, float): the [0, 1] state dict (loaded into ``net``) and the range that was folded.

    Raises:
        CheckpointError: non-finite weights or tensors that do not fit ``net``, naming the file.
    """
    sd = check_finite(normalize_keys(state_dict, path), path)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(f'{path}: tensors do not match {type(net).__name__} '
                              f'{detect_config(net.state_dict())}: {" ".join(first[:3])}') from e
    factor = float(input_range) if input_range else value_range(net)
    if factor != 1:
        sd = fold_range(sd, factor)
        net.load_state_dict(sd)
    return sd, factor


def load_rlfn(path, network_opt=None, input_range=None):
    """Load any RLFN checkpoint safely and check it: ``(state_dict, cfg, net)`` with the weights loaded, in
    [0, 1].

    Args:
        path (str): a checkpoint (BasicSR, converted, official, safetensors; :func:`select_weights` decides
            which weights).
        network_opt (dict | None): a ``network_g`` section; the network is built from its ``type`` through
            BasicSR's registry (RLFN, RFDN, ...). Default: RLFN with the settings the tensor shapes say.
        input_range (float | None): see :func:`adopt_weights` (None: detected).

    Returns:
        (OrderedDict, dict, RLFN): the [0, 1] weights, the full settings (shapes and switches), the network.
    """
    sd = normalize_keys(select_weights(safe_load(path), path)[0], path)
    if network_opt:
        from basicsr.archs import build_network
        try:
            net = build_network(dict(network_opt))
        except (TypeError, ValueError, KeyError) as e:
            raise CheckpointError(f'network_g {dict(network_opt)}: cannot be built: {e}') from e
    else:
        net = RLFN(**detect_config(sd, path))
    sd, _ = adopt_weights(sd, net, path, input_range)
    return sd, detect_config(sd, path), net


def model_metadata(cfg, **extra):
    """What a weights file says about itself (safetensors metadata, ONNX ``metadata_props``): strings.

    Keys: ``architecture``, ``preset``, ``network_g`` (the settings, JSON), ``scale``, ``in_channels``,
    ``out_channels``, ``value_range`` ([0, 1]), ``min_input_size``, ``project`` and ``project_version``, and
    whatever ``extra`` adds (a trained model: ``option_file``, ``stages``, ``val_psnr``).
    """
    from rlfn_arch import __version__
    meta = {'architecture': 'RLFN', 'preset': preset_name(cfg), 'network_g': json.dumps(dict(cfg), sort_keys=True),
            'scale': cfg['upscale'], 'in_channels': cfg.get('in_channels', 3),
            'out_channels': cfg.get('out_channels', 3),
            'value_range': '[0, 1]', 'min_input_size': MIN_INPUT_SIZE, 'project': 'rlfn-basicsr',
            'project_version': __version__}
    meta.update(extra)
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


def save_weights(state_dict, path, cfg, **extra):
    """``path`` ending in ``.safetensors``: safetensors with :func:`model_metadata`; else ``{'params': ...}``
    with torch.save. Atomic either way."""
    if str(path).lower().endswith('.safetensors'):
        save_safetensors(state_dict, path, model_metadata(cfg, **extra))
    else:
        atomic_save({'params': state_dict}, path)


def convert(input_path, output_path=None, input_range=None):
    """Load, check, fold into [0, 1]; write the weights atomically when ``output_path`` is given
    (``{'params': ...}``, or a safetensors file with metadata when it ends in ``.safetensors``).

    Args:
        input_range (float | None): the range the file works in; None: detected (:func:`value_range`).

    Returns:
        (OrderedDict, dict, float): the converted state dict, the detected network config, the folded range.
    """
    sd = normalize_keys(select_weights(safe_load(input_path), input_path)[0], input_path)
    cfg = detect_config(sd, input_path)
    sd, factor = adopt_weights(sd, RLFN(**cfg), input_path, input_range)
    if output_path:
        os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)  # e.g. weights/ on a fresh clone
        save_weights(sd, output_path, cfg)
    return sd, cfg, factor


def load_model(model_path=None, opt_path=None, preset=None, scale=4, input_range=None, device='cpu'):
    """Return ``(net, cfg)`` in eval mode on ``device``, working in [0, 1].

    Args:
        model_path (str | None): a checkpoint (see :func:`load_rlfn`); its settings are read from the shapes.
        opt_path (str | None): an option file whose ``network_g`` builds the network (any registered type).
        preset (str | None): a name of :data:`PRESETS` with random weights (benchmarks only).
        scale (int): upscale for ``preset``.
        input_range (float | None): the range of ``model_path``'s weights; None: detected.
    """
    if model_path is None:
        if preset not in PRESETS:
            raise ValueError(f'unknown preset {preset!r}; expected one of {list(PRESETS)} or a --model_path')
        cfg = dict(upscale=scale, **PRESETS[preset])
        return RLFN(**cfg).eval().to(device), cfg
    network_opt = load_options(opt_path).get('network_g') if opt_path else None
    _, cfg, net = load_rlfn(model_path, network_opt, input_range)
    return net.eval().to(device), cfg
