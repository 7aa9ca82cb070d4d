"""pyproject's explicit package list matches the folders that are packages, so installs miss nothing."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
TOP = {name: f"bitsmith.{name}" for name in ("app", "engine", "kernels", "resources")}


def test_every_package_folder_is_listed() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for folder, dotted in TOP.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((dotted, *rel)))
    assert found == listed


def test_layering_rules() -> None:
    """app never imports torch/transformers/triton; engine never imports Qt or app; kernels neither."""
    rules = {
        "app": ("import torch", "from torch", "import transformers", "from transformers", "import triton"),
        "engine": ("import PySide6", "from PySide6", "from bitsmith.app", "import bitsmith.app"),
        "kernels": ("from bitsmith.engine", "import bitsmith.engine", "from bitsmith.app", "PySide6"),
    }
    bad = []
    for folder, banned in rules.items():
        for py in (ROOT / folder).rglob("*.py"):
            for n, line in enumerate(py.read_text().splitlines(), 1):
                if line.strip().startswith(banned):
                    bad.append(f"{py.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bad, "\n".join(bad)
