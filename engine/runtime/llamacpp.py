"""The llama.cpp backend: the chat-session API over llama-cpp-python, for any GGUF file (CPU, CUDA, Metal).

The prompt is the GGUF's own `tokenizer.chat_template` rendered by engine/runtime/template.py (the same
Jinja rules as transformers), tokenized by llama.cpp with special tokens parsed. llama.cpp samples
(penalties, top-k, top-p, min-p, temperature, seeded draw); its `generate` reuses the KV cache for the
prompt prefix shared with the previous turn. GPU layers come from the fit planner (engine/runtime/offload.py).
Loading failures are explained from llama.cpp's own log: an unknown architecture, a damaged file, a
missing library each get their own message.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import math
import os
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bitsmith.engine.errors import BadInputError, BitsmithError, UnsupportedModelError

from .params import SamplingParams
from .template import PLAIN_STOPS, PLAIN_TEMPLATE, render_template

log = logging.getLogger(__name__)

_INSTALL_HINT = ("install it with `pip install llama-cpp-python` (CUDA: CMAKE_ARGS=-DGGML_CUDA=on, Metal is the "
                 "default on macOS), or chat with --backend native")

# llama.cpp log lines, kept so load failures can be explained (its own callback prints to stderr only).
_LOG: collections.deque[str] = collections.deque(maxlen=200)
_LOG_LOCK = threading.Lock()
_LOG_CALLBACK: Any = None


def import_llama_cpp() -> Any:
    """The llama_cpp module, or UnsupportedModelError saying how to install it."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise UnsupportedModelError(f"the llama.cpp backend is not installed ({exc})", _INSTALL_HINT) from exc
    except OSError as exc:  # the shared library is there but cannot be loaded (wrong CUDA, missing deps)
        raise UnsupportedModelError(
            f"llama-cpp-python is installed but its library cannot be loaded: {exc}",
            "reinstall llama-cpp-python for this machine, or chat with --backend native",
        ) from exc
    _install_log_capture(llama_cpp)
    return llama_cpp


def _install_log_capture(llama_cpp: Any) -> None:
    global _LOG_CALLBACK
    if _LOG_CALLBACK is not None:
        return

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        with _LOG_LOCK:
            _LOG.append(text.decode("utf-8", "replace").rstrip("\n"))

    _LOG_CALLBACK = callback  # keep a reference: llama.cpp holds only the C pointer
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


def _recent_log() -> list[str]:
    with _LOG_LOCK:
        return [line for line in _LOG if line.strip()]


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def _read_kv(path: Path, wanted: set[str] | None, sizes: bool = False) -> dict[str, Any]:
    """The header keys in `wanted` (stops once they are found; None: read every key). With `sizes`, also the
    tensor table, returning "_expected_bytes": the file size its tensors need. ValueError on a malformed header."""
    import struct

    found: dict[str, Any] = {}
    with open(path, "rb") as f:

        def take(fmt: str) -> Any:
            size = struct.calcsize(fmt)
            data = f.read(size)
            if len(data) != size:
                raise ValueError("the header ends early")
            return struct.unpack(fmt, data)[0]

        def string() -> str:
            n = take("<Q")
            if n > 1 << 24:
                raise ValueError(f"a header string claims {n} bytes")
            data = f.read(n)
            if len(data) != n:
                raise ValueError("the header ends early")
            return data.decode("utf-8", "replace")

        def value(vtype: int) -> Any:
            if vtype in _SCALARS:
                return take(_SCALARS[vtype])
            if vtype == 8:
                return string()
            if vtype == 9:
                itype, n = take("<I"), take("<Q")
                if itype in _SCALARS:  # skip numeric arrays without decoding them
                    f.seek(n * struct.calcsize(_SCALARS[itype]), 1)
                    return None
                return [value(itype) for _ in range(n)] if n < 1 << 24 else None
            raise ValueError(f"unknown value type {vtype}")

        if f.read(4) != b"GGUF":
            raise ValueError("no GGUF magic")
        version = take("<I")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} is not one llama.cpp reads")
        n_tensors = take("<Q")
        n_kv = take("<Q")
        for _ in range(min(n_kv, 1 << 20)):
            key = string()
            v = value(take("<I"))
            if wanted is None or key in wanted:
                found[key] = v
                if wanted is not None and key == "general.architecture":
                    wanted = wanted | {f"{v}.context_length", f"{v}.block_count"}
                if wanted is not None and wanted <= set(found):
                    break
        if sizes:
            found["_expected_bytes"] = _tensor_table_end(f, take, string, n_tensors,
                                                         int(found.get("general.alignment") or 32))
    return found


