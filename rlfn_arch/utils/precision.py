"""Numeric precision and memory layout: what the hardware runs fast, detected, never assumed.

``auto`` picks bf16 autocast only where the device computes bf16 natively: a CPU whose flags include
AVX512_BF16 or AMX-BF16 (and whose oneDNN does not say no; on a CPU without them bf16 is emulated and
slower than fp32, also on AVX-512 CPUs for which oneDNN reports bf16 support), or a CUDA GPU with bf16
support. Everywhere else ``auto`` is fp32. An explicit ``bf16`` on a CPU without native
support still runs, with one warning that names the reason. ``fp16`` runs on CUDA (with dynamic loss
scaling in training); on a CPU it is emulated, runs, and warns likewise. This is the one policy: training
(the stage plan resolves it once; the model reads the plan's value) and every inference tool resolve through
:func:`resolve_precision`.

Autocast keeps the weights fp32: convolutions run in the low precision, reductions such as the L1 loss
run in fp32 (PyTorch's autocast lists), so master weights, optimizer state, EMA and checkpoints stay
fp32 and load in any precision.
"""
import contextlib
import os
import warnings

import torch

from .report import cpu_name, cpuinfo_field

PRECISIONS = ('auto', 'fp32', 'bf16', 'fp16')
#: CPU flags (``/proc/cpuinfo``) of native bf16 arithmetic: AVX512_BF16 (Cooper Lake, Zen 4 and later) or AMX.
NATIVE_BF16_FLAGS = frozenset({'avx512_bf16', 'amx_bf16'})
#: CPU flags of int8 dot-product instructions (what int8 convolutions are fast with), by the name people use.
INT8_DOT_FLAGS = {'amx_int8': 'AMX-INT8', 'avx512_vnni': 'AVX512-VNNI', 'avx_vnni': 'AVX-VNNI'}
#: The same for bf16 arithmetic.
BF16_FLAGS = {'amx_bf16': 'AMX-BF16', 'avx512_bf16': 'AVX512_BF16'}
DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
_warned = set()


#: ``ONEDNN_MAX_CPU_ISA`` values and their oneDNN ISA bit masks (``dnnl_cpu_isa_t``): a mask holds every ISA
#: whose mask is a subset of it.
ONEDNN_ISA_MASKS = {'SSE41': 0x1, 'AVX': 0x3, 'AVX2': 0x7, 'AVX2_VNNI': 0xf, 'AVX2_VNNI_2': 0x1f,
                    'AVX512_CORE': 0x27, 'AVX512_CORE_VNNI': 0x67, 'AVX512_CORE_BF16': 0xe7,
                    'AVX10_1_512': 0x1ef, 'AVX512_CORE_FP16': 0x1ef, 'AVX10_1_512_AMX': 0xfef,
                    'AVX512_CORE_AMX': 0xfef, 'AVX10_1_512_AMX_FP16': 0x1fef, 'AVX512_CORE_AMX_FP16': 0x1fef}
#: The oneDNN ISA each CPU flag that decides a fast path belongs to.
_FLAG_ISA = {'avx2': 0x7, 'avx_vnni': 0xf, 'avx512f': 0x27, 'avx512_vnni': 0x67, 'avx512_bf16': 0xe7,
             'amx_int8': 0xfef, 'amx_bf16': 0xfef}


def onednn_isa_cap():
    """The ISA oneDNN (PyTorch's and OpenVINO's CPU kernels) is capped to by ``ONEDNN_MAX_CPU_ISA``, upper case,
    or None (no cap, ``ALL``/``DEFAULT``, or a value oneDNN does not know)."""
    cap = os.environ.get('ONEDNN_MAX_CPU_ISA', '').strip().upper()
    return cap if cap in ONEDNN_ISA_MASKS else None


def cpu_flags():
    """The CPU feature flags from /proc/cpuinfo (empty where it is not readable), less those of instruction sets
    above an ``ONEDNN_MAX_CPU_ISA`` cap (oneDNN does not use them, so a fast path must not count on them)."""
    flags = set((cpuinfo_field('flags') or '').split())
    cap = onednn_isa_cap()
    if cap is not None:
        mask = ONEDNN_ISA_MASKS[cap]
        flags = {f for f in flags if _FLAG_ISA.get(f, 0) & ~mask == 0}
    return flags


