"""What an option file may hold: the keys BasicSR 1.4.2 and our classes read, and what names may be.

Values defined elsewhere are read from there: the precision names from :mod:`rlfn_arch.utils.precision`
(by the checker), a network's minimum input size from the registered class (``min_input_size``, through
BasicSR's registry, so this floor-0 package needs no import from the architectures above it).
"""
import re

_TOP = {
    'name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'network_g', 'path', 'train', 'val',
    'logger', 'dist_params', 'find_unused_parameters', 'stages',
    # filled in by the parser
    'is_train', 'dist', 'rank', 'world_size', 'auto_resume', 'root_path', 'stage',
}
_DATASET_COMMON = {
    'name', 'type', 'phase', 'scale', 'io_backend', 'num_worker_per_gpu', 'batch_size_per_gpu',
    'dataset_enlarge_ratio', 'prefetch_mode', 'pin_memory', 'persistent_workers', 'num_prefetch_queue',
    'use_shuffle',
}
_PAIRED = {'dataroot_gt', 'dataroot_lq', 'meta_info_file', 'filename_tmpl', 'gt_size', 'use_hflip', 'use_rot',
           'use_flip', 'color', 'mean', 'std', 'deep_check'}
_IO_BACKEND = {'type', 'db_paths', 'client_keys'}
#: The loss sections of ``train`` (BasicSR's two and the contrastive loss), in logging order.
LOSS_KEYS = ('pixel_opt', 'perceptual_opt', 'contrastive_opt')
_TRAIN_BASE = {'ema_decay', 'optim_g', 'scheduler', 'total_iter', 'warmup_iter', 'pixel_opt', 'perceptual_opt',
               'contrastive_opt', 'max_nonfinite', 'precision', 'channels_last', 'trainable_g', 'qat'}
#: ``train.qat`` (quantization-aware training, :mod:`rlfn_arch.archs.qat`): which convs train in int8.
_QAT = {'convs', 'calibration_batches', 'target', 'weight_bits', 'ranges', 'placement'}
#: ``train.qat.target``: what the int8 network learns to output. ``float``: the float network's output for the
#: same patch (the weights the stage started from: the int8 model learns to compute what they compute);
#: ``gt``: the HR patch, as in any stage.
QAT_TARGETS = ('float', 'gt')
#: ``train.qat.weight_bits``: 8 (int8 weights in [-127, 127]) or 7 (in [-64, 64]: for CPUs without int8 dot-product
#: instructions, AVX2 and AVX-512 without VNNI, whose int8 kernels add pairs of uint8 x int8 products in 16 bits,
#: which 8-bit weights can overflow; 7-bit weights cannot).
QAT_WEIGHT_BITS = (8, 7)
#: ``train.qat.ranges``: the activation ranges after their calibration batches. ``calibrated``: frozen (the weights
#: train to them); ``learned``: they train with the weights (LSQ+; docs/int8.md: it helps ``all`` and ``body``,
#: not ``block_3x3``).
QAT_RANGES = ('calibrated', 'learned')
#: ``train.qat.placement``: which tensors of an int8 conv are 8-bit. ``qlinear``: its input and its output (ONNX's
#: QLinearConv, the form ONNX Runtime runs in int8; OpenVINO runs it in int8 too); ``inputs``: its input only, the
#: output stays float for every reader (OpenVINO's and NNCF's placement: int8 in OpenVINO only, ONNX Runtime
#: computes such a conv in float, slower than the fp32 model).
QAT_PLACEMENTS = ('qlinear', 'inputs')
#: ``train.qat.convs``: the sets of convs an int8 model can run in int8 (defined in :mod:`rlfn_arch.archs.qat`).
INT8_CONV_SETS = ('all', 'body', 'block_3x3', 'blocks')


def qat_settings(qat):
    """``train.qat`` with its defaults: the convs in int8 (``block_3x3``: the fastest set within 0.10 dB of fp32
    on Set5 and Set14 x4, docs/int8.md), the training batches that calibrate the activation ranges (100) and
    the target the int8 network learns (``float``: the output of the weights the stage started from; half the
    PSNR cost of learning the HR patches, docs/int8.md), the weights' bits (8; 7 for CPUs without VNNI,
    :data:`QAT_WEIGHT_BITS`), the ranges after calibration (``calibrated``: frozen; learning them did not
    help ``block_3x3``, :data:`QAT_RANGES`) and where the 8-bit tensors sit (``qlinear``: what both runtimes run
    in int8, :data:`QAT_PLACEMENTS`)."""
    return {'convs': 'block_3x3', 'calibration_batches': 100, 'target': 'float', 'weight_bits': 8,
            'ranges': 'calibrated', 'placement': 'qlinear', **(qat or {})}


_VAL = {'val_freq', 'save_img', 'suffix', 'pbar', 'metrics', 'bicubic_baseline', 'precision'}
_PATH = {'pretrain_network_g', 'param_key_g', 'strict_load_g', 'resume_state', 'experiments_root', 'models',
         'training_states', 'log', 'visualization', 'results_root', 'root', 'save_init',
         'cross_scale_g'}
_LOGGER = {'print_freq', 'save_checkpoint_freq', 'use_tb_logger', 'wandb'}
_WANDB = {'project', 'resume_id'}
_DIST = {'backend', 'port', 'init_method', 'timeout'}
_METRIC_COMMON = {'type', 'better'}
# What a stage may override (total_iter, optim_g, scheduler, losses, gt_size, batch size, ...)
_STAGE = {'name', 'train', 'datasets', 'val', 'logger', 'path'}
_STRING_KEYS = {'name', 'type', 'model_type', 'dataroot_gt', 'dataroot_lq', 'meta_info_file', 'filename_tmpl',
                'suffix', 'pretrain_network_g', 'param_key_g', 'resume_state', 'root', 'project', 'resume_id',
                'color', 'phase', 'reduction', 'extractor', 'vgg_weights', 'negative', 'prefetch_mode',
                'backend', 'port'}
#: ``path.cross_scale_g``: how a warm start from another scale starts the upsampler (the architecture applies it).
CROSS_SCALE_MODES = ('resample', 'fresh')
#: Experiment and stage names become folder names: letters, digits, '_', '-', '.', not starting with '.'.
NAME_RE = re.compile(r'^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$')
_FLOAT_RE = re.compile(r'^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$')


def qat_problem(network_opt):
    """Why ``network_g`` cannot train with int8 fake quantization, or None: RLFN's own layout only (the places
    where the int8 model quantizes a tensor are known for it)."""
    net = network_opt if isinstance(network_opt, dict) else {}
    switches = {k: net.get(k, d) for k, d in (('block', 'rlfb'), ('esa', 'trimmed'), ('fuse', 'none'))}
    if net.get('type') != 'RLFN' or switches != {'block': 'rlfb', 'esa': 'trimmed', 'fuse': 'none'}:
        return (f'network_g type {net.get("type")} with {switches}: int8 training supports RLFN\'s own layout '
                '(type RLFN, block rlfb, esa trimmed, fuse none)')
    return None


def name_problem(value):
    """Why ``value`` cannot name an experiment or a stage (it becomes a folder name), or None."""
    if not isinstance(value, str):
        return f'must be a string, got {type(value).__name__} {value!r}'
    if not NAME_RE.fullmatch(value):  # fullmatch: `$` alone would accept a trailing newline
        return (f'{value!r} cannot name a folder safely: use 1-128 letters, digits, "_", "-", "." '
                'not starting with "." (no "/", no "..", no spaces)')
    return None


