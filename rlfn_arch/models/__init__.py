from .warmstart_model import NonFiniteLossError, WarmStartModel  # noqa: F401
