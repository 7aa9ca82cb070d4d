"""Data-free refinement of group statistics with a half-quadratic solver (HQQ, Badri & Shaji 2023).

Problem: for each group, find the zero-point z (and optionally the scale s) minimising the sparsity-
promoting loss ||W - Q⁻¹(Q(W))||_p^p with p < 1, which tolerates a few large errors on outliers rather
than smearing error over every weight. Half-quadratic splitting adds an auxiliary error variable W_e
and alternates, with a penalty weight β that grows by κ each iteration:

1. codes          W_q = clamp(round(W / s + z), 0, 2^b - 1)
2. residual       W_e = shrink_p(W - (W_q - z)·s, β), the generalised soft-threshold of the lp prox:
                  shrink_p(x) = sign(x) · relu(|x| - |x|^(p-1) / β)
3. zero           z = mean_group(W_q - (W - W_e) / s)      (closed form of the quadratic sub-problem)
   optional scale the least-squares fit of W - W_e ≈ (W_q - z)·s for (s, z) jointly (`update_scale`)
4. optional       z = clamp(round(z), 0, 2^b - 1)          (integer zero-points, `integer_zeros`)
5. β ← κ·β

The paper updates only z (`update_scale=False`). Here the joint (s, z) update is the default: with
integer zero-points a z-only step almost always rounds back to the same integer, so it would change
nothing, and on heavy-tailed weights the joint fit also reconstructs float-zero formats better.

Unlike the reference implementation's single global early stop, every group keeps the iterate with
its lowest squared reconstruction error (starting from the RTN point), so refinement never makes a
group worse in L2, and the loop stops once no group improved for `patience` iterations.
Everything is vectorised over all groups of a chunk of rows.
"""

from __future__ import annotations

import torch

from .groups import (
    SCALE_FLOOR,
    fake_quant,
    from_grouped_stats,
    group_counts,
    group_mask,
    group_mean,
    group_view,
    to_grouped_stats,
)
from .spec import QuantSpec

_CHUNK_ELEMENTS = 1 << 19  # weights per chunk: small fp32 temporaries are reused by the allocator (faster on CPU)


def _shrink_lp(x: torch.Tensor, beta: float, p: float) -> torch.Tensor:
    """Generalised soft-thresholding: the proximal step of the lp (p <= 1) penalty with weight 1/beta."""
    if p == 1.0:
        return torch.sign(x) * torch.relu(x.abs() - 1.0 / beta)
    ax = x.abs()
    return torch.sign(x) * torch.relu(ax - torch.pow(ax + 1e-8, p - 1.0) / beta)


def _refine_chunk(
    wg: torch.Tensor,
    s: torch.Tensor,
    z: torch.Tensor,
    maxq: int,
    mask: torch.Tensor | None,
    counts: torch.Tensor,
    *,
    integer_zeros: bool,
    update_scale: bool,
    lp_norm: float,
    beta: float,
    kappa: float,
    iters: int,
    patience: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    best_s, best_z = s, z
    best_err: torch.Tensor | None = None
    stale = 0
    for it in range(iters + 1):
        q, wr = fake_quant(wg, s, z, maxq)
        err = (wg - wr).square()
        err = group_mean(err, mask, counts)
        if best_err is None:
            best_err = err
        else:
            better = err < best_err
            best_s = torch.where(better, s, best_s)
            best_z = torch.where(better, z, best_z)
            best_err = torch.minimum(err, best_err)
            stale = 0 if bool(better.any()) else stale + 1
            if stale >= patience:
                break
        if it == iters:
            break
        target = wg - _shrink_lp(wg - wr, beta, lp_norm)
        if update_scale:
            # Least squares of target ≈ s·q + b per group; z = -b / s. Degenerate groups keep their scale.
            mq = group_mean(q, mask, counts)
            mt = group_mean(target, mask, counts)
            dq = q - mq
            var = group_mean(dq * dq, mask, counts)
            cov = group_mean(dq * (target - mt), mask, counts)
            s_new = cov / var.clamp(min=1e-12)
            ok = (var > 1e-6) & (s_new > SCALE_FLOOR)
            s = torch.where(ok, s_new, s)
            z = mq - mt / s
        else:
            z = group_mean(q - target / s, mask, counts)
        if integer_zeros:
            z = torch.round(z).clamp_(0, maxq)
            if update_scale:  # refit s for the rounded z: least squares of target ≈ (q - z)·s
                d = q - z
                num = group_mean(d * target, mask, counts)
                den = group_mean(d * d, mask, counts)
                s_new = num / den.clamp(min=1e-12)
                s = torch.where((den > 1e-6) & (s_new > SCALE_FLOOR), s_new, s)
        beta *= kappa
    return best_s, best_z


def hqq_refine(
    w: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    spec: QuantSpec,
    *,
    integer_zeros: bool | None = None,
    update_scale: bool = True,
    lp_norm: float = 0.7,
    beta: float = 10.0,
    kappa: float = 1.01,
    iters: int = 20,
    patience: int = 3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Refine fp32 statistics [G, N] of weight [N, K] by HQQ; returns new fp32 (scales, zeros) [G, N].

    `integer_zeros` defaults to the spec's zero type. Symmetric specs have a fixed zero: ValueError.
    Defaults p = 0.7, β = 10, κ = 1.01, 20 iterations are the paper's; `update_scale` is explained above.
    """
    if not spec.asymmetric:
        raise ValueError("HQQ refines zero-points; a symmetric spec has none to refine (use method='rtn')")
    if not 0.0 < lp_norm <= 1.0:
        raise ValueError(f"lp_norm must be in (0, 1], got {lp_norm}")
    if integer_zeros is None:
        integer_zeros = spec.integer_zeros
    n, k = w.shape
    g = spec.group_size
    mask = group_mask(k, g, w.device)
    counts = group_counts(k, g, w.device)
    s_all = to_grouped_stats(scales.to(torch.float32))
    z_all = to_grouped_stats(zeros.to(torch.float32))
    if integer_zeros:
        z_all = torch.round(z_all).clamp(0, spec.maxq)
    rows = max(1, _CHUNK_ELEMENTS // max(1, k))
    out_s, out_z = [], []
    for r0 in range(0, n, rows):
        wg = group_view(w[r0 : r0 + rows].to(torch.float32), g)
        s, z = _refine_chunk(
            wg,
            s_all[r0 : r0 + rows],
            z_all[r0 : r0 + rows],
            spec.maxq,
            mask,
            counts,
            integer_zeros=integer_zeros,
            update_scale=update_scale,
            lp_norm=lp_norm,
            beta=beta,
            kappa=kappa,
            iters=iters,
            patience=patience,
        )
        out_s.append(s)
        out_z.append(z)
    return from_grouped_stats(torch.cat(out_s)), from_grouped_stats(torch.cat(out_z))
