"""Quantized weight formats: specs and bpw accounting (torch-free), quantizers, and QuantLinear.

`spec` and `bpw` are imported eagerly and never import torch, so a planner process can use
`from bitsmith.engine.quant import parse_spec, layer_bits` without torch; the torch-based names
below are imported on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

from .bpw import KeptTensor, LayerBits, ModelBits, layer_bits, model_bits
from .spec import INT2_G64, INT4_G128, PRESETS, QuantSpec, parse_spec

_LAZY = {
    "QuantLinear": ".linear",
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
    "KeptTensor",
    "LayerBits",
    "ModelBits",
    "QuantSpec",
    "layer_bits",
    "model_bits",
    "parse_spec",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
