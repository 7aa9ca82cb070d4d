"""Runtime tests: registers the `chat_models` and `fake_backend` helpers; a fresh, printed torch seed per test."""

import importlib.util
import sys
from pathlib import Path

import pytest

for _name in ("chat_models", "fake_backend"):
    if _name not in sys.modules:
        _spec = importlib.util.spec_from_file_location(_name, Path(__file__).with_name(f"{_name}.py"))
        _module = importlib.util.module_from_spec(_spec)
        sys.modules[_name] = _module
        _spec.loader.exec_module(_module)


@pytest.fixture(autouse=True)
def fresh_seed() -> int:
    import torch

    seed = torch.seed()
    print(f"torch seed: {seed} (replay with torch.manual_seed)")
    return seed


@pytest.fixture(scope="session")
def smollm_int4() -> Path:
    """The bundled SmolLM2 quantized to INT4/g128 (RTN), as a Bitsmith folder (cached between runs)."""
    return sys.modules["chat_models"].smollm_folder("int4")


@pytest.fixture(scope="session")
def smollm_mixed() -> Path:
    """SmolLM2 with INT2/g64 MLPs in 3 of 4 blocks and INT4/g128 elsewhere (cached between runs)."""
    return sys.modules["chat_models"].smollm_folder("mixed")


@pytest.fixture(scope="session")
def smollm_tok():  # noqa: ANN201 - a transformers tokenizer
    """SmolLM2's tokenizer (read from the bundled GGUF; no model build needed)."""
    return sys.modules["chat_models"].smollm_tokenizer()


@pytest.fixture(scope="session")
def bundled_gguf() -> Path:
    from bitsmith.engine.model import bundled_model_path

    return bundled_model_path()
