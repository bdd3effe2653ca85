from .rlfn_arch import ESA, MIN_INPUT_SIZE, PRESETS, RLFB, RLFN  # noqa: F401