def _tensor_table_end(f: Any, take: Any, string: Any, n_tensors: int, align: int) -> int:
    """Read the tensor infos after the key/values; return the byte size the file must have."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    end = 0
    for _ in range(n_tensors):
        string()
        dims = [take("<Q") for _ in range(take("<I"))]
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(take("<I"))]
        offset = take("<Q")
        elements = 1
        for d in dims:
            elements *= d
        end = max(end, offset + elements // block * size)
    data_start = -(-f.tell() // align) * align
    return data_start + end


def read_gguf_header(path: Path) -> dict[str, Any]:
    """Architecture, context length and block count from a GGUF header; BadInputError if it is not a GGUF."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc}", "check the path and its permissions") from exc
    if magic != b"GGUF":
        raise BadInputError(f"{path.name} is not a GGUF file (it does not start with the GGUF magic bytes)",
                            "give a .gguf model file, or export one with `bitsmith export MODEL --gguf OUT.gguf`")
    try:
        kv = _read_kv(path, {"general.architecture"})
    except (ValueError, OSError, UnicodeError) as exc:
        raise BadInputError(f"{path.name} is damaged or truncated ({exc})",
                            "download or export the file again") from exc
    arch = kv.get("general.architecture")
    return {"architecture": arch, "context_length": kv.get(f"{arch}.context_length"),
            "block_count": kv.get(f"{arch}.block_count")}


def check_gguf_file(path: Path) -> None:
    """Read the header and tensor table; BadInputError if they are damaged or the file is shorter than they say."""
    try:
        expected = _read_kv(path, None, sizes=True)["_expected_bytes"]
    except Exception as exc:  # noqa: BLE001 - a damaged header fails in many ways
        raise BadInputError(f"{path.name} is damaged ({type(exc).__name__}: {exc})",
                            "download or export the file again") from exc
    actual = path.stat().st_size
    if actual < expected:
        raise BadInputError(f"{path.name} is truncated: its tensors need {expected} bytes, the file has {actual}",
                            "the download or export did not finish: download or export the file again")


def _explain_load_failure(path: Path, exc: Exception) -> BitsmithError:
    """Turn llama.cpp's "Failed to load model" into a message the user can act on."""
    lines = _recent_log()
    header = read_gguf_header(path)  # raises BadInputError for a non-GGUF or damaged header
    arch = header.get("architecture")
    if not any("unknown model architecture" in ln for ln in lines):
        check_gguf_file(path)  # a truncated file: say so rather than quoting llama.cpp
    unknown = [ln for ln in lines if "unknown model architecture" in ln]
    if unknown:
        import llama_cpp

        version = getattr(llama_cpp, "__version__", "?")
        return UnsupportedModelError(
            f"llama.cpp (llama-cpp-python {version}) cannot run architecture {arch!r}: {unknown[-1].strip()}",
            "update llama-cpp-python, or chat with --backend native on the original model folder",
        )
    errors = [ln.strip() for ln in lines if "error" in ln.lower() or "failed" in ln.lower()]
    detail = "; ".join(errors[-3:]) or str(exc)
    return BadInputError(f"llama.cpp could not load {path.name} (architecture {arch!r}): {detail}"[:600],
                         "the file may be damaged or incomplete: download or export it again")


class _EndOfGeneration:
    """`token in eos` for llama.cpp: its vocabulary knows every end-of-generation token (eos, eot, ...)."""

    def __init__(self, llama_cpp: Any, vocab: Any, fallback: set[int]) -> None:
        self._is_eog = llama_cpp.llama_vocab_is_eog if vocab is not None else None
        self._vocab, self._fallback = vocab, fallback

    def __contains__(self, token: object) -> bool:
        if self._is_eog is not None:
            return bool(self._is_eog(self._vocab, int(token)))  # type: ignore[arg-type]
        return token in self._fallback


