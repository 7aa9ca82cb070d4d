"""Quantize one weight matrix into its stored form (`QuantizedWeight`) and back (`dequantize_weight`).

Pipeline: fp32 statistics (RTN min-max, optionally clipped, optionally refined by HQQ) -> storage of
the statistics (fp16, integer codes, or double quantization; engine/quant/stats.py) -> the weight
codes re-rounded against the *decoded* statistics, so rounding errors of the statistics are partly
absorbed by the codes -> packing (kernels/pack.py).

With double-quantized scales, each group tries the two log2 codes around its fp32 scale (zero-point
refitted to keep the group's centre) and keeps the one with the lower squared weight error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from bitsmith.engine.errors import BadInputError
from bitsmith.kernels import reference
from bitsmith.kernels.pack import pack_codes

from . import stats as st
from .groups import group_mask, group_sq_error, group_view, to_grouped_stats
from .hqq import hqq_refine
from .rtn import quantize_codes, rtn_stats
from .spec import QuantSpec, parse_spec

METHODS = ("rtn", "hqq")


@dataclass
class QuantizedWeight:
    """A packed weight: int32 codes, the stored statistics tensors, and the fp16 statistics they decode to."""

    qweight: torch.Tensor
    stored: dict[str, torch.Tensor]
    scales: torch.Tensor
    zeros: torch.Tensor
    spec: QuantSpec
    in_features: int
    out_features: int
    name: str = field(default="")

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Everything stored on disk for this weight: qweight plus the statistics tensors."""
        return {"qweight": self.qweight, **self.stored}


def _describe(name: str) -> str:
    return f"layer {name!r}" if name else "weight"


def check_weight(weight: torch.Tensor, name: str = "") -> None:
    """Raise BadInputError (a ValueError) naming the layer unless weight is a finite, non-empty 2-D float."""
    what = _describe(name)
    if not isinstance(weight, torch.Tensor):
        raise BadInputError(f"{what}: expected a torch.Tensor, got {type(weight).__name__}")
    shape = tuple(weight.shape)
    if weight.dim() != 2:
        raise BadInputError(
            f"{what}: weight must be 2-D [out_features, in_features], got shape {shape}",
            hint="only linear layers' weights can be quantized",
        )
    if weight.numel() == 0:
        raise BadInputError(f"{what}: weight of shape {shape} is empty", hint="check the model file")
    if not weight.is_floating_point():
        raise BadInputError(f"{what}: weight of shape {shape} has dtype {weight.dtype}, expected a float type")
    finite = torch.isfinite(weight)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        nan = int(torch.isnan(weight).sum())
        raise BadInputError(
            f"{what}: weight of shape {shape} has {bad} non-finite values ({nan} NaN, {bad - nan} Inf)",
            hint="the model file is corrupt or was saved after a diverged training run; re-download it",
        )


def _refit_zero(z: torch.Tensor, s_old: torch.Tensor, s_new: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Zero-point for a changed scale that keeps the group's centre value (maxq/2 - z)·s in place."""
    c = spec.maxq / 2
    z_new = c - (c - z) * s_old / s_new
    if spec.integer_zeros:
        z_new = torch.round(z_new).clamp_(0, spec.maxq)
    elif not spec.asymmetric:
        z_new = z
    return z_new


def _store_scales(
    w: torch.Tensor, s: torch.Tensor, z: torch.Tensor, spec: QuantSpec
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Scale storage fields, the decoded fp16 scales, and the zeros refitted to them (fp32)."""
    if not spec.double_quant_scales:
        s16 = s.clamp(max=st.FP16_MAX).to(torch.float16)
        return {"scales": s16}, s16, _refit_zero(z, s, s16.to(torch.float32), spec)
    bits = spec.scale_bits
    meta = st.scale_grid(s, bits)
    pos = st.scale_position(s, meta, bits)
    wg = group_view(w, spec.group_size)
    mask = group_mask(w.shape[1], spec.group_size, w.device)
    best_codes = best_err = None
    for codes in (torch.floor(pos), torch.ceil(pos)):
        codes = codes.to(torch.uint8)
        s_c = st.decode_scales(codes, meta).to(torch.float32)
        z_c = _refit_zero(z, s, s_c, spec)
        err = group_sq_error(wg, to_grouped_stats(s_c), to_grouped_stats(z_c), spec.maxq, mask).t()
        if best_codes is None:
            best_codes, best_err = codes, err
        else:
            best_codes = torch.where(err < best_err, codes, best_codes)
    s16 = st.decode_scales(best_codes, meta)
    return {"scale_codes": best_codes, "scale_meta": meta}, s16, _refit_zero(z, s, s16.to(torch.float32), spec)


def _store_zeros(z: torch.Tensor, spec: QuantSpec) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Zero storage fields and the decoded fp16 zeros."""
    if not spec.asymmetric:
        return {}, torch.full_like(z, (spec.maxq + 1) // 2, dtype=torch.float16)
    if spec.float_zeros:
        z16 = z.to(torch.float16)
        return {"zeros": z16}, z16
    codes, meta = st.encode_zeros(z, spec)
    fields = {"zero_codes": codes} if meta is None else {"zero_codes": codes, "zero_meta": meta}
    return fields, st.decode_zeros(codes, meta)


def quantize_weight(
    weight: torch.Tensor,
    spec: QuantSpec | str,
    method: str = "rtn",
    name: str = "",
    *,
    clip: bool = False,
    hqq_options: dict | None = None,
) -> QuantizedWeight:
    """Quantize a linear weight [N, K] (= out, in) to `spec` by "rtn" or "hqq" (RTN start refined by HQQ).

    `clip` enables RTN's clipping search (also the HQQ starting point). It is off by default: it always
    lowers the weight MSE, but clipping outlier weights can raise a model's perplexity, so judge it
    end to end. Bad input -> BadInputError
    naming `name` and the shape. Works on the weight's device.
    """
    spec = parse_spec(spec)
    check_weight(weight, name)
    if method not in METHODS:
        raise ValueError(f"unknown quantization method {method!r}: choose one of {METHODS}")
    try:
        spec.require_packable()
    except ValueError as exc:
        raise BadInputError(f"{_describe(name)}: {exc}", hint="choose a 2-, 4- or 8-bit format") from None
    w = weight.detach().to(torch.float32)
    n, k = w.shape
    s, z = rtn_stats(w, spec, clip=clip)
    if method == "hqq":
        s, z = hqq_refine(w, s, z, spec, **(hqq_options or {}))
    if float(s.max()) > st.FP16_MAX / 2:
        raise BadInputError(
            f"{_describe(name)}: weights of shape {tuple(weight.shape)} reach {float(w.abs().max()):.3g}, "
            "too large for fp16 scales",
            hint="this layer cannot be quantized in this format; keep it in 16 bits",
        )
    scale_fields, s16, z = _store_scales(w, s, z, spec)
    zero_fields, z16 = _store_zeros(z, spec)
    stored = st.stored_stats(spec, **scale_fields, **zero_fields)
    codes = quantize_codes(w, s16, z16, spec)
    return QuantizedWeight(
        qweight=pack_codes(codes, spec.bits),
        stored=stored,
        scales=s16,
        zeros=z16,
        spec=spec,
        in_features=k,
        out_features=n,
        name=name,
    )


def dequantize_weight(qw: QuantizedWeight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The weight [N, K] a QuantizedWeight stands for (the kernels' reference dequantization, in fp32)."""
    w = reference.dequantize(qw.qweight, qw.scales, qw.zeros, qw.spec.bits, qw.spec.group_size, qw.in_features)
    return w.to(dtype)
