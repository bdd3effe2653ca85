"""RLFN: Residual Local Feature Network (Kong et al., CVPRW 2022), and the network it was derived from.

Module and parameter names follow the released inference code exactly, so the official checkpoints
load with ``strict=True`` (after :mod:`rlfn_arch.convert` folds their [0, 255] range into [0, 1]).

RLFN was derived from RFDN (Liu et al., AIM 2020 efficient-SR winner) in three steps, each a switch
here (the defaults are RLFN's, so with every switch on the RLFN side the network *is* RLFN):

* ``block``: ``'rfdb'`` (RFDN's residual feature distillation block: at each of three levels a 1x1
  "distillation" conv and a 3x3 conv with its own shallow residual, a fourth 3x3 conv, the four
  distilled outputs concatenated and fused by a 1x1 conv) or ``'rlfb'`` (three 3x3 convs and one local
  residual over them, then the 1x1 conv);
* ``esa``: ``'full'`` (RFDN's ESA with a group of three 3x3 convs after the max pool, ReLUs between) or
  ``'trimmed'`` (one 3x3 conv there: the group the paper's one-shot pruning found redundant);
* ``fuse``: ``'concat'`` (RFDN: the outputs of all blocks concatenated and fused by a 1x1 conv +
  LeakyReLU before ``conv_2``) or ``'none'`` (RLFN: ``conv_2`` reads the last block's output).

``type: RFDN`` is the same network with RFDN's switches and sizes (nf 50, 4 blocks, ESA width 12); the
official ``RFDN_AIM.pth`` loads into it through :mod:`rlfn_arch.convert` (key names mapped, range folded).
"""
import torch
from torch import nn
from torch.nn import functional as F

from basicsr.utils.registry import ARCH_REGISTRY

#: The smallest LR height/width ESA's stride-2 conv and 7x7/3 max pool accept:
#: conv2 (3x3, stride 2, no padding) gives (n - 3) // 2 + 1 >= 7 for the pool, so n >= 15.
MIN_INPUT_SIZE = 15

#: Published configurations. Parameter counts (x4 / x2) are asserted by the tests.
PRESETS = {
    'rlfn': dict(feature_channels=52, mid_channels=52, esa_channels=16, num_blocks=6),  # 543,740 / 526,856
    'rlfn_s': dict(feature_channels=48, mid_channels=48, esa_channels=16, num_blocks=6),  # 470,208 / 454,620
    'rlfn_ntire': dict(feature_channels=46, mid_channels=48, esa_channels=16, num_blocks=4),  # 317,218 (x4)
}


