"""Batch-1 (M <= 4) low-bit GEMV: memory-bound, CUDA cores, split over K when N alone cannot fill the GPU.

Each program owns BLOCK_N output columns and a run of K. Every packed word is loaded once (16-byte
loads along N, which is contiguous in `qweight`) and its p codes become floats in a static loop
without an int-to-float conversion (`code_f32`: one LOP3 and one FADD per code); the
code-times-activation products accumulate in float32 without the group scale, which is applied once
per word as `s * (sum_j x_j q_j - z * sum_j x_j)`. Split-K programs write float32 partials that a
second, tiny kernel sums in a fixed order (deterministic, no atomics, no memset). Compiled for sm_90
this loop is about five instructions per code (LOP3, FADD, FFMA, plus activation loads and masks).
3-bit codes are bit planes (kernels/pack.py): a unit of 32 codes is three words, two of 2-bit fields and one
of 1-bit fields, and each code is `lo + 4 hi`, both made as in `code_f32`. A group that is not a multiple
of a unit's codes makes each code load its own group's scale and zero and be dequantized before the products
(correct under the interpreter; 3-bit not yet timed on a GPU).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .jit_helpers import code_f32, splitk_reduce
from .pack_layout import pack_unit
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

MAX_M = 4


@triton.jit
def _row_products(part, xsum, q, x_row, k, k_ok):
    """Add one code column's products with one activation row: part += q * x, xsum += x."""
    xj = tl.load(x_row + k, mask=k_ok, other=0.0).to(tl.float32)
    return part + q * xj[:, None], xsum + xj


