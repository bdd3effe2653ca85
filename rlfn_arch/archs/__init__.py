from .rlfn_arch import ESA, MIN_INPUT_SIZE, PRESETS, RLFB, RLFN  # noqa: F401
from .rlfn_weights import convert, detect_config, fold_range, load_model, load_rlfn, normalize_keys, preset_name  # noqa: F401
