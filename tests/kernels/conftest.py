"""Kernel tests: registers the `kernel_testing` helper module and the `make` fixture (fresh random inputs)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

if "kernel_testing" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("kernel_testing", Path(__file__).with_name("kernel_testing.py"))
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["kernel_testing"] = _module
    _spec.loader.exec_module(_module)

from kernel_testing import Maker  # noqa: E402


@pytest.fixture
def make(request) -> Maker:
    """A source of fresh random operands; the seed is printed if the test fails."""
    maker = Maker()
    yield maker
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(f"random seed of the failed test: {maker.seed}")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
