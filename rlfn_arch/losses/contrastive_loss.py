"""RLFN's contrastive loss with a random, frozen, shallow Tanh feature extractor.

Follows the paper (Kong et al., CVPRW 2022, Sec. 3.3): anchor = SR output, positive = HR,
negative = bicubic-upsampled LR; features from a randomly initialised two-layer extractor
Conv3x3 -> Tanh -> Conv3x3 (Tanh instead of ReLU: dense rather than sparse features); the
AECR-Net / CSD ratio form with L1 distances::

    L = loss_weight * sum_j w_j * L1(phi_j(sr), phi_j(hr)) / (L1(phi_j(sr), phi_j(neg)) + eps)

Not published, so ours (all options), each checked by the ablation (README "Does the recipe help?",
``benchmarks/ablation.py``): the extractor width (``num_features``: 3; 16 and 64 were no better), the
activation (``tanh``; ReLU was worse, as the paper reports), the depth (2; five convs were worse), which
outputs are used (``layers``: the last conv), their weights (1.0), ``eps`` (1e-6), the seed (0) and the
weight relative to L1 (``loss_weight``; the recipes use 0.001: 0.01 and 0.1 were worse).
"""
import math
import os

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models import vgg19

from rlfn_arch.utils.checkpoint import safe_load

from basicsr.utils.registry import LOSS_REGISTRY

# torchvision vgg19().features indices; convX_Y is before the ReLU, reluX_Y after it
_VGG19_NAMES = [
    'conv1_1', 'relu1_1', 'conv1_2', 'relu1_2', 'pool1', 'conv2_1', 'relu2_1', 'conv2_2', 'relu2_2', 'pool2',
    'conv3_1', 'relu3_1', 'conv3_2', 'relu3_2', 'conv3_3', 'relu3_3', 'conv3_4', 'relu3_4', 'pool3', 'conv4_1',
    'relu4_1', 'conv4_2', 'relu4_2', 'conv4_3', 'relu4_3', 'conv4_4', 'relu4_4', 'pool4', 'conv5_1', 'relu5_1',
    'conv5_2', 'relu5_2', 'conv5_3', 'relu5_3', 'conv5_4', 'relu5_4', 'pool5'
]
_VGG_DEFAULT_LAYERS = ['relu1_1', 'relu2_1', 'relu3_1', 'relu4_1', 'relu5_1']
_VGG_DEFAULT_WEIGHTS = [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0]  # CSD's weights


_ACTIVATIONS = {'tanh': torch.tanh, 'relu': torch.relu, 'leaky_relu': lambda x: F.leaky_relu(x, 0.2)}
_ACTIVATIONS_ = {'tanh': torch.tanh_, 'relu': torch.relu_, 'leaky_relu': lambda x: F.leaky_relu_(x, 0.2)}


class RandomExtractor(nn.Module):
    """``depth`` random 3x3 convs with an activation between each two: Conv -> Act -> Conv (depth 2, the
    paper's) ... Conv; weights a pure function of ``seed``.

    The weights are drawn on the CPU from a private ``torch.Generator`` (PyTorch's default conv
    initialisation, Kaiming-uniform with a=sqrt(5)), conv by conv, weight then bias, so every process,
    rank, device and resume gets the same extractor without touching the global RNG (and depth 2 with
    Tanh draws exactly what earlier versions drew).

    Feature names: ``conv1`` ... ``conv{depth}``, ``act1`` ... ``act{depth-1}`` (``tanh1`` = ``act1``).
    """

    def __init__(self, in_channels=3, num_features=3, seed=0, activation='tanh', depth=2):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f'ContrastiveLoss: activation={activation!r}; expected one of {list(_ACTIVATIONS)}')
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f'ContrastiveLoss: depth={depth!r}; expected an integer >= 1')
        self.activation, self.depth = activation, depth
        for i in range(1, depth + 1):  # attributes conv1, conv2, ... (the names earlier versions had)
            self.add_module(f'conv{i}', nn.Conv2d(in_channels if i == 1 else num_features, num_features, 3, padding=1))
        gen = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for conv in self.convs():
                fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
                bound = 1 / math.sqrt(fan_in)  # == kaiming_uniform(a=sqrt(5)) bound, and the bias bound
                conv.weight.copy_(torch.empty_like(conv.weight).uniform_(-bound, bound, generator=gen))
                conv.bias.copy_(torch.empty_like(conv.bias).uniform_(-bound, bound, generator=gen))

    def convs(self):
        return [getattr(self, f'conv{i}') for i in range(1, self.depth + 1)]

    def names(self):
        return [f'conv{i}' for i in range(1, self.depth + 1)] + [f'act{i}' for i in range(1, self.depth)] + \
            (['tanh1'] if self.activation == 'tanh' and self.depth > 1 else [])

    def forward(self, x, layers):
        layers = ['act1' if n == 'tanh1' else n for n in layers]
        last = max(int(n[4:]) if n.startswith('conv') else int(n[3:]) + 0.5 for n in layers)
        feats = {}
        # channels_last: oneDNN runs these few-channel convs ~2.4x faster on CPU than in NCHW
        x = x.contiguous(memory_format=torch.channels_last)
        for i, conv in enumerate(self.convs(), 1):
            if i > last:
                break
            x = conv(x)
            feats[f'conv{i}'] = x
            if i < self.depth and i < last:
                # in place where no gradient is needed (HR and negative) and conv{i} is not kept: saves a
                # large allocation per call
                keep = (torch.is_grad_enabled() and x.requires_grad) or f'conv{i}' in layers
                x = _ACTIVATIONS[self.activation](x) if keep else _ACTIVATIONS_[self.activation](x)
                feats[f'act{i}'] = x
        return [feats[name] for name in layers]


