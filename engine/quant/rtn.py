"""Round-to-nearest quantization per group: min-max statistics, an optional clipping search, and codes.

Asymmetric min-max: s = (max - min) / (2^b - 1), z = -min / s. With integer zero-points the range is
first widened to contain 0 (GPTQ's choice) so that z = round(-min / s) lands in [0, 2^b - 1] and every
weight is within half a step of the grid. Symmetric: z = 2^(b-1), s = 2·max|w| / (2^b - 1).

The clipping search (`clip=True`) tries shrinking each group's range by ratios 1, 1 - 0.5/n, ..., 0.5
and keeps, per group, the ratio with the least squared error: clipping a few outliers buys a finer
step for the rest of the group, and costs n quantize passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .groups import (
    SCALE_FLOOR,
    fake_quant,
    from_grouped_stats,
    group_mask,
    group_sq_error,
    group_view,
    to_grouped_stats,
)
from .spec import QuantSpec

_CHUNK_ELEMENTS = 1 << 19  # weights per chunk of the clipping search (small temporaries are much faster on CPU)


@dataclass
class RTNResult:
    """Codes uint8 [N, K] and the fp32 statistics [G, N] they were rounded against."""

    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor


def _minmax(wg: torch.Tensor, spec: QuantSpec, shrink: float | torch.Tensor = 1.0):
    """Grouped min-max statistics [N, G, 1] after shrinking the range by `shrink`."""
    maxq = spec.maxq
    xmin = wg.amin(dim=-1, keepdim=True)
    xmax = wg.amax(dim=-1, keepdim=True)
    if not spec.asymmetric:
        amax = torch.maximum(xmin.abs(), xmax) * shrink
        s = (2.0 * amax / maxq).clamp_(min=SCALE_FLOOR)
        return s, torch.full_like(s, (maxq + 1) / 2)
    if spec.integer_zeros:
        xmin = xmin.clamp(max=0.0)
        xmax = xmax.clamp(min=0.0)
    xmin = xmin * shrink
    xmax = xmax * shrink
    s = ((xmax - xmin) / maxq).clamp_(min=SCALE_FLOOR)
    z = -xmin / s
    if spec.integer_zeros:
        z = torch.round(z).clamp_(0, maxq)
    return s, z


def rtn_stats(
    w: torch.Tensor, spec: QuantSpec, *, clip: bool = False, clip_steps: int = 20, max_shrink: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 scales and zeros [G, N] for weight [N, K]: min-max, or the best clipped range per group."""
    w = w.to(torch.float32)
    if not clip:
        s, z = _minmax(group_view(w, spec.group_size), spec)
        return from_grouped_stats(s), from_grouped_stats(z)
    mask = group_mask(w.shape[1], spec.group_size, w.device)
    rows = max(1, _CHUNK_ELEMENTS // w.shape[1])
    out_s, out_z = [], []
    for r0 in range(0, w.shape[0], rows):
        wg = group_view(w[r0 : r0 + rows], spec.group_size)
        s, z = _minmax(wg, spec)
        best = group_sq_error(wg, s, z, spec.maxq, mask)
        for i in range(1, clip_steps + 1):
            s_i, z_i = _minmax(wg, spec, 1.0 - max_shrink * i / clip_steps)
            err = group_sq_error(wg, s_i, z_i, spec.maxq, mask)
            better = (err < best).unsqueeze(-1)
            s = torch.where(better, s_i, s)
            z = torch.where(better, z_i, z)
            best = torch.minimum(err, best)
        out_s.append(s)
        out_z.append(z)
    return from_grouped_stats(torch.cat(out_s)), from_grouped_stats(torch.cat(out_z))


def quantize_codes(w: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Codes uint8 [N, K] = clamp(round(w / s + z), 0, 2^b - 1) against statistics [G, N] (any float dtype)."""
    n, k = w.shape
    wg = group_view(w.to(torch.float32), spec.group_size)
    s = to_grouped_stats(scales.to(torch.float32))
    z = to_grouped_stats(zeros.to(torch.float32))
    q, _ = fake_quant(wg, s, z, spec.maxq)
    return q.reshape(n, -1)[:, :k].to(torch.uint8)


def rtn_quantize(w: torch.Tensor, spec: QuantSpec, *, clip: bool = False) -> RTNResult:
    """Round-to-nearest quantization of weight [N, K]: codes and the fp32 statistics behind them."""
    scales, zeros = rtn_stats(w, spec, clip=clip)
    return RTNResult(codes=quantize_codes(w, scales, zeros, spec), scales=scales, zeros=zeros)