def conv_layer(in_channels, out_channels, kernel_size, bias=True):
    """A 'same'-padded conv (odd kernel sizes), as in the released code."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2, bias=bias)


class ESA(nn.Module):
    """Enhanced Spatial Attention.

    Args:
        esa_channels (int): Width of the attention branch. Default: 16.
        n_feats (int): Channels of the input features.
        full (bool): RFDN's ESA, with the group ``conv_max`` -> ReLU -> ``conv3`` -> ReLU -> ``conv3_`` after
            the max pool, instead of RLFN's single ``conv3``. Default: False.

    Shape: (N, n_feats, H, W) -> (N, n_feats, H, W); needs H, W >= 15.
    """

    def __init__(self, esa_channels, n_feats, full=False):
        super().__init__()
        f = esa_channels
        self.full = full
        self.conv1 = nn.Conv2d(n_feats, f, kernel_size=1)
        self.conv_f = nn.Conv2d(f, f, kernel_size=1)
        if full:
            self.conv_max = nn.Conv2d(f, f, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(f, f, kernel_size=3, stride=2, padding=0)
        self.conv3 = nn.Conv2d(f, f, kernel_size=3, padding=1)
        if full:
            self.conv3_ = nn.Conv2d(f, f, kernel_size=3, padding=1)
            self.relu = nn.ReLU(inplace=True)
        self.conv4 = nn.Conv2d(f, n_feats, kernel_size=1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        c1_ = self.conv1(x)
        c1 = self.conv2(c1_)
        v_max = F.max_pool2d(c1, kernel_size=7, stride=3)
        if self.full:
            c3 = self.conv3_(self.relu(self.conv3(self.relu(self.conv_max(v_max)))))
        else:
            c3 = self.conv3(v_max)
        c3 = F.interpolate(c3, (x.size(2), x.size(3)), mode='bilinear', align_corners=False)
        cf = self.conv_f(c1_)
        c4 = self.conv4(c3 + cf)
        m = self.sigmoid(c4)
        return x * m


class RLFB(nn.Module):
    """Residual Local Feature Block: three 3x3 conv + LeakyReLU(0.05), local residual, 1x1 conv, ESA.

    Args:
        in_channels (int): Input/output channels C.
        mid_channels (int | None): Width of the three 3x3 convs. Default: C.
        out_channels (int | None): Output channels. Default: C.
        esa_channels (int): ESA width. Default: 16.
        full_esa (bool): RFDN's ESA (see :class:`ESA`). Default: False.
    """

    def __init__(self, in_channels, mid_channels=None, out_channels=None, esa_channels=16, full_esa=False):
        super().__init__()
        mid_channels = mid_channels or in_channels
        out_channels = out_channels or in_channels
        self.c1_r = conv_layer(in_channels, mid_channels, 3)
        self.c2_r = conv_layer(mid_channels, mid_channels, 3)
        self.c3_r = conv_layer(mid_channels, in_channels, 3)
        self.c5 = conv_layer(in_channels, out_channels, 1)
        self.esa = ESA(esa_channels, out_channels, full=full_esa)
        self.act = nn.LeakyReLU(negative_slope=0.05, inplace=True)

    def forward(self, x):
        out = self.act(self.c1_r(x))
        out = self.act(self.c2_r(out))
        out = self.act(self.c3_r(out))
        out = out + x
        return self.esa(self.c5(out))


class RFDB(nn.Module):
    """Residual Feature Distillation Block (RFDN's, "E-RFDB" with ESA), written from its description.

    At each of three levels: a 1x1 conv distils C/2 channels; a 3x3 conv with its own shallow residual
    (conv + identity, then LeakyReLU(0.05)) refines the rest. A fourth 3x3 conv distils the last level;
    the four distilled tensors are concatenated (2C channels), fused by the 1x1 ``c5`` and weighted by ESA.

    Args:
        in_channels (int): Input/output channels C (even).
        esa_channels (int): ESA width. Default: C // 4.
        full_esa (bool): RFDN's ESA with the 3-conv group. Default: True.

    Shape: (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, in_channels, esa_channels=None, full_esa=True):
        super().__init__()
        dc = in_channels // 2
        self.c1_d = conv_layer(in_channels, dc, 1)
        self.c1_r = conv_layer(in_channels, in_channels, 3)
        self.c2_d = conv_layer(in_channels, dc, 1)
        self.c2_r = conv_layer(in_channels, in_channels, 3)
        self.c3_d = conv_layer(in_channels, dc, 1)
        self.c3_r = conv_layer(in_channels, in_channels, 3)
        self.c4 = conv_layer(in_channels, dc, 3)
        self.c5 = conv_layer(4 * dc, in_channels, 1)
        self.esa = ESA(esa_channels or in_channels // 4, in_channels, full=full_esa)
        self.act = nn.LeakyReLU(negative_slope=0.05, inplace=True)

    def forward(self, x):
        distilled, r = [], x
        for conv_d, conv_r in ((self.c1_d, self.c1_r), (self.c2_d, self.c2_r), (self.c3_d, self.c3_r)):
            distilled.append(self.act(conv_d(r)))
            r = self.act(conv_r(r) + r)
        distilled.append(self.act(self.c4(r)))
        return self.esa(self.c5(torch.cat(distilled, dim=1)))


#: The switches of the derivation RFDN -> RLFN (see the module docstring); the first value is RLFN's.
BLOCKS, ESAS, FUSES = ('rlfb', 'rfdb'), ('trimmed', 'full'), ('none', 'concat')


@ARCH_REGISTRY.register()
class RLFN(nn.Module):
    """Residual Local Feature Network.

    Works in BasicSR's [0, 1] range (official weights are converted by ``python -m rlfn_arch.convert``).

    Args:
        upscale (int): Upscaling factor, 2, 3 or 4. Default: 4.
        in_channels (int): Input channels. Default: 3.
        out_channels (int): Output channels. Default: 3.
        feature_channels (int): Body width C. Default: 52 (RLFN); 48 for RLFN-S, 46 for the NTIRE model.
        mid_channels (int | None): Width inside each RLFB. Default: ``feature_channels``
            (48 for the NTIRE 2022 model).
        esa_channels (int): ESA width. Default: 16.
        num_blocks (int): Number of RLFBs. Default: 6 (4 for the NTIRE model).
        pad_small_input (bool): Inputs smaller than 15x15 (ESA's minimum) are reflect/replicate-padded
            to 15x15 and the output is cropped back. With False, such inputs raise ValueError. Default: True.
        block (str): ``'rlfb'`` (default) or ``'rfdb'`` (RFDN's distillation block; ``mid_channels`` unused).
        esa (str): ``'trimmed'`` (default, one conv after the pool) or ``'full'`` (RFDN's 3-conv group).
        fuse (str): ``'none'`` (default) or ``'concat'`` (all block outputs concatenated, 1x1 conv +
            LeakyReLU(0.05), RFDN's ``c``; here the module ``fuse``).

    Shape: (N, in_channels, H, W) -> (N, out_channels, H * upscale, W * upscale). No clamping.
    """

    #: The smallest LR patch ``forward_features`` accepts (the option checker reads it through the registry).
    min_input_size = MIN_INPUT_SIZE

    def __init__(self,
                 upscale=4,
                 in_channels=3,
                 out_channels=3,
                 feature_channels=52,
                 mid_channels=None,
                 esa_channels=16,
                 num_blocks=6,
                 pad_small_input=True,
                 block='rlfb',
                 esa='trimmed',
                 fuse='none'):
        super().__init__()
        if type(upscale) is not int or upscale not in (2, 3, 4):  # 4.0 or True would build a broken shuffle
            raise ValueError(f'RLFN: upscale must be the integer 2, 3 or 4, got {upscale!r}')
        for name, value, allowed in (('block', block, BLOCKS), ('esa', esa, ESAS), ('fuse', fuse, FUSES)):
            if value not in allowed:
                raise ValueError(f'RLFN: {name} must be one of {", ".join(allowed)}, got {value!r}')
        for name, value in (('in_channels', in_channels), ('out_channels', out_channels),
                            ('feature_channels', feature_channels), ('esa_channels', esa_channels),
                            ('num_blocks', num_blocks), ('mid_channels', mid_channels or feature_channels)):
            if type(value) is not int or value < 1:
                raise ValueError(f'RLFN: {name} must be a positive integer, got {value!r}')
        mid_channels = mid_channels or feature_channels
        self.upscale = upscale
        self.pad_small_input = pad_small_input
        self.num_blocks = num_blocks
        self.fuse_blocks = fuse == 'concat'
        self.conv_1 = conv_layer(in_channels, feature_channels, 3)
        for i in range(1, num_blocks + 1):
            if block == 'rfdb':
                if feature_channels % 2:
                    raise ValueError(f'RLFN: block rfdb needs an even feature_channels, got {feature_channels}')
                body = RFDB(feature_channels, esa_channels, full_esa=esa == 'full')
            else:
                body = RLFB(feature_channels, mid_channels, esa_channels=esa_channels, full_esa=esa == 'full')
            self.add_module(f'block_{i}', body)
        if self.fuse_blocks:
            self.fuse = nn.Sequential(conv_layer(feature_channels * num_blocks, feature_channels, 1),
                                      nn.LeakyReLU(negative_slope=0.05, inplace=True))
        self.conv_2 = conv_layer(feature_channels, feature_channels, 3)
        self.upsampler = nn.Sequential(
            conv_layer(feature_channels, out_channels * upscale**2, 3), nn.PixelShuffle(upscale))

    def blocks(self):
        return [getattr(self, f'block_{i}') for i in range(1, self.num_blocks + 1)]

    def forward_features(self, x):
        """The network without the small-input handling. x: (N, C_in, H, W) with H, W >= 15."""
        out_feature = self.conv_1(x)
        out, outs = out_feature, []
        for block in self.blocks():
            out = block(out)
            outs.append(out)
        if self.fuse_blocks:
            out = self.fuse(torch.cat(outs, dim=1))
        out = self.conv_2(out) + out_feature
        return self.upsampler(out)

    def forward(self, x):
        h, w = x.shape[-2:]
        if h >= MIN_INPUT_SIZE and w >= MIN_INPUT_SIZE:
            return self.forward_features(x)
        if not self.pad_small_input:
            raise ValueError(f'RLFN needs an LR input of at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} pixels '
                             f'(ESA: stride-2 conv then 7x7/3 max pool), got {h}x{w}. '
                             'Pad the input or build the network with pad_small_input=True.')
        ph, pw = max(0, MIN_INPUT_SIZE - h), max(0, MIN_INPUT_SIZE - w)
        # reflect needs pad < size; replicate works for any size >= 1
        mode = 'reflect' if (ph < h and pw < w) else 'replicate'
        out = self.forward_features(F.pad(x, (0, pw, 0, ph), mode=mode))
        return out[..., :h * self.upscale, :w * self.upscale]


#: RFDN's settings, and the networks between RFDN and RLFN (each one switch further), at RFDN's size.
RFDN_DEFAULTS = dict(feature_channels=50, esa_channels=12, num_blocks=4, block='rfdb', esa='full', fuse='concat')
STEPS = {
    'rfdn': dict(RFDN_DEFAULTS),  # 433,448 (x4): the AIM 2020 winner
    'rfdn_rlfb': dict(RFDN_DEFAULTS, block='rlfb'),  # step 1: no distillation inside the blocks
    'rfdn_rlfb_esa1': dict(RFDN_DEFAULTS, block='rlfb', esa='trimmed'),  # step 2: ESA's conv group cut to one
    'rfdn_rlfb_esa1_nocat': dict(RFDN_DEFAULTS, block='rlfb', esa='trimmed', fuse='none'),  # step 3: RLFN's layout
}
PRESETS.update(STEPS)


@ARCH_REGISTRY.register()
class RFDN(RLFN):
    """RFDN (Liu et al., "Residual Feature Distillation Network", AIM 2020 efficient-SR winner): :class:`RLFN`
    with RFDN's switches and sizes as defaults (RFDB blocks, full ESA, concatenation + 1x1 fuse; nf 50,
    4 blocks, ESA width 12). Any argument of :class:`RLFN` may be given.

    Shape: (N, in_channels, H, W) -> (N, out_channels, H * upscale, W * upscale). No clamping.
    """

    def __init__(self, upscale=4, in_channels=3, out_channels=3, feature_channels=50, mid_channels=None,
                 esa_channels=12, num_blocks=4, pad_small_input=True, block='rfdb', esa='full', fuse='concat'):
        super().__init__(upscale=upscale, in_channels=in_channels, out_channels=out_channels,
                         feature_channels=feature_channels, mid_channels=mid_channels, esa_channels=esa_channels,
                         num_blocks=num_blocks, pad_small_input=pad_small_input, block=block, esa=esa, fuse=fuse)
