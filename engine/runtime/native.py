"""The native backend: a Bitsmith folder (or any Hugging Face causal LM) generating in torch.

On NVIDIA the model stays quantized: QuantLinear runs the Triton kernels (GEMM path for the prompt, GEMV
for each new token) and the decode step is a replayed CUDA graph (engine/runtime/decoder.py). On the
CPU and Apple GPUs the QuantLinear torch path would dequantize every weight for every token, so the
quantized linears are dequantized once into plain linears (engine/quant/dense.py) when that copy fits
comfortably in memory; the arithmetic is the same, only faster.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bitsmith.engine.errors import BadInputError

from .decoder import CachedDecoder
from .params import SamplingParams
from .sampling import make_generator, sample_next
from .template import PLAIN_STOPS, PLAIN_TEMPLATE, TemplateError, render_template

log = logging.getLogger(__name__)

DEFAULT_MAX_CTX = 4096  # context when none is asked for (capped by the model's own limit)
DENSE_RAM_FRACTION = 0.5  # dequantize for CPU/MPS speed only if the copy takes at most this share of free RAM


def pick_device(device: str = "auto") -> torch.device:
    """`auto`: CUDA if available, else Apple MPS, else CPU; an explicit device must exist."""
    if device in ("auto", "", None):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError(f"device {device!r} was asked for, but torch sees no CUDA GPU",
                            "use --device cpu, or install a CUDA build of PyTorch")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise BadInputError("device 'mps' was asked for, but Apple's MPS backend is not available",
                            "use --device cpu")
    return dev


def pick_dtype(device: torch.device, config: Any) -> torch.dtype:
    """fp32 on CPU; on GPUs fp16, or bf16 where the model was trained in bf16 and the GPU supports it."""
    if device.type == "cpu":
        return torch.float32
    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if device.type == "cuda" and str(stored).endswith("bfloat16") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def default_n_ctx(config: Any, requested: int | None = None) -> int:
    """The context to allocate: `requested` (checked against the model's limit) or min(limit, 4096)."""
    limit = int(getattr(config, "max_position_embeddings", 0) or DEFAULT_MAX_CTX)
    if requested is None:
        return min(limit, DEFAULT_MAX_CTX)
    if requested < 64:
        raise BadInputError(f"a context of {requested} tokens is too small", "use --ctx 512 or more")
    if requested > limit:
        raise BadInputError(f"the model supports a context of {limit} tokens, {requested} was asked for",
                            f"use --ctx {limit} or less")
    return int(requested)


def _quantized(model: nn.Module) -> bool:
    from bitsmith.engine.quant.linear import QuantLinear

    return any(isinstance(m, QuantLinear) for m in model.modules())


def _densify(model: nn.Module, device: torch.device, dtype: torch.dtype) -> tuple[nn.Module, bool]:
    """Dequantize once for CPU/MPS when the copy fits DENSE_RAM_FRACTION of free RAM; (model, densified)."""
    from bitsmith.engine.quant.dense import dense_copy
    from bitsmith.engine.quant.linear import QuantLinear

    weights = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, QuantLinear))
    need = weights * (4 if device.type == "cpu" else 2)
    try:
        import psutil

        free = psutil.virtual_memory().available
    except Exception:  # noqa: BLE001 - no psutil: be careful
        free = 0
    if need > DENSE_RAM_FRACTION * free:
        log.warning("keeping the quantized layers as they are on %s (a dequantized copy needs %.1f GiB): slower",
                    device.type, need / 2**30)
        return model, False
    dense = dense_copy(model.cpu()).to(device=device, dtype=dtype)
    return dense, True


