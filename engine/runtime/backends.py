"""Choosing and opening a chat backend for whatever the user points at."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bitsmith.engine.errors import BadInputError, BitsmithError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "native", "llama.cpp")


def llama_cpp_available() -> bool:
    """Whether llama-cpp-python can be imported here (checked without loading a model)."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def resolve_backend(model: str, backend: str = "auto") -> str:
    """"native" or "llama.cpp" for `model`: GGUF files go to llama.cpp when it is installed, the rest to native."""
    if backend not in BACKENDS:
        raise BadInputError(f"unknown backend {backend!r}", f"use one of: {', '.join(BACKENDS)}")
    is_gguf = str(model).lower().endswith(".gguf")
    if backend == "llama.cpp" and not is_gguf:
        raise BadInputError(
            f"the llama.cpp backend runs .gguf files, and {model} is not one",
            f"export it first: bitsmith export {model} --gguf model.gguf, or use --backend native",
        )
    if backend == "auto":
        if is_gguf and llama_cpp_available():
            return "llama.cpp"
        if is_gguf:
            log.warning("llama-cpp-python is not installed: chatting with %s through transformers (slower)", model)
        return "native"
    return backend


def open_backend(
    model: str,
    backend: str = "auto",
    *,
    n_ctx: int | None = None,
    device: str = "auto",
    n_gpu_layers: int | str = "auto",
    trust_remote_code: bool = False,
) -> Any:
    """A loaded backend (native.NativeBackend or llamacpp.LlamaCppBackend) ready for a ChatSession."""
    from bitsmith.engine.model import resolve_source

    model = str(model)
    resolved = resolve_source(model)
    path = Path(resolved).expanduser()
    looks_local = resolved.startswith((".", "/", "~")) or path.suffix.lower() == ".gguf" or path.exists()
    if looks_local and not path.exists():
        raise BadInputError(f"{model} does not exist", "check the path (a Bitsmith folder, HF folder or .gguf file)")
    kind = resolve_backend(resolved, backend)
    if kind == "llama.cpp":
        from .llamacpp import LlamaCppBackend

        return LlamaCppBackend(path, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers)
    from .native import NativeBackend

    try:
        return NativeBackend.load(model, device=device, n_ctx=n_ctx, trust_remote_code=trust_remote_code)
    except BitsmithError:
        raise
    except (OSError, ValueError) as exc:
        raise BadInputError(f"cannot load {model}: {exc}",
                            "check that it is a complete model folder, .gguf file or Hub id") from exc
