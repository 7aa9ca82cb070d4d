"""Storage of group statistics: fp16, exact integer zero codes, or double quantization with per-row meta.

Stored tensors (state-dict keys of engine/quant/linear.py), for G groups and N output rows:

* ``scales`` fp16 [G, N] — when scale_bits == 16;
* ``scale_codes`` int32 [G, ceil(N/(32//S))] + ``scale_meta`` fp16 [2, N] — double-quantized scales: codes in
  the log2 domain, ``log2 s = offset[n] + code · step[n]`` (meta row 0 = offset, row 1 = step);
* ``zeros`` fp16 [G, N] — float zero-points (zero_bits == 16);
* ``zero_codes`` int32 [G, ceil(N/(32//b))] — integer zero-points, the exact values in [0, 2^b - 1];
* ``zero_codes`` int32 [G, ceil(N/(32//Z))] + ``zero_meta`` fp16 [2, N] — double-quantized fractional zeros,
  ``z = offset[n] + code · step[n]``.

Statistic codes are packed along N, least significant bits first, as GPTQ packs its qzeros: word
[g, j] holds codes [g, j·p : (j+1)·p] with p = 32 / width. The second-level grid of each row is fitted
so it covers the row's range: offset rounded down to fp16, step rounded up.

Decoding is a pure function of the stored tensors: it runs on the CPU in float64 and rounds once to
fp16, so the materialised fp16 statistics are bit-identical whatever device or SIMD path loads them.
"""

from __future__ import annotations

import math

import torch

from bitsmith.kernels.pack import pack_codes, packed_rows, unpack_codes

from .groups import SCALE_FLOOR
from .spec import QuantSpec

FP16_MAX = 65504.0


def _fp16_down(x: torch.Tensor) -> torch.Tensor:
    """Largest fp16 value <= x (x fp32)."""
    h = x.to(torch.float16)
    return torch.where(h.to(torch.float32) > x, torch.nextafter(h, torch.full_like(h, -float("inf"))), h)


def _fp16_up(x: torch.Tensor) -> torch.Tensor:
    """Smallest fp16 value >= x (x fp32)."""
    h = x.to(torch.float16)
    return torch.where(h.to(torch.float32) < x, torch.nextafter(h, torch.full_like(h, float("inf"))), h)


def pack_stat_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack statistic codes [G, N] along N into int32 [G, ceil(N·bits/32)] (GPTQ qzeros layout)."""
    return pack_codes(codes, bits).t().contiguous()


def unpack_stat_codes(packed: torch.Tensor, bits: int, out_features: int) -> torch.Tensor:
    """Inverse of `pack_stat_codes`: int32 [G, W] -> uint8 codes [G, N]."""
    return unpack_codes(packed.t().contiguous(), bits, out_features)


def fit_grid(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-row affine grid covering values [G, N]: fp16 meta [2, N] = (offset, step) with 2^bits levels."""
    v = values.to(torch.float32)
    lo = v.amin(dim=0)
    hi = v.amax(dim=0)
    off = _fp16_down(lo)
    step = _fp16_up((hi - off.to(torch.float32)).clamp(min=0.0) / ((1 << bits) - 1))
    return torch.stack([off, step])


def grid_position(values: torch.Tensor, meta: torch.Tensor, bits: int) -> torch.Tensor:
    """Continuous code position (v - offset) / step of values [G, N] on a fitted grid, clamped to range."""
    off, step = meta.to(torch.float32)
    pos = (values.to(torch.float32) - off) / torch.where(step > 0, step, torch.ones_like(step))
    return torch.where(step > 0, pos, torch.zeros_like(pos)).clamp(0, (1 << bits) - 1)


