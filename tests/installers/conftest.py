"""Loads installers/bootstrap.py (a stand-alone script, not a package) as a module for the tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAP = REPO / "installers" / "bootstrap.py"


def load_bootstrap():
    """The bootstrap module, loaded once by file path."""
    name = "bitsmith_installer_bootstrap"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BOOTSTRAP)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def bs():
    """installers/bootstrap.py as a module."""
    return load_bootstrap()