def cpu_instruction_sets():
    """What this CPU has for fast low precision: ``{'int8': [...], 'bf16': [...], 'simd': 'AVX-512' | 'AVX2' |
    ...}`` (names as people use them; empty lists where it has none or /proc/cpuinfo is not readable)."""
    flags = cpu_flags()
    simd = 'AVX-512' if 'avx512f' in flags else 'AVX2' if 'avx2' in flags else 'AVX' if 'avx' in flags else 'other'
    return {'int8': [v for k, v in INT8_DOT_FLAGS.items() if k in flags],
            'bf16': [v for k, v in BF16_FLAGS.items() if k in flags], 'simd': simd}


def int8_saturates(capped=True):
    """True on an x86 CPU without int8 dot-product instructions (AVX2, AVX-512 without VNNI): its int8 kernels add
    pairs of uint8 x int8 products in 16 bits, which weights beyond [-64, 64] can overflow (OpenVINO calls it the
    saturation issue). False where it has VNNI or AMX, None where /proc/cpuinfo says nothing x86.
    ``capped``: honour ``ONEDNN_MAX_CPU_ISA`` (what oneDNN, so OpenVINO, runs); ONNX Runtime's kernels ignore it."""
    flags = cpu_flags() if capped else set((cpuinfo_field('flags') or '').split())
    if 'sse4_1' not in flags and 'avx2' not in flags:
        return None
    return not (INT8_DOT_FLAGS.keys() & flags)


def native_bf16(device):
    """True when ``device`` computes bf16 convolutions natively (so bf16 is faster than fp32 there)."""
    device = torch.device(device)
    if device.type == 'cuda':
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != 'cpu':
        return False
    # The instruction set decides. oneDNN's own answer cannot: PyTorch answers it through ideep, which says
    # yes for any CPU with AVX-512 (Skylake-SP, Cascade Lake, Ice Lake), where bf16 is emulated and about 2x
    # slower than fp32. It can only veto (a build without oneDNN bf16 kernels).
    if not NATIVE_BF16_FLAGS & cpu_flags():
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def native_fp16(device):
    """True where fp16 convolutions are native: CUDA (a CPU's fp16 path is emulated)."""
    return torch.device(device).type == 'cuda' and torch.cuda.is_available()


def _warn_once(key, message):
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def resolve_precision(requested, device):
    """``auto | fp32 | bf16 | fp16`` -> the precision that runs on ``device``.

    Raises:
        ValueError: an unknown value.
    """
    requested = 'auto' if requested is None else str(requested)
    if requested not in PRECISIONS:
        raise ValueError(f'precision {requested!r}: expected one of {", ".join(PRECISIONS)}')
    device = torch.device(device)
    if requested == 'auto':
        return 'bf16' if native_bf16(device) else 'fp32'
    if requested == 'bf16' and not native_bf16(device):
        _warn_once(('bf16', device.type), f'precision bf16 on {describe(device)}: this device has no native bf16 '
                   '(needs AVX512_BF16 or AMX on a CPU), so bf16 is emulated and usually slower than fp32')
    if requested == 'fp16' and not native_fp16(device):
        _warn_once(('fp16', device.type), f'precision fp16 on {describe(device)}: fp16 is native on CUDA GPUs only; '
                   'here it is emulated and slow')
    return requested


def resolve_channels_last(requested, device):
    """``auto | true | false`` (bools from YAML, strings from the command line) -> bool. ``auto`` is on:
    channels_last was faster for RLFN on every device measured (CPU fp32 and bf16; see
    benchmarks/train_throughput.py and benchmarks/infer_folder.py)."""
    if requested in (None, 'auto'):
        return torch.device(device).type in ('cpu', 'cuda')
    if isinstance(requested, bool):
        return requested
    if requested in ('true', 'false'):
        return requested == 'true'
    raise ValueError(f'channels_last {requested!r}: expected auto, true or false')


def autocast(device, precision):
    """Autocast context for ``precision`` on ``device`` (a no-op for fp32)."""
    if precision in DTYPES:
        return torch.autocast(torch.device(device).type, dtype=DTYPES[precision])
    return contextlib.nullcontext()


def describe(device):
    """'CPU (model name)' or the CUDA device name, for messages and benchmark rows."""
    device = torch.device(device)
    if device.type == 'cuda' and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    return f'CPU ({cpu_name()})'