@triton.jit
def _gemv_kernel(
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
):
    # Rows are unrolled by hand (BLOCK_M <= 4) so that every tensor stays 2-D in the layout of the
    # weight load: 3-D broadcasts made Triton move each tile through shared memory.
    # P codes per packing unit: one word, or at 3 bits three words (two 2-bit planes and a 1-bit plane)
    P: tl.constexpr = 32 if BITS == 3 else 32 // BITS
    # a unit that straddles two groups makes every code take its own group's statistics
    WORD_IN_GROUP: tl.constexpr = GROUP % P == 0
    WORDS_PER_GROUP: tl.constexpr = GROUP // P
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_n = tl.max_contiguous(tl.multiple_of(offs_n, BLOCK_N), BLOCK_N)
    n_ok = offs_n < N
    offs_i = tl.arange(0, BLOCK_KW)
    code_mask = code_mask.to(tl.uint32)
    two_bits = code_mask >> 1  # 3 and 1 when BITS == 3 (the planes' masks)
    one_bit = code_mask >> 2
    x0 = x_ptr
    x1 = x_ptr + stride_xm
    x2 = x_ptr + 2 * stride_xm
    x3 = x_ptr + 3 * stride_xm
    # Bounds for rows 1..3: zero when the row does not exist (a scalar bound, not `mask & (M > r)`,
    # which the interpreter turns into a non-boolean mask).
    k1 = tl.where(M > 1, K, 0)
    k2 = tl.where(M > 2, K, 0)
    k3 = tl.where(M > 3, K, 0)
    kw_total = tl.cdiv(K, P)
    first = pid_s * chunks_per_split
    count = tl.minimum(chunks_per_split, tl.cdiv(kw_total, BLOCK_KW) - first)

    acc0 = tl.zeros([BLOCK_KW, BLOCK_N], tl.float32)
    acc1 = tl.zeros([BLOCK_KW, BLOCK_N], tl.float32)
    acc2 = tl.zeros([BLOCK_KW, BLOCK_N], tl.float32)
    acc3 = tl.zeros([BLOCK_KW, BLOCK_N], tl.float32)
    for c in range(count):
        kw = (first + c) * BLOCK_KW + offs_i
        ok = (kw < kw_total)[:, None] & n_ok[None, :]
        if BITS == 3:
            w_offs = (3 * kw)[:, None] * N + offs_n[None, :]
            w = tl.load(qw_ptr + w_offs, mask=ok, other=0, eviction_policy="evict_first").to(tl.uint32, bitcast=True)
            w1 = tl.load(qw_ptr + w_offs + N, mask=ok, other=0,
                         eviction_policy="evict_first").to(tl.uint32, bitcast=True)
            w2 = tl.load(qw_ptr + w_offs + 2 * N, mask=ok, other=0,
                         eviction_policy="evict_first").to(tl.uint32, bitcast=True)
        else:
            w = tl.load(qw_ptr + kw[:, None] * N + offs_n[None, :], mask=ok, other=0,
                        eviction_policy="evict_first").to(tl.uint32, bitcast=True)
        if WORD_IN_GROUP:
            sz_offs = (kw // WORDS_PER_GROUP)[:, None] * N + offs_n[None, :]
            s = tl.load(s_ptr + sz_offs, mask=ok, other=0.0).to(tl.float32)
            z = tl.load(z_ptr + sz_offs, mask=ok, other=0.0).to(tl.float32)
        part0 = tl.zeros([BLOCK_KW, BLOCK_N], tl.float32)
        part1 = tl.zeros([BLOCK_KW, BLOCK_N], tl.float32)
        part2 = tl.zeros([BLOCK_KW, BLOCK_N], tl.float32)
        part3 = tl.zeros([BLOCK_KW, BLOCK_N], tl.float32)
        xs0 = tl.zeros([BLOCK_KW], tl.float32)
        xs1 = tl.zeros([BLOCK_KW], tl.float32)
        xs2 = tl.zeros([BLOCK_KW], tl.float32)
        xs3 = tl.zeros([BLOCK_KW], tl.float32)
        # Codes of each 16-bit half sit at SHIFT < 16 after at most one shift per word (see code_f32).
        for j in tl.static_range(P):
            if BITS != 3:
                if (j * BITS) % 16 == 0:
                    wh = w >> ((j * BITS) // 16 * 16)
                q = code_f32(wh, code_mask, (j * BITS) % 16)
            else:  # low plane: code j's 2-bit field of word j // 16; high plane: bit j of w2
                if j % 8 == 0:
                    if j < 16:
                        lo_h = w >> ((j % 16) // 8 * 16)
                    else:
                        lo_h = w1 >> ((j % 16) // 8 * 16)
                if j % 16 == 0:
                    hi_h = w2 >> (j // 16 * 16)
                q = code_f32(lo_h, two_bits, (2 * j) % 16) + 4.0 * code_f32(hi_h, one_bit, j % 16)
            k = kw * P + j
            if not WORD_IN_GROUP:  # dequantize here with this code's group; the partials need no scaling later
                kk_ok = (k < K)[:, None] & n_ok[None, :]
                sz_j = (k // GROUP)[:, None] * N + offs_n[None, :]
                s_j = tl.load(s_ptr + sz_j, mask=kk_ok, other=0.0).to(tl.float32)
                q = (q - tl.load(z_ptr + sz_j, mask=kk_ok, other=0.0).to(tl.float32)) * s_j
            part0, xs0 = _row_products(part0, xs0, q, x0, k, k < K)
            if BLOCK_M > 1:
                part1, xs1 = _row_products(part1, xs1, q, x1, k, k < k1)
            if BLOCK_M > 2:
                part2, xs2 = _row_products(part2, xs2, q, x2, k, k < k2)
                part3, xs3 = _row_products(part3, xs3, q, x3, k, k < k3)
        if WORD_IN_GROUP:
            acc0 += s * (part0 - z * xs0[:, None])
            if BLOCK_M > 1:
                acc1 += s * (part1 - z * xs1[:, None])
            if BLOCK_M > 2:
                acc2 += s * (part2 - z * xs2[:, None])
                acc3 += s * (part3 - z * xs3[:, None])
        else:
            acc0 += part0
            if BLOCK_M > 1:
                acc1 += part1
            if BLOCK_M > 2:
                acc2 += part2
                acc3 += part3

    out_ty = out_ptr.dtype.element_ty
    o = out_ptr + pid_s * stride_os + offs_n
    tl.store(o, tl.sum(acc0, axis=0).to(out_ty), mask=n_ok)
    if BLOCK_M > 1:
        tl.store(o + stride_om, tl.sum(acc1, axis=0).to(out_ty), mask=offs_n < tl.where(M > 1, N, 0))
    if BLOCK_M > 2:
        tl.store(o + 2 * stride_om, tl.sum(acc2, axis=0).to(out_ty), mask=offs_n < tl.where(M > 2, N, 0))
        tl.store(o + 3 * stride_om, tl.sum(acc3, axis=0).to(out_ty), mask=offs_n < tl.where(M > 3, N, 0))


def supports(bits: int, group_size: int) -> bool:
    """Whether this kernel handles the format: each packed word inside one group, or 3-bit planes (any group)."""
    return bits == 3 or words_fit_groups(bits, group_size)


def candidates(m: int, n: int, k: int, bits: int) -> list[Config]:
    """Configurations to try for this shape, the heuristic favourite first."""
    p = pack_unit(bits)[0]
    block_m = next_pow2(m)
    kw_cap = next_pow2(cdiv(k, p))
    n_cap = max(16, next_pow2(n))
    if interpreter_active():
        return [dict(BLOCK_N=min(128, n_cap), BLOCK_KW=min(16, kw_cap), num_warps=4, num_stages=1, waves=1)]
    shapes = [(256, 8, 4, 4), (128, 16, 4, 4), (256, 16, 8, 4), (128, 8, 4, 4), (512, 8, 8, 4), (256, 8, 4, 8)]
    out, seen = [], set()
    for bn, bkw, warps, waves in shapes:
        bn, bkw = min(bn, n_cap), min(bkw, kw_cap)
        while block_m * bkw * bn > 4096 and bkw > 1:
            bkw //= 2
        key = (bn, bkw, warps, waves)
        if key not in seen:
            seen.add(key)
            out.append(dict(BLOCK_N=bn, BLOCK_KW=bkw, num_warps=warps, num_stages=2, waves=waves))
    return out


def gemv(
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
    """`x @ deq(W).T` for x [M, K] with M <= 4, into `out` [M, N] (x's dtype).

    `workspace` (float32, at least split*M*N elements) holds split-K partials; `split_k` forces the split;
    `config` forces a configuration (benchmarks, tests).
    """
    n = check_weight(qweight, scales, zeros, bits, group_size, in_features)
    check_activation("x", x, in_features, qweight.device)
    if x.dim() != 2 or x.shape[0] > MAX_M:
        raise ValueError(f"gemv takes x of shape [M<={MAX_M}, K], got {tuple(x.shape)}")
    if not supports(bits, group_size):
        raise ValueError(f"gemv needs group_size a multiple of {pack_unit(bits)[0]} at {bits} bits, got {group_size}")
    if x.stride(-1) != 1:
        x = x.contiguous()
    m = x.shape[0]
    if out is None:
        out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    check_out(out, (m, n), x.dtype, x.device)
    if m == 0 or n == 0:
        return out
    p = pack_unit(bits)[0]

    def launch(cfg: Config) -> torch.Tensor:
        tiles = cdiv(n, cfg["BLOCK_N"])
        chunks = cdiv(cdiv(in_features, p), cfg["BLOCK_KW"])
        if split_k is None:
            split, per = choose_split(tiles, chunks, x.device, cfg["waves"])
        else:
            split = max(1, min(split_k, chunks))
            per = cdiv(chunks, split)
            split = cdiv(chunks, per)
        if split == 1:
            dest, stride_os = out, 0
        else:
            dest = workspace_view(workspace, (split, m, n), x.device)
            stride_os = m * n
        _gemv_kernel[(tiles, split)](
            x, qweight, scales, zeros, dest, m, n, in_features, x.stride(0), n, stride_os, per, (1 << bits) - 1,
            BITS=bits, GROUP=group_size, BLOCK_M=next_pow2(m), BLOCK_N=cfg["BLOCK_N"],
            BLOCK_KW=cfg["BLOCK_KW"], num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        )
        if split > 1:
            splitk_reduce(dest, out)
        return out

    if config is None:
        key = ("gemv", m_bucket(m), n, in_features, bits, group_size, x.dtype, split_k, str(x.device))
        config = pick_config(key, candidates(m, n, in_features, bits), launch)
    return launch(config)

