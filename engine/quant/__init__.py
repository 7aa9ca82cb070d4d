"""Quantized weight formats: specs and bpw accounting (torch-free), quantizers, and QuantLinear.

`spec`, `mix` and `bpw` are imported eagerly and never import torch, so a planner process can use
`from bitsmith.engine.quant import parse_spec, layer_bits` without torch; the torch-based names
below are imported on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

from .bpw import KeptTensor, LayerBits, MixedLayerBits, ModelBits, channel_mix_bits, layer_bits, model_bits
from .mix import ChannelMix, parse_format
from .spec import INT2_G64, INT4_G128, PRESETS, QuantSpec, parse_spec

_LAZY = {
    "QuantLinear": ".linear",
    "ChannelMixLinear": ".mixed_linear",
    "QuantizedWeight": ".quantize",
    "quantize_weight": ".quantize",
    "dequantize_weight": ".quantize",
    "rtn_quantize": ".rtn",
    "rtn_stats": ".rtn",
    "quantize_codes": ".rtn",
    "hqq_refine": ".hqq",
    "pack_codes": ".pack",
    "unpack_codes": ".pack",
}

__all__ = [
    "INT2_G64",
    "INT4_G128",
    "PRESETS",
    "ChannelMix",
    "KeptTensor",
    "LayerBits",
    "MixedLayerBits",
    "ModelBits",
    "QuantSpec",
    "channel_mix_bits",
    "layer_bits",
    "model_bits",
    "parse_format",
    "parse_spec",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
