"""The fast inference path: channels_last, the precision the hardware runs fastest, optional compile.

``optimize_for_inference(net, precision='auto')`` returns a callable that takes and returns fp32 NCHW
tensors in [0, 1] like the network. Inside:

* ``channels_last`` weights and activations: oneDNN's NHWC convolutions skip the layout reorders around
  every conv (about 1.2-1.4x on RLFN at 256x256, CPU fp32). Arithmetic unchanged: outputs within float
  rounding of eager (1e-5).
* ``precision``: ``auto`` = bf16 autocast where the device runs bf16 natively (AVX512_BF16 / AMX CPUs,
  bf16-capable GPUs), else fp32; ``bf16`` / ``fp16`` explicitly (see :mod:`rlfn_arch.utils.precision`).
  bf16 changes PSNR-Y by a few thousandths of a dB on Set5/Set14 (README table).
* ``compile=True``: ``torch.compile`` (inductor), compiled once per input shape (5-20 s each; static
  shapes). Worth it only where one shape repeats (``benchmark --fast``, a video, fixed tiles); for a
  folder of photos of different sizes it is slower end to end than eager, so ``infer`` never compiles.
  Where inductor is unavailable (no C++ compiler) it falls back to eager, once, with a warning.
"""
import copy
import warnings

import torch
from torch import nn

from rlfn_arch.utils.precision import autocast, resolve_precision


class FastRLFN(nn.Module):
    """Wraps an RLFN for inference. Call it like the network: (N, C, H, W) fp32 -> (N, C, sH, sW) fp32.

    Attributes:
        precision (str): the precision that runs ('fp32', 'bf16' or 'fp16').
        channels_last (bool): the memory layout inside.
    """

    def __init__(self, net, precision='auto', compile=False, channels_last=True):
        super().__init__()
        self.eager = copy.deepcopy(net).eval()
        self.upscale = net.upscale
        self.device = next(self.eager.parameters()).device
        self.precision = resolve_precision(precision, self.device)
        self.channels_last = channels_last
        if channels_last:
            self.eager = self.eager.to(memory_format=torch.channels_last)
        self.compiled = None
        if compile and hasattr(torch, 'compile'):
            self.compiled = torch.compile(self.eager, dynamic=False)

    @property
    def layout(self):
        return 'channels_last' if self.channels_last else 'nchw'

    def forward(self, x):
        with torch.inference_mode(), autocast(self.device, self.precision):
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.compiled is not None:
                try:
                    return self.compiled(x).float().contiguous()
                except Exception as e:  # inductor needs a C++ toolchain; fall back, once, loudly
                    warnings.warn(f'torch.compile unavailable ({type(e).__name__}: {str(e)[:200]}); '
                                  'using channels_last eager')
                    self.compiled = None
            return self.eager(x).float().contiguous()


def optimize_for_inference(net, precision='auto', compile=False, channels_last=True):
    """Return the fast inference wrapper of an RLFN (eval mode, no gradients).

    Args:
        net (RLFN): the network (its device is kept).
        precision (str): 'auto' | 'fp32' | 'bf16' | 'fp16'. Default: 'auto'.
        compile (bool): torch.compile per input shape (only where one shape repeats). Default: False.
        channels_last (bool): NHWC layout inside. Default: True.
    """
    return FastRLFN(net, precision=precision, compile=compile, channels_last=channels_last)
