"""RLFN checkpoints: read any known key layout, detect the configuration from the tensor shapes, fold
the official [0, 255] range into [0, 1], load strictly.

Kept beside the architecture (spandrel's manner): everything that knows how RLFN's tensors are named
and shaped lives here, so a new variant changes one folder. ``python -m rlfn_arch.convert`` is the
command-line front of :func:`convert`.
"""
import json
import math
import os
import re
from collections import OrderedDict

from rlfn_arch.utils.checkpoint import (
    CheckpointError,
    atomic_save,
    check_finite,
    safe_load,
    save_safetensors,
    strip_module,
)
from rlfn_arch.utils.options import load_options

from .rlfn_arch import MIN_INPUT_SIZE, PRESETS, RLFN

# NTIRE 2022 challenge code names (and RFDN's, from which they come) -> released-code names; RFDN's
# concatenation fuse ``c`` (conv + LeakyReLU) is our ``fuse``
_NTIRE_RENAMES = [(r'^fea_conv\.', 'conv_1.'), (r'^B(\d+)\.', r'block_\1.'), (r'^LR_conv\.', 'conv_2.'),
                  (r'^c\.0\.', 'fuse.0.')]
#: RLFN's switch values (an RLFN config leaves them out).
SWITCH_DEFAULTS = dict(block='rlfb', esa='trimmed', fuse='none')


def _unwrap(obj, path):
    if isinstance(obj, dict):
        for key in ('params_ema', 'params', 'state_dict', 'model'):
            if key in obj and isinstance(obj[key], dict):
                return obj[key]
        return obj
    raise CheckpointError(f'{path}: expected a state dict, got {type(obj).__name__}')


def normalize_keys(state_dict, path='<state dict>'):
    """Map any known RLFN key layout (released code, NTIRE 2022 challenge, DDP 'module.') to ours."""
    out = OrderedDict()
    for key, value in strip_module(state_dict).items():
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


def network_yaml(cfg):
    lines = ['network_g:', '  type: RLFN']
    lines += [f'  {k}: {v}' for k, v in cfg.items()]
    return '\n'.join(lines)


def load_rlfn(path, cfg=None):
    """Load any RLFN checkpoint safely and check it: ``(state_dict, cfg, net)`` with the weights loaded.

    ``cfg`` (RLFN's constructor arguments) defaults to what the tensor shapes say.
    """
    sd = check_finite(normalize_keys(_unwrap(safe_load(path), path), path), path)
    cfg = cfg or detect_config(sd, path)
    net = RLFN(**cfg)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f'{path}: tensors do not match an RLFN with {cfg}: {e}') from e
    return sd, cfg, net


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


def convert(input_path, output_path=None, input_range=255.0):
    """Load, check, convert; write the weights atomically when ``output_path`` is given (``{'params': ...}``,
    or a safetensors file with metadata when it ends in ``.safetensors``).

    Returns:
        (OrderedDict, dict): the converted state dict and the detected network config.
    """
    sd, cfg, _ = load_rlfn(input_path)
    if input_range != 1:
        sd = fold_range(sd, input_range)
    if output_path:
        os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)  # e.g. weights/ on a fresh clone
        save_weights(sd, output_path, cfg)
    return sd, cfg


def load_model(model_path=None, opt_path=None, preset=None, scale=4, input_range=1.0, device='cpu'):
    """Return ``(net, cfg)`` in eval mode on ``device``, working in [0, 1].

    Args:
        model_path (str | None): BasicSR checkpoint (``params_ema`` preferred, else ``params``) or a raw
            state dict. Its network settings are read from the tensor shapes.
        opt_path (str | None): option file whose ``network_g`` is used instead of the shapes.
        preset (str | None): 'rlfn', 'rlfn_s' or 'rlfn_ntire' with random weights (benchmarks only).
        scale (int): upscale for ``preset``.
        input_range (float): 255 for the official, unconverted files.
    """
    if model_path is None:
        if preset not in PRESETS:
            raise ValueError(f'unknown preset {preset!r}; expected one of {list(PRESETS)} or a --model_path')
        cfg = dict(upscale=scale, **PRESETS[preset])
        return RLFN(**cfg).eval().to(device), cfg
    cfg = None
    if opt_path:
        cfg = {k: v for k, v in load_options(opt_path).get('network_g', {}).items() if k != 'type'}
    sd, cfg, net = load_rlfn(model_path, cfg)
    if input_range != 1:
        net.load_state_dict(fold_range(sd, input_range))
    return net.eval().to(device), cfg
