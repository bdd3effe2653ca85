"""pytest configuration: this folder on the import path, so every test file can ``from helpers import ...``
(the shared helpers live in tests/helpers.py, not here), and the ``system`` marker on every test under
tests/system (``pytest -m "not system"`` is the fast loop)."""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def pytest_collection_modifyitems(items):
    system = os.path.join(HERE, 'system') + os.sep
    for item in items:
        if str(item.fspath).startswith(system):
            item.add_marker(pytest.mark.system)
