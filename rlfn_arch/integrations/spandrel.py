"""RLFN (every preset and the RFDN -> RLFN steps, scales 2/3/4, 1 or 3 channels) in spandrel, the model
loader behind chaiNNer and ComfyUI.

    import rlfn_arch.integrations.spandrel as rlfn_spandrel
    rlfn_spandrel.install()                       # registers RLFN in spandrel.MAIN_REGISTRY
    model = spandrel.ModelLoader().load_from_file('RLFN_S_x4.safetensors')   # or .pth, official or ours

Written the way spandrel's own architectures are (detection by key conditions, hyperparameters read
from the tensor shapes), registered through spandrel's public API only (``ArchRegistry.add``). It loads
the official RLFN files (bytedance layout and the NTIRE 2022 challenge copy) and the official RFDN file,
which work in [0, 255], as well as this project's [0, 1] checkpoints (converted, trained, ``params`` or
``params_ema``, ``.pth`` or ``.safetensors``); every descriptor takes and returns images in [0, 1] as
spandrel's do. The value range is not stored in a bare state dict, so it is decided by what the network
does: the [0, 255] reading is taken only when the network, fed 255x a smooth test image, returns 255x an
upscaled copy of it and the [0, 1] reading does not; everything else is read as [0, 1] (BasicSR's range).
"""
from rlfn_arch.archs.rlfn_arch import MIN_INPUT_SIZE, RLFN
from rlfn_arch.archs.rlfn_weights import adopt_weights, detect_config, normalize_keys, preset_name

try:  # spandrel's public names only
    from spandrel import Architecture, ArchSupport, ImageModelDescriptor, SizeRequirements
    from spandrel.util import KeyCondition
except ImportError as e:  # pragma: no cover - spandrel is an optional dependency
    raise ImportError('rlfn_arch.integrations.spandrel needs spandrel: pip install "rlfn-basicsr[spandrel]"') from e

#: Released-code names and the NTIRE 2022 / RFDN names of the same tensors.
_DETECT = KeyCondition.has_any(
    KeyCondition.has_all('conv_1.weight', 'block_1.c1_r.weight', 'block_1.c5.weight', 'block_1.esa.conv1.weight',
                         'block_1.esa.conv_f.weight', 'block_1.esa.conv2.weight', 'block_1.esa.conv3.weight',
                         'block_1.esa.conv4.weight', 'conv_2.weight', 'upsampler.0.weight'),
    KeyCondition.has_all('fea_conv.weight', 'B1.c1_r.weight', 'B1.c5.weight', 'B1.esa.conv1.weight',
                         'B1.esa.conv_f.weight', 'B1.esa.conv2.weight', 'B1.esa.conv3.weight', 'B1.esa.conv4.weight',
                         'LR_conv.weight', 'upsampler.0.weight'),
)


class RLFNArch(Architecture[RLFN]):
    """spandrel architecture: RLFN and its RFDN-side variants (``RFDN`` is the same class with other
    switches). A checkpoint with RFDN's distillation blocks is described as :class:`RFDNArch` (``RFDN``),
    its other switches in the tags."""

    def __init__(self, id='RLFN', name=None):
        super().__init__(id=id, detect=_DETECT, name=name)

    def load(self, state_dict):
        sd = normalize_keys(state_dict)
        cfg = detect_config(sd)
        net = RLFN(**cfg)
        sd, _ = adopt_weights(sd, net)  # non-finite weights refused by name; an official range folded
        net.eval()
        name = preset_name(cfg)
        tags = [name] if name != 'custom' else []
        tags += [f'{cfg["feature_channels"]}nf', f'{cfg["num_blocks"]}b']
        tags += [f'{k}={cfg[k]}' for k in ('esa', 'fuse') if k in cfg]  # switches off RLFN's values
        arch = RFDN_ARCH if cfg.get('block') == 'rfdb' else self
        return ImageModelDescriptor(
            net, sd, architecture=arch, purpose='SR', tags=tags,
            supports_half=True,  # fp16 and bf16 both checked against fp32 by tests/unit/integrations
            supports_bfloat16=True, scale=cfg['upscale'], input_channels=cfg['in_channels'],
            output_channels=cfg['out_channels'], size_requirements=SizeRequirements(minimum=MIN_INPUT_SIZE))


#: How an RFDN checkpoint describes itself (loaded by :class:`RLFNArch`, which detects both; not registered).
RFDN_ARCH = RLFNArch(id='RFDN', name='RFDN')


def load(name):
    """A model that ships with rlfn-basicsr, by name (``load('rlfn_s_x3')``), as a spandrel descriptor.
    Calls :func:`install` first."""
    from spandrel import ModelLoader

    from rlfn_arch.archs.zoo import model_file
    install()
    return ModelLoader().load_from_file(model_file(name))


def install(registry=None):
    """Register RLFN in ``registry`` (default ``spandrel.MAIN_REGISTRY``). Idempotent. Returns the
    architectures added (empty when it was already there)."""
    if registry is None:
        from spandrel import MAIN_REGISTRY as registry
    return registry.add(ArchSupport.from_architecture(RLFNArch()), ignore_duplicates=True)
