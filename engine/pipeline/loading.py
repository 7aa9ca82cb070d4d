"""Load whatever the user points at: a Bitsmith folder, an HF folder, a `.gguf` file, a Hub id or `bundled`."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from bitsmith.engine.model import load_model, resolve_source
from bitsmith.engine.quant.store import is_quantized_folder, load_quantized


def load_any(source: str, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False) -> tuple:
    """(model, tokenizer, meta) — meta is bitsmith.json's content for a Bitsmith folder, else {}."""
    if is_quantized_folder(source):
        saved = load_quantized(source, dtype=dtype)
        return saved.model, saved.tokenizer, saved.meta
    model, tok = load_model(source, dtype=dtype, trust_remote_code=trust_remote_code)
    return model, tok, {}


def source_identity(source: str) -> str:
    """A stable id for caching per model: resolved path with size and mtime, or the Hub id as given."""
    resolved = resolve_source(source)
    path = Path(resolved)
    if path.exists():
        files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
        stamp = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
        digest = hashlib.sha256(repr(stamp).encode()).hexdigest()[:12]
        return f"{os.path.abspath(path)}#{digest}"
    return resolved