def _decode_affine(codes: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """offset + code · step in float64 on the CPU (the deterministic part of every decode)."""
    off, step = meta.detach().to("cpu", torch.float64)
    return off + codes.detach().to("cpu", torch.float64) * step


def decode_scales(codes: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """fp16 scales [G, N] = 2^(offset + code·step), computed in float64 on the CPU, on codes' device."""
    return torch.exp2(_decode_affine(codes, meta)).to(torch.float16).to(codes.device)


def decode_zeros(codes: torch.Tensor, meta: torch.Tensor | None) -> torch.Tensor:
    """fp16 zeros [G, N]: the integer codes themselves (meta None), or offset + code·step."""
    if meta is None:
        return codes.to(torch.float16)
    return _decode_affine(codes, meta).to(torch.float16).to(codes.device)


def scale_grid(scales: torch.Tensor, bits: int) -> torch.Tensor:
    """Second-level meta [2, N] of log2-domain scale codes for positive scales [G, N].

    Groups at the scale floor (constant groups, whose scale does not matter) are left out of the
    row's range so that one dead group does not coarsen the grid of the whole row.
    """
    s = scales.to(torch.float32).clamp(min=SCALE_FLOOR)
    log_s = torch.log2(s)
    live = s > SCALE_FLOOR
    hi = torch.where(live, log_s, torch.full_like(log_s, -float("inf"))).amax(dim=0, keepdim=True)
    # Dead groups take the row's largest live value (or the floor when the whole row is dead).
    fill = torch.where(torch.isfinite(hi), hi, torch.full_like(hi, math.log2(SCALE_FLOOR)))
    return fit_grid(torch.where(live, log_s, fill), bits)


def scale_position(scales: torch.Tensor, meta: torch.Tensor, bits: int) -> torch.Tensor:
    """Continuous log2-domain code position of scales [G, N] on `meta`'s grid."""
    return grid_position(torch.log2(scales.to(torch.float32).clamp(min=SCALE_FLOOR)), meta, bits)


def encode_scales(scales: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest log2-domain codes uint8 [G, N] and meta fp16 [2, N] for positive scales [G, N]."""
    meta = scale_grid(scales, bits)
    return torch.round(scale_position(scales, meta, bits)).to(torch.uint8), meta


def encode_zeros(zeros: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Zero codes uint8 [G, N] and meta: exact integers (meta None) or affine `zero_bits` codes + meta."""
    if spec.integer_zeros:
        z = zeros.to(torch.float32)
        if z.numel() and (not torch.equal(z, torch.round(z)) or float(z.min()) < 0 or float(z.max()) > spec.maxq):
            raise ValueError(f"{spec.name}: integer zero-points must be whole numbers in [0, {spec.maxq}]")
        return z.to(torch.uint8), None
    if not spec.double_quant_zeros:
        raise ValueError(f"{spec.name}: zero-points are not stored as codes")
    meta = fit_grid(zeros, spec.zero_bits)
    codes = torch.round(grid_position(zeros, meta, spec.zero_bits)).to(torch.uint8)
    return codes, meta


def stored_stats(
    spec: QuantSpec,
    *,
    scales: torch.Tensor | None = None,
    scale_codes: torch.Tensor | None = None,
    scale_meta: torch.Tensor | None = None,
    zeros: torch.Tensor | None = None,
    zero_codes: torch.Tensor | None = None,
    zero_meta: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The statistics tensors as stored on disk for `spec` (codes packed; see the module docstring)."""
    out: dict[str, torch.Tensor] = {}
    if spec.double_quant_scales:
        out["scale_codes"] = pack_stat_codes(scale_codes, spec.scale_bits)
        out["scale_meta"] = scale_meta.to(torch.float16).contiguous()
    else:
        out["scales"] = scales.to(torch.float16).contiguous()
    if spec.float_zeros:
        out["zeros"] = zeros.to(torch.float16).contiguous()
    elif spec.integer_zeros:
        out["zero_codes"] = pack_stat_codes(zero_codes, spec.bits)
    elif spec.double_quant_zeros:
        out["zero_codes"] = pack_stat_codes(zero_codes, spec.zero_bits)
        out["zero_meta"] = zero_meta.to(torch.float16).contiguous()
    return out


def stat_shapes(spec: QuantSpec, out_features: int, in_features: int) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Shape and dtype of every stored statistics tensor of a [N, K] layer (what `stored_stats` returns)."""
    n, g = out_features, spec.groups(in_features)
    words = lambda bits: packed_rows(n, bits)  # noqa: E731
    out: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    if spec.double_quant_scales:
        out["scale_codes"] = ((g, words(spec.scale_bits)), torch.int32)
        out["scale_meta"] = ((2, n), torch.float16)
    else:
        out["scales"] = ((g, n), torch.float16)
    if spec.float_zeros:
        out["zeros"] = ((g, n), torch.float16)
    elif spec.integer_zeros:
        out["zero_codes"] = ((g, words(spec.bits)), torch.int32)
    elif spec.double_quant_zeros:
        out["zero_codes"] = ((g, words(spec.zero_bits)), torch.int32)
        out["zero_meta"] = ((2, n), torch.float16)
    return out


def materialize_stats(
    stored: dict[str, torch.Tensor], spec: QuantSpec, out_features: int, in_features: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """fp16 scales and zeros [G, N] that stored statistics stand for: a pure function of the stored tensors."""
    n, g = out_features, spec.groups(in_features)
    if spec.double_quant_scales:
        codes = unpack_stat_codes(stored["scale_codes"], spec.scale_bits, n)
        scales = decode_scales(codes, stored["scale_meta"])
    else:
        scales = stored["scales"].to(torch.float16)
    if not spec.asymmetric:
        zeros = torch.full((g, n), float((spec.maxq + 1) // 2), dtype=torch.float16, device=scales.device)
    elif spec.float_zeros:
        zeros = stored["zeros"].to(torch.float16)
    elif spec.integer_zeros:
        zeros = decode_zeros(unpack_stat_codes(stored["zero_codes"], spec.bits, n), None)
    else:
        codes = unpack_stat_codes(stored["zero_codes"], spec.zero_bits, n)
        zeros = decode_zeros(codes, stored["zero_meta"])
    return scales, zeros