class NativeBackend:
    """The chat-session backend over a torch model (see engine/runtime/session.py's Backend)."""

    name = "native"

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        n_ctx: int | None = None,
        source: str = "",
        meta: dict | None = None,
        cuda_graph: bool = True,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.source = source
        self.meta = meta or {}
        self.n_ctx = default_n_ctx(model.config, n_ctx)
        self.device = next(model.parameters()).device
        self.decoder = CachedDecoder(model, self.n_ctx, cuda_graph=cuda_graph)
        self.chat_template = getattr(tokenizer, "chat_template", None) or None
        self.has_chat_template = self.chat_template is not None
        self.default_stops: tuple[str, ...] = () if self.has_chat_template else PLAIN_STOPS
        self.eos_ids = frozenset(self._eos_ids())
        self.densified = False

    @classmethod
    def load(
        cls,
        source: str,
        *,
        device: str = "auto",
        n_ctx: int | None = None,
        trust_remote_code: bool = False,
        cuda_graph: bool = True,
        dense: bool = True,
    ) -> NativeBackend:
        """Load a Bitsmith folder, an HF folder, a .gguf file, a Hub id or 'bundled' for chatting."""
        from transformers import AutoConfig

        from bitsmith.engine.model import load_model, resolve_source
        from bitsmith.engine.quant.store import is_quantized_folder, load_quantized

        dev = pick_device(device)
        source = str(source)
        if is_quantized_folder(source):
            dtype = pick_dtype(dev, AutoConfig.from_pretrained(source))
            saved = load_quantized(source, device="cpu" if dev.type != "cuda" else str(dev), dtype=dtype)
            model, tok, meta = saved.model, saved.tokenizer, saved.meta
        else:
            resolved = resolve_source(source)
            cfg = None
            if Path(resolved).is_dir():
                try:
                    cfg = AutoConfig.from_pretrained(resolved, trust_remote_code=trust_remote_code)
                except (OSError, ValueError):
                    cfg = None
            dtype = pick_dtype(dev, cfg)
            model, tok = load_model(source, dtype=dtype, trust_remote_code=trust_remote_code,
                                    device="cpu" if dev.type != "cuda" else str(dev))
            meta = {}
        densified = False
        if dev.type != "cuda":
            if dense and _quantized(model):
                model, densified = _densify(model, dev, dtype)
            model = model.to(dev)
        backend = cls(model, tok, n_ctx=n_ctx, source=source, meta=meta, cuda_graph=cuda_graph)
        backend.densified = densified
        return backend

    # -- Backend API ---------------------------------------------------------------------------------
    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        gen = getattr(self.model, "generation_config", None)
        for value in (getattr(gen, "eos_token_id", None), getattr(self.tokenizer, "eos_token_id", None)):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
        return ids

    def render(self, messages: list[dict[str, str]]) -> list[int]:
        """Prompt ids: the tokenizer's chat template (or PLAIN_TEMPLATE), tokenized without extra specials."""
        if self.has_chat_template:
            try:
                text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except TemplateError:
                raise
            except Exception as exc:  # jinja2's TemplateError, raise_exception(...) in the template
                raise TemplateError(f"the chat template refused the conversation: {exc}",
                                    "check the roles (some templates need user/assistant turns to alternate)") from exc
        else:
            text = render_template(PLAIN_TEMPLATE, messages)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        """Text of `ids` without special tokens (no clean-up of spaces: streaming needs exact prefixes)."""
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def generate(
        self, prompt_ids: list[int], params: SamplingParams, should_stop: Callable[[], bool] | None = None
    ) -> Iterator[int]:
        """Prefill the prompt (reusing the cached prefix), then sample and feed one token at a time."""
        gen = make_generator(self.device, params.seed)
        logits = self.decoder.prefill(list(prompt_ids), should_stop)
        if logits is None:
            return
        history = list(prompt_ids)
        penalise = params.repetition_penalty != 1.0 and params.repeat_last_n > 0
        while True:
            with torch.inference_mode():
                recent = (torch.tensor(history[-params.repeat_last_n :], device=self.device) if penalise else None)
                tok = sample_next(logits, params, gen, recent)
            yield tok
            history.append(tok)
            if len(history) >= self.n_ctx:
                return
            logits = self.decoder.step(tok)

    def logits(self, ids: list[int]) -> torch.Tensor:
        """Full-sequence logits [len(ids), vocab] in fp32 (for fidelity checks), without the cache."""
        with torch.inference_mode():
            t = torch.tensor([ids], dtype=torch.long, device=self.device)
            return self.model(input_ids=t).logits[0].float()

    def describe(self) -> dict:
        """Backend, model, device, dtype, context and whether the model is quantized / CUDA-graphed."""
        bpw = (self.meta.get("bpw") or {}).get("quantized_linears")
        return {
            "backend": self.name, "model": self.source, "device": str(self.device),
            "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""), "n_ctx": self.n_ctx,
            "quantized": _quantized(self.model) or self.densified, "bpw": bpw, "dequantized_once": self.densified,
            "cuda_graph": self.decoder.use_graph, "chat_template": self.has_chat_template,
        }

    def close(self) -> None:
        """Drop the model and its cache."""
        self.decoder.reset()
        self.model = None  # type: ignore[assignment]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
