"""Small-batch (M up to ~64) low-bit GEMM on tensor cores, split over K.

The product is computed transposed, `out.T[BN, BM] = deq(W)[BN, BK] @ x.T[BK, BM]`: the dequantized
weight is the wide left operand and the few tokens the narrow right one (tl.dot needs 16 of them, not
64). Each packed word is loaded once; its p codes are unpacked in a static loop (`code_f32`) and code j
of every word in the block forms one [BN, BLOCK_KW] slice, multiplied with the activations at
k = i*p + j (a K permutation applied to both operands, so the sum is unchanged). Scales and zeros are
read per packed word, so any group size that is a multiple of p works. K is split across programs so
that a few output tiles still fill the GPU; float32 partials are summed by a second kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .jit_helpers import code_f32, dot_precision, splitk_reduce
from .triton_utils import (
    Config,
    cdiv,
    choose_split,
    interpreter_active,
    m_bucket,
    next_pow2,
    pick_config,
    words_fit_groups,
    workspace_view,
)
from .validate import check_activation, check_out, check_weight

MAX_BLOCK_M = 64


@triton.jit
def _gemm_splitk_kernel(
    x_ptr,
    qw_ptr,
    s_ptr,
    z_ptr,
    out_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_om,
    stride_os,
    chunks_per_split,
    code_mask,
    BITS: tl.constexpr,
    GROUP: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_KW: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    P: tl.constexpr = 32 // BITS
    WORDS_PER_GROUP: tl.constexpr = GROUP // P
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    pid_m = tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_n = tl.max_contiguous(tl.multiple_of(offs_n, BLOCK_N), BLOCK_N)
    n_ok = offs_n < N
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < M
    offs_i = tl.arange(0, BLOCK_KW)
    x_cols = x_ptr + offs_m.to(tl.int64)[None, :] * stride_xm
    cm = code_mask.to(tl.uint32)
    kw_total = tl.cdiv(K, P)
    first = pid_s * chunks_per_split
    count = tl.minimum(chunks_per_split, tl.cdiv(kw_total, BLOCK_KW) - first)
    x_ty = x_ptr.dtype.element_ty

    acc = tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
    for c in range(count):
        kw = (first + c) * BLOCK_KW + offs_i
        ok = n_ok[:, None] & (kw < kw_total)[None, :]
        w = tl.load(qw_ptr + kw[None, :] * N + offs_n[:, None], mask=ok, other=0,
                    eviction_policy="evict_first").to(tl.uint32, bitcast=True)
        sz_offs = (kw // WORDS_PER_GROUP)[None, :] * N + offs_n[:, None]
        s = tl.load(s_ptr + sz_offs, mask=ok, other=0.0).to(tl.float32)
        zs = tl.load(z_ptr + sz_offs, mask=ok, other=0.0).to(tl.float32) * s
        for j in tl.static_range(P):
            if (j * BITS) % 16 == 0:
                wh = w >> ((j * BITS) // 16 * 16)
            wq = (code_f32(wh, cm, (j * BITS) % 16) * s - zs).to(x_ty)
            k = kw * P + j
            xt = tl.load(x_cols + k[:, None], mask=(k < K)[:, None] & m_ok[None, :], other=0.0)
            acc = tl.dot(wq, xt, acc, input_precision=DOT_PRECISION)

    out_ptrs = out_ptr + pid_s * stride_os + offs_m.to(tl.int64)[None, :] * stride_om + offs_n[:, None]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=n_ok[:, None] & m_ok[None, :])


def supports(bits: int, group_size: int) -> bool:
    """Whether this kernel handles the format: each packed word must lie inside one group."""
    return words_fit_groups(bits, group_size)


def candidates(m: int, n: int, k: int, bits: int) -> list[Config]:
    """Configurations to try for this shape, the heuristic favourite first."""
    p = 32 // bits
    block_m = max(16, min(MAX_BLOCK_M, next_pow2(m)))
    n_cap = max(16, next_pow2(n))
    if interpreter_active():
        return [dict(BLOCK_M=block_m, BLOCK_N=min(64, n_cap), BLOCK_KW=16, num_warps=4, num_stages=1, waves=1)]
    out, seen = [], set()
    for bn, bkw, warps, stages, waves in [(128, 16, 4, 3, 2), (64, 16, 4, 3, 4), (128, 32, 4, 3, 2),
                                          (256, 16, 8, 3, 2), (64, 32, 4, 4, 4), (128, 16, 4, 4, 4)]:
        bn = min(bn, n_cap)
        if bkw * p > 2 * max(k, 16) and bkw > 16:
            continue
        key = (bn, bkw, warps, stages, waves)
        if key not in seen:
            seen.add(key)
            out.append(dict(BLOCK_M=block_m, BLOCK_N=bn, BLOCK_KW=bkw, num_warps=warps, num_stages=stages,
                            waves=waves))
    return out


def gemm_splitk(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    group_size: int,
    in_features: int,
    *,
    out: torch.Tensor | None = None,
    workspace: torch.Tensor | None = None,
    split_k: int | None = None,
    config: Config | None = None,
) -> torch.Tensor:
    """`x @ deq(W).T` for x [M, K] (any M; meant for M <= 64), into `out` [M, N] (x's dtype).

    `workspace` (float32, at least split*M*N elements) holds split-K partials; `split_k` forces the split;
    `config` forces a configuration (benchmarks, tests).
    """
    n = check_weight(qweight, scales, zeros, bits, group_size, in_features)
    check_activation("x", x, in_features, qweight.device)
    if x.dim() != 2:
        raise ValueError(f"gemm_splitk takes x of shape [M, K], got {tuple(x.shape)}")
    if not supports(bits, group_size):
        raise ValueError(f"gemm_splitk needs group_size a multiple of {32 // bits}, got {group_size}")
    if x.stride(-1) != 1:
        x = x.contiguous()
    m = x.shape[0]
    if out is None:
        out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    check_out(out, (m, n), x.dtype, x.device)
    if m == 0 or n == 0:
        return out

    def launch(cfg: Config) -> torch.Tensor:
        tiles = cdiv(n, cfg["BLOCK_N"]) * cdiv(m, cfg["BLOCK_M"])
        chunks = cdiv(cdiv(in_features, 32 // bits), cfg["BLOCK_KW"])
        if split_k is None:
            split, per = choose_split(tiles, chunks, x.device, cfg["waves"])
        else:
            per = cdiv(chunks, max(1, min(split_k, chunks)))
            split = cdiv(chunks, per)
        dest, stride_os = (out, 0) if split == 1 else (workspace_view(workspace, (split, m, n), x.device), m * n)
        grid = (cdiv(n, cfg["BLOCK_N"]), split, cdiv(m, cfg["BLOCK_M"]))
        _gemm_splitk_kernel[grid](
            x, qweight, scales, zeros, dest, m, n, in_features, x.stride(0), n, stride_os, per,
            (1 << bits) - 1, BITS=bits, GROUP=group_size, BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
            BLOCK_KW=cfg["BLOCK_KW"], DOT_PRECISION=dot_precision(x.dtype), num_warps=cfg["num_warps"],
            num_stages=cfg["num_stages"],
        )
        if split > 1:
            splitk_reduce(dest, out)
        return out

    if config is None:
        key = ("splitk", m_bucket(m), n, in_features, bits, group_size, x.dtype, split_k, str(x.device))
        config = pick_config(key, candidates(m, n, in_features, bits), launch)
    return launch(config)
