"""pytest configuration: this folder on the import path, so every test file can ``from helpers import ...``
(the shared helpers live in tests/helpers.py, not here)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
