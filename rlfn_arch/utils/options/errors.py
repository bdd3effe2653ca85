"""The one error type of option handling."""


class OptionError(ValueError):
    """An option file that cannot be used, with the file, the key path and what was expected."""