class LlamaCppBackend:
    """The chat-session backend over llama-cpp-python (see engine/runtime/session.py's Backend)."""

    name = "llama.cpp"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        n_ctx: int | None = None,
        n_gpu_layers: int | str = "auto",
        n_threads: int | None = None,
        logits_all: bool = False,
        verbose: bool = False,
    ) -> None:
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise BadInputError(f"GGUF file {self.path} does not exist", "check the path")
        if self.path.suffix.lower() != ".gguf":
            raise BadInputError(f"{self.path.name} is not a .gguf file: the llama.cpp backend runs GGUF models",
                                "export one with `bitsmith export MODEL --gguf OUT.gguf`, or use --backend native")
        llama_cpp = import_llama_cpp()
        header = read_gguf_header(self.path)
        limit = int(header.get("context_length") or 4096)
        if n_ctx is not None and n_ctx > limit:
            raise BadInputError(f"the model supports a context of {limit} tokens, {n_ctx} was asked for",
                                f"use --ctx {limit} or less")
        self.n_ctx = int(n_ctx or min(limit, 4096))
        self.offload_reason = ""
        if n_gpu_layers == "auto":
            n_gpu_layers = self._auto_gpu_layers(llama_cpp)
        self.n_gpu_layers = int(n_gpu_layers)
        threads = n_threads or _default_threads()
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(self.path), n_ctx=self.n_ctx, n_gpu_layers=self.n_gpu_layers, n_threads=threads,
                n_threads_batch=threads, logits_all=logits_all, verbose=verbose,
            )
        except (ValueError, RuntimeError) as exc:
            raise _explain_load_failure(self.path, exc) from exc
        meta = dict(self.llm.metadata)
        self.metadata = meta
        self.chat_template = meta.get("tokenizer.chat_template") or None
        self.has_chat_template = self.chat_template is not None
        self.default_stops: tuple[str, ...] = () if self.has_chat_template else PLAIN_STOPS
        vocab = getattr(getattr(self.llm, "_model", None), "vocab", None)
        self.eos_ids = _EndOfGeneration(llama_cpp, vocab, {self.llm.token_eos()})  # type: ignore[assignment]
        self._specials = {
            "bos_token": self._token_text(self.llm.token_bos()),
            "eos_token": self._token_text(self.llm.token_eos()),
        }
        self.threads = threads
        # SentencePiece vocabularies mark word starts with a space that the HF decoder strips from a text's start
        self._strip_space = (meta.get("tokenizer.ggml.model") == "llama"
                             and str(meta.get("tokenizer.ggml.add_space_prefix", "true")).lower() != "false")

    def _auto_gpu_layers(self, llama_cpp: Any) -> int:
        from bitsmith.engine.hardware import detect
        from bitsmith.engine.modelinfo import ModelInfo

        from .offload import choose_gpu_layers

        gpu_build = bool(llama_cpp.llama_supports_gpu_offload())
        if not gpu_build:
            self.offload_reason = "this llama-cpp-python build is CPU-only"
            return 0
        try:
            info = ModelInfo.from_gguf(self.path)
            choice = choose_gpu_layers(info, self.path.stat().st_size, detect(), self.n_ctx, gpu_build)
        except BitsmithError as exc:  # an architecture the planner does not know: let llama.cpp try it all
            self.offload_reason = f"no plan for this model ({exc}); offloading every layer"
            return -1
        self.offload_reason = choice.reason
        return choice.n_gpu_layers

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self.llm.detokenize([token], special=True).decode("utf-8", "replace")

    # -- Backend API ---------------------------------------------------------------------------------
    def render(self, messages: list[dict[str, str]]) -> list[int]:
        """Prompt ids: the GGUF's chat template (or PLAIN_TEMPLATE) rendered, special tokens parsed."""
        template = self.chat_template or PLAIN_TEMPLATE
        text = render_template(template, messages, special_tokens=self._specials)
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def decode(self, ids: list[int]) -> str:
        """Text of `ids` (special tokens left out), as the HF tokenizer decodes it."""
        text = self.llm.detokenize(list(ids), special=False).decode("utf-8", "replace")
        return text[1:] if self._strip_space and text.startswith(" ") else text

    def generate(
        self, prompt_ids: list[int], params: SamplingParams, should_stop: Callable[[], bool] | None = None
    ) -> Iterator[int]:
        """Tokens from llama.cpp's sampler; its KV cache keeps the prefix shared with the previous turn."""
        self.llm.last_n_tokens_size = params.repeat_last_n
        self.llm.set_seed(params.seed if params.seed is not None else random.randrange(2**31))
        if params.seed is not None or self._prompt_is_cached(prompt_ids):
            # The same request must give the same answer (a seeded one, or a regenerate). When the whole prompt
            # is already cached, llama-cpp-python re-evaluates its last token on its own, whose logits differ
            # from the whole-prompt batch in the last bits: that flipped a seeded draw at temperature 1 (CI,
            # 2026-11-22) and a greedy answer on regenerate. Evaluate the whole prompt instead. A new turn
            # (a longer prompt) still reuses the cached conversation.
            self.llm.reset()
        yield from self.llm.generate(
            list(prompt_ids), top_k=params.top_k, top_p=params.top_p, min_p=params.min_p,
            temp=0.0 if params.greedy else params.temperature, repeat_penalty=params.repetition_penalty,
            reset=True,
        )

    def _prompt_is_cached(self, prompt_ids: list[int]) -> bool:
        """Whether the KV cache already holds all of `prompt_ids` (a regenerate or a replayed request)."""
        n = int(getattr(self.llm, "n_tokens", 0) or 0)
        cached = getattr(self.llm, "_input_ids", None)
        if cached is None or not prompt_ids or len(prompt_ids) > n:
            return False
        return [int(t) for t in cached[: len(prompt_ids)]] == [int(t) for t in prompt_ids]

    def logits(self, ids: list[int]):  # noqa: ANN201 - numpy array [len(ids), vocab]
        """Logits of every position (needs logits_all=True at load), for fidelity checks."""
        import numpy as np

        if not self.llm._logits_all:  # noqa: SLF001 - llama-cpp-python exposes no getter
            raise ValueError("load the backend with logits_all=True to read every position's logits")
        self.llm.reset()
        self.llm.eval(list(ids))
        return np.array(self.llm.scores[: len(ids)], dtype=np.float32)

    def describe(self) -> dict:
        """Backend, file, context, GPU layers and why."""
        return {
            "backend": self.name, "model": str(self.path), "n_ctx": self.n_ctx, "n_gpu_layers": self.n_gpu_layers,
            "offload": self.offload_reason, "threads": self.threads,
            "architecture": self.metadata.get("general.architecture"), "chat_template": self.has_chat_template,
        }

    def close(self) -> None:
        """Free the model."""
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()
            self.llm = None


def _default_threads() -> int:
    """Physical cores (llama.cpp's default of half the logical cores starves small machines)."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except Exception:  # noqa: BLE001
        n = None
    return max(int(n or os.cpu_count() or 1), 1)


def perplexity(backend: LlamaCppBackend, ids: list[int], window: int = 512) -> tuple[float, int]:
    """(perplexity, scored tokens) of llama.cpp over `ids` in disjoint windows, like engine/eval/perplexity.py."""
    import numpy as np

    total, count = 0.0, 0
    for begin in range(0, max(len(ids) - 1, 1), window):
        chunk = ids[begin : begin + window]
        if len(chunk) < 2:
            break
        logits = backend.logits(chunk)[:-1].astype(np.float64)
        top = logits.max(axis=1, keepdims=True)
        logz = (top[:, 0] + np.log(np.exp(logits - top).sum(axis=1)))
        target = logits[np.arange(len(chunk) - 1), chunk[1:]]
        total += float((logz - target).sum())
        count += len(chunk) - 1
    return math.exp(total / count), count
