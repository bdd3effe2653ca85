"""A faster inference path for RLFN with the plain eager model's outputs (within 1e-5).

Measured on 2 CPU cores (benchmarks/inference_cpu.py), what helps and what does not:

* ``channels_last`` weights and activations: oneDNN's NHWC convolutions skip the layout reorders
  around every conv (about 1.4x on RLFN-S x4 at 256x256).
* ``torch.compile`` (inductor) on top: fuses the LeakyReLUs, residual adds and ESA's element-wise
  tail into the surrounding kernels (about 1.8x in total). Compiled per input shape (static shapes:
  ``dynamic=True`` gave no speed-up); the first call of each shape pays a compile of 5-20 s.
  Where inductor is unavailable (no C++ compiler) the path falls back to channels_last eager.
* Not used: TorchScript freezing + ``optimize_for_inference`` (slower than eager here: it converts
  to MKLDNN layouts and back around ESA's pooling and resize).

Nothing in the arithmetic changes (the ESA branch is kept exact), so outputs stay within float
rounding of eager.
"""
import copy
import warnings

import torch
from torch import nn


class FastRLFN(nn.Module):
    """Wraps an RLFN for inference. Call it like the network: (N, 3, H, W) -> (N, 3, sH, sW)."""

    def __init__(self, net, compile=True, channels_last=True):
        super().__init__()
        self.eager = copy.deepcopy(net).eval()
        self.upscale = net.upscale
        self.channels_last = channels_last
        if channels_last:
            self.eager = self.eager.to(memory_format=torch.channels_last)
        self.compiled = None
        if compile and hasattr(torch, 'compile'):
            self.compiled = torch.compile(self.eager, dynamic=False)

    def forward(self, x):
        with torch.inference_mode():
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.compiled is not None:
                try:
                    return self.compiled(x).contiguous()
                except Exception as e:  # inductor needs a C++ toolchain; fall back, once, loudly
                    warnings.warn(f'torch.compile unavailable ({type(e).__name__}: {str(e)[:200]}); '
                                  'using channels_last eager')
                    self.compiled = None
            return self.eager(x).contiguous()


def optimize_for_inference(net, compile=True, channels_last=True):
    """Return the fast inference wrapper of an RLFN (eval mode, no gradients)."""
    return FastRLFN(net, compile=compile, channels_last=channels_last)
