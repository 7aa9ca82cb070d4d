"""Per-family GGUF facts: llama.cpp architecture names, hyper-parameter keys and tensor adjustments.

Tensor names come from the gguf package's own HF → GGUF map (gguf.TensorNameMap), so only what differs
between families lives here: Llama's q/k row permutation (llama.cpp applies RoPE to interleaved pairs,
HF to halves), Gemma's norm weights (HF computes x·(1 + w), llama.cpp x·w, so the file stores 1 + w),
and the keys llama.cpp reads for each architecture.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bitsmith.engine.errors import UnsupportedModelError


@dataclass(frozen=True)
class Family:
    """How one HF model_type becomes a llama.cpp architecture."""

    arch: str  # llama.cpp's name, a gguf.MODEL_ARCH_NAMES value
    permute_qk: bool = False
    norm_shift: float = 0.0
    tied_output: bool = False  # llama.cpp never reads an output tensor for this family
    extra: Callable[[Any, Any], None] | None = None  # (writer, config) → more keys


def _gemma2_extra(writer: Any, config: Any) -> None:
    writer.add_attn_logit_softcapping(float(config.attn_logit_softcapping or 0.0))
    writer.add_final_logit_softcapping(float(config.final_logit_softcapping or 0.0))
    writer.add_sliding_window(int(config.sliding_window))


FAMILIES: dict[str, Family] = {
    "llama": Family("llama", permute_qk=True),
    "mistral": Family("llama", permute_qk=True),
    "qwen2": Family("qwen2"),
    "qwen3": Family("qwen3"),
    "gemma": Family("gemma", norm_shift=1.0, tied_output=True),
    "gemma2": Family("gemma2", norm_shift=1.0, tied_output=True, extra=_gemma2_extra),
}
"""HF model_type → family. Mistral uses llama.cpp's llama architecture, as llama.cpp's converter does."""


def family_for(config: Any) -> Family:
    """The family of a transformers config; UnsupportedModelError naming the supported ones otherwise."""
    model_type = getattr(config, "model_type", None)
    fam = FAMILIES.get(model_type)
    if fam is None:
        raise UnsupportedModelError(
            f"GGUF export does not support model type {model_type!r} yet",
            f"supported: {', '.join(sorted(FAMILIES))}; chat with the native backend instead",
        )
    if model_type == "mistral" and getattr(config, "sliding_window", None):
        max_pos = getattr(config, "max_position_embeddings", 0) or 0
        if config.sliding_window < max_pos:
            raise UnsupportedModelError(
                f"this Mistral uses sliding-window attention ({config.sliding_window} tokens), which llama.cpp's "
                "llama architecture does not apply", "chat with the native backend instead")
    if model_type in ("qwen2", "qwen3") and getattr(config, "use_sliding_window", False):
        raise UnsupportedModelError(f"{model_type} with sliding-window attention cannot be exported yet",
                                    "chat with the native backend instead")
    if model_type == "gemma2":
        scalar = getattr(config, "query_pre_attn_scalar", None)
        if scalar not in (None, config.head_dim):
            raise UnsupportedModelError(
                f"this Gemma-2 scales queries by 1/sqrt({scalar}) instead of 1/sqrt(head_dim={config.head_dim}); "
                "llama.cpp only handles that for the 27B model", "chat with the native backend instead")
    return fam


def head_dim(config: Any) -> int:
    """Per-head size (explicit in the config, else hidden / heads)."""
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def rope_params(config: Any) -> dict[str, Any]:
    """RoPE settings as a dict (transformers 5 keeps them in `rope_parameters`, older ones flat)."""
    params = dict(getattr(config, "rope_parameters", None) or {})
    if "full_attention" in params and isinstance(params["full_attention"], dict):
        params = dict(params["full_attention"])
    scaling = getattr(config, "rope_scaling", None)
    if isinstance(scaling, dict):
        params = {**scaling, **params}
    if "rope_theta" not in params and getattr(config, "rope_theta", None) is not None:
        params["rope_theta"] = config.rope_theta
    return params


def write_hparams(writer: Any, config: Any, fam: Family) -> np.ndarray | None:
    """Write the architecture keys; return llama3-style rope frequency factors when the model needs them."""
    import gguf

    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(int(config.num_attention_heads))
    writer.add_head_count_kv(int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    hd = head_dim(config)
    writer.add_key_length(hd)
    writer.add_value_length(hd)
    if fam.arch == "llama":
        writer.add_vocab_size(int(config.vocab_size))
        writer.add_rope_dimension_count(hd)
    rope = rope_params(config)
    if rope.get("rope_theta") is not None:
        writer.add_rope_freq_base(float(rope["rope_theta"]))
    kind = str(rope.get("rope_type") or rope.get("type") or "default").lower()
    factors = None
    if kind == "linear" and rope.get("factor"):
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif kind == "yarn" and rope.get("factor"):
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(rope["factor"]))
        writer.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))
    elif kind == "llama3":
        factors = llama3_rope_factors(rope, hd)
    elif kind != "default":
        raise UnsupportedModelError(f"RoPE scaling {kind!r} cannot be exported to GGUF yet",
                                    "chat with the native backend instead")
    if fam.extra is not None:
        fam.extra(writer, config)
    return factors


def llama3_rope_factors(rope: dict[str, Any], dim: int) -> np.ndarray:
    """The per-frequency factors llama.cpp reads from `rope_freqs.weight` for Llama-3.1-style scaling."""
    base = float(rope.get("rope_theta", 10000.0))
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor = float(rope.get("factor", 8.0))
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_ctx = float(rope.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


def qk_permutation(out_features: int, n_head: int) -> np.ndarray:
    """Row order llama.cpp expects for a q/k projection with `n_head` heads (convert_hf_to_gguf's permute)."""
    hd = out_features // n_head
    return np.arange(out_features).reshape(n_head, 2, hd // 2).swapaxes(1, 2).reshape(-1)
