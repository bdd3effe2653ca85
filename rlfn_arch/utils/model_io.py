"""Build an RLFN for inference from a checkpoint (settings read from its tensors) or an option file."""
import torch

from rlfn_arch.archs.rlfn_arch import RLFN, PRESETS
from rlfn_arch.convert import fold_range, load_rlfn


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
        from rlfn_arch.utils.options import load_options
        cfg = {k: v for k, v in load_options(opt_path).get('network_g', {}).items() if k != 'type'}
    sd, cfg, net = load_rlfn(model_path, cfg)
    if input_range != 1:
        net.load_state_dict(fold_range(sd, input_range))
    return net.eval().to(device), cfg


def pick_device(name=None):
    if name:
        return torch.device(name)
    return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
