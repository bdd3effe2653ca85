"""Integrations with other tools (optional dependencies, imported where used): :mod:`.spandrel`."""