RandomTanhExtractor = RandomExtractor  # the name of earlier versions


class VGG19Extractor(nn.Module):
    """torchvision VGG19 features (for the paper's ablation), from a local weights file."""

    def __init__(self, weights_path, layers):
        super().__init__()

        if not weights_path or not os.path.isfile(weights_path):
            raise FileNotFoundError(
                f'ContrastiveLoss: vgg_weights={weights_path!r} not found. The vgg19 extractor needs a local copy '
                'of torchvision\'s VGG19 ImageNet weights (vgg19-dcbb9e9d.pth); nothing is downloaded.')
        net = vgg19(weights=None)
        state = safe_load(weights_path)
        net.load_state_dict(state, strict=True)
        last = max(_VGG19_NAMES.index(n) for n in layers)
        self.features = net.features[:last + 1]
        self.index = [_VGG19_NAMES.index(n) for n in layers]
        self.register_buffer('mean', torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer('std', torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x, layers):
        x = (x - self.mean) / self.std
        out = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.index:
                out[i] = x
        return [out[i] for i in self.index]


@LOSS_REGISTRY.register()
class ContrastiveLoss(nn.Module):
    """Contrastive loss of RLFN (see the module docstring for the formula).

    Args:
        loss_weight (float): Weight of this loss. Default: 1.0.
        reduction (str): 'mean' only (the L1 distances are means over their elements). Default: 'mean'.
        extractor (str): 'random_tanh' (the paper's random extractor; 'random' is the same) or 'vgg19'
            (ablation). Default: 'random_tanh'.
        activation (str): Activation between the random convs: 'tanh' (the paper's), 'relu' or
            'leaky_relu' (slope 0.2). Default: 'tanh'.
        depth (int): Number of random 3x3 convs (depth 2 = Conv-Act-Conv, the paper's). Default: 2.
        layers (list[str] | None): Feature outputs to use. Random extractor: 'conv1' ... 'conv{depth}',
            'act1' ... 'act{depth-1}' ('tanh1' = 'act1'; default: the last conv); vgg19: names like
            'relu3_1' (after ReLU) or 'conv3_1' (before ReLU) (default relu1_1, relu2_1, relu3_1,
            relu4_1, relu5_1).
        layer_weights (list[float] | None): One weight per layer. Default: 1.0 each (random_tanh);
            CSD's 1/32, 1/16, 1/8, 1/4, 1 (vgg19 defaults).
        num_features (int): Width of the random extractor. Default: 3.
        in_channels (int): Image channels. Default: 3.
        seed (int): Seed of the random extractor. Default: 0.
        eps (float): Added to the denominator. Default: 1e-6.
        negative (str): 'bicubic' (bicubic upsampling of ``lq``, clamped to [0, 1]) or 'lq_nearest'.
            Default: 'bicubic'.
        scale (int | None): Expected upscale factor; checked against the shapes when given. Default: None.
        vgg_weights (str | None): Local path of torchvision VGG19 weights (extractor 'vgg19' only).

    Shapes: ``sr`` and ``hr`` (N, C, sH, sW) in [0, 1]; ``lq`` (N, C, H, W). Returns a scalar.
    Only ``sr`` receives a gradient; the extractor is frozen and never trained.
    """

    def __init__(self,
                 loss_weight=1.0,
                 reduction='mean',
                 extractor='random_tanh',
                 layers=None,
                 layer_weights=None,
                 num_features=3,
                 in_channels=3,
                 seed=0,
                 eps=1e-6,
                 negative='bicubic',
                 scale=None,
                 vgg_weights=None,
                 activation='tanh',
                 depth=2):
        super().__init__()
        if reduction != 'mean':
            raise ValueError(f'ContrastiveLoss: reduction={reduction!r} is not supported; use "mean"')
        if negative not in ('bicubic', 'lq_nearest'):
            raise ValueError(f'ContrastiveLoss: negative={negative!r}; expected "bicubic" or "lq_nearest"')
        if extractor in ('random_tanh', 'random'):
            self.extractor = RandomExtractor(in_channels, num_features, seed, activation, depth)
            layers = list(layers or [f'conv{depth}'])
            bad = [n for n in layers if n not in self.extractor.names()]
            if bad:
                raise ValueError(f'ContrastiveLoss: layers {bad} unknown for the random extractor of depth {depth}; '
                                 f'expected any of {self.extractor.names()}')
            layer_weights = list(layer_weights or [1.0] * len(layers))
        elif extractor == 'vgg19':
            if in_channels != 3:
                raise ValueError(f'ContrastiveLoss: extractor vgg19 needs in_channels=3, got {in_channels}')
            layers = list(layers or _VGG_DEFAULT_LAYERS)
            bad = [n for n in layers if n not in _VGG19_NAMES or n.startswith('pool')]
            if bad:
                raise ValueError(f'ContrastiveLoss: layers {bad} unknown for extractor vgg19; expected names like '
                                 '"relu3_1" (after ReLU) or "conv3_1" (before ReLU)')
            layer_weights = list(layer_weights or (_VGG_DEFAULT_WEIGHTS if layers == _VGG_DEFAULT_LAYERS else
                                                    [1.0] * len(layers)))
            self.extractor = VGG19Extractor(vgg_weights, layers)
        else:
            raise ValueError(f'ContrastiveLoss: extractor={extractor!r} unknown; expected "random_tanh", "random" '
                             'or "vgg19"')
        if len(layer_weights) != len(layers):
            raise ValueError(f'ContrastiveLoss: layer_weights has {len(layer_weights)} entries for '
                             f'{len(layers)} layers {layers}')
        for p in self.extractor.parameters():
            p.requires_grad_(False)
        self.extractor.eval()
        self.loss_weight = loss_weight
        self.layers, self.layer_weights = layers, [float(w) for w in layer_weights]
        self.in_channels, self.eps, self.negative, self.scale = in_channels, float(eps), negative, scale

    def train(self, mode=True):  # the extractor stays in eval mode whatever the parent does
        super().train(mode)
        self.extractor.eval()
        return self

    def _check(self, sr, hr, lq):
        for name, t in (('sr', sr), ('hr', hr), ('lq', lq)):
            if t.dim() != 4 or t.shape[1] != self.in_channels:
                raise ValueError(f'ContrastiveLoss: {name} must be (N, {self.in_channels}, H, W) '
                                 f'(option in_channels={self.in_channels}), got {tuple(t.shape)}')
        if sr.shape != hr.shape:
            raise ValueError(f'ContrastiveLoss: sr {tuple(sr.shape)} and hr {tuple(hr.shape)} differ in shape')
        if lq.shape[0] != sr.shape[0]:
            raise ValueError(f'ContrastiveLoss: lq batch {lq.shape[0]} != sr batch {sr.shape[0]}')
        sh, sw = sr.shape[2] / lq.shape[2], sr.shape[3] / lq.shape[3]
        if sh != sw or sh != int(sh) or (self.scale is not None and sh != self.scale):
            raise ValueError(f'ContrastiveLoss: lq {tuple(lq.shape[2:])} times the scale must give sr '
                             f'{tuple(sr.shape[2:])} (option scale={self.scale})')
        return int(sh)

    def make_negative(self, lq, scale):
        if self.negative == 'bicubic':
            return F.interpolate(lq, scale_factor=scale, mode='bicubic', align_corners=False).clamp(0, 1)
        return F.interpolate(lq, scale_factor=scale, mode='nearest')

    def forward(self, sr, hr, lq):
        scale = self._check(sr, hr, lq)
        with torch.no_grad():  # positives and negatives carry no gradient
            hr = hr.detach()
            neg = self.make_negative(lq.detach(), scale)
            both = self.extractor(torch.cat([hr, neg]).to(sr.dtype), self.layers)  # one call for both
            f_pos = [f[:hr.shape[0]] for f in both]
            f_neg = [f[hr.shape[0]:] for f in both]
        f_sr = self.extractor(sr, self.layers)
        loss = 0
        for w, a, p, n in zip(self.layer_weights, f_sr, f_pos, f_neg):
            loss = loss + w * F.l1_loss(a, p) / (F.l1_loss(a, n) + self.eps)
        return self.loss_weight * loss
