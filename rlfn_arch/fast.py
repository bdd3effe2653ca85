"""A faster CPU/GPU inference path for RLFN with the plain eager model's outputs (within 1e-5).

What it does, in order of what it buys on a CPU (see benchmarks/inference_cpu.py):

1. ``channels_last`` weights and activations: oneDNN's NHWC convolutions avoid layout reorders.
2. TorchScript freezing + ``torch.jit.optimize_for_inference`` (conv + activation fusion, constant
   weights, MKLDNN layouts) for inputs of at least 15x15; smaller inputs use the eager network.
3. ``torch.inference_mode`` around every call.
"""
import copy

import torch
from torch import nn

from rlfn_arch.archs.rlfn_arch import MIN_INPUT_SIZE


class FastRLFN(nn.Module):
    """Wraps an RLFN for inference. Call it like the network: (N, 3, H, W) -> (N, 3, sH, sW)."""

    def __init__(self, net, jit=True, channels_last=True):
        super().__init__()
        self.eager = copy.deepcopy(net).eval()
        self.upscale = net.upscale
        self.channels_last = channels_last
        if channels_last:
            self.eager = self.eager.to(memory_format=torch.channels_last)
        self.scripted = None
        if jit:
            dev = next(self.eager.parameters()).device
            example = torch.rand(1, 3, 32, 32, device=dev)
            if channels_last:
                example = example.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(False), torch.no_grad():
                traced = torch.jit.trace(_Features(self.eager), example, check_trace=False)
                frozen = torch.jit.freeze(traced.eval())
                self.scripted = torch.jit.optimize_for_inference(frozen) if dev.type == 'cpu' else frozen

    def forward(self, x):
        with torch.inference_mode():
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.scripted is not None and min(x.shape[-2:]) >= MIN_INPUT_SIZE:
                return self.scripted(x).contiguous()
            return self.eager(x).contiguous()


class _Features(nn.Module):

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.forward_features(x)


def optimize_for_inference(net, jit=True, channels_last=True):
    """Return the fast inference wrapper of an RLFN (eval mode, no gradients)."""
    return FastRLFN(net, jit=jit, channels_last=channels_last)
