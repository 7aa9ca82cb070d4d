"""Large-batch (M >= ~64) low-bit GEMM: dequantize a weight tile in registers, then tl.dot on tensor cores.

`out[BM, BN] += x[BM, BK] @ deq(W).T[BK, BN]`. Two ways to unpack, chosen per shape by the tuner
(`UNPACK`): 0 loads each packed word of the [BK/p, BN] block once and unpacks it into a [BK/p, p, BN] tile
(`unpack_kn`) that is scaled, cast and reshaped to [BK, BN]; 1 loads the [BK, BN] tile of words with each
word repeated p times along K (the repeats hit L1) and shifts every element by its own (k mod p) * b, so
the tile is born in the [BK, BN] layout with no reshape. The activations stream in through Triton's
software pipeline. A K block lies inside one group, so scales and
zeros are one row per block. Programs are ordered in groups of GROUP_M row blocks for L2 reuse.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .jit_helpers import dot_precision, unpack_kn
from .triton_utils import (
    Config,
    cdiv,
    interpreter_active,
    m_bucket,
    next_pow2,
    pick_config,
    tile_block_k_options,
)
from .validate import check_activation, check_out, check_weight


@triton.jit
def _gemm_dequant_kernel(
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
    code_mask,
    BITS: tl.constexpr,
    GROUP: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_KW: tl.constexpr,
    GROUP_M: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UNPACK: tl.constexpr,
):
    P: tl.constexpr = 32 // BITS
    BLOCK_K: tl.constexpr = BLOCK_KW * P
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    width = GROUP_M * num_n
    first_m = (pid // width) * GROUP_M
    rows = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % rows
    pid_n = (pid % width) // rows

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < M
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_n = tl.max_contiguous(tl.multiple_of(offs_n, BLOCK_N), BLOCK_N)
    n_ok = offs_n < N
    offs_i = tl.arange(0, BLOCK_KW)
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm
    kw_total = tl.cdiv(K, P)
    x_ty = x_ptr.dtype.element_ty

    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for c in range(tl.cdiv(K, BLOCK_K)):
        g = (c * BLOCK_K) // GROUP
        s = tl.load(s_ptr + g * N + offs_n, mask=n_ok, other=0.0).to(tl.float32)
        zs = tl.load(z_ptr + g * N + offs_n, mask=n_ok, other=0.0).to(tl.float32) * s
        offs_k = c * BLOCK_K + tl.arange(0, BLOCK_K)
        if UNPACK == 0:
            kw = c * BLOCK_KW + offs_i
            w = tl.load(qw_ptr + kw[:, None] * N + offs_n[None, :], mask=(kw < kw_total)[:, None] & n_ok[None, :],
                        other=0, eviction_policy="evict_first").to(tl.uint32, bitcast=True)
            q3 = unpack_kn(w, code_mask, BITS)
            wt = tl.reshape((q3 * s[None, None, :] - zs[None, None, :]).to(x_ty), [BLOCK_K, BLOCK_N])
        else:
            kr = offs_k // P
            w = tl.load(qw_ptr + kr[:, None] * N + offs_n[None, :], mask=(kr < kw_total)[:, None] & n_ok[None, :],
                        other=0).to(tl.uint32, bitcast=True)
            shift = ((offs_k % P) * BITS).to(tl.uint32)
            q = ((w >> shift[:, None]) & code_mask.to(tl.uint32)).to(tl.float32)
            wt = (q * s[None, :] - zs[None, :]).to(x_ty)
        xt = tl.load(x_rows + offs_k[None, :], mask=m_ok[:, None] & (offs_k < K)[None, :], other=0.0)
        acc = tl.dot(xt, wt, acc, input_precision=DOT_PRECISION)

    out_ptrs = out_ptr + offs_m.to(tl.int64)[:, None] * stride_om + offs_n[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def supports(bits: int, group_size: int) -> bool:
    """Whether this kernel handles the format (a K block must fit inside one group)."""
    return bool(tile_block_k_options(bits, group_size))


def candidates(m: int, n: int, k: int, bits: int, group_size: int) -> list[Config]:
    """Configurations to try for this shape, the heuristic favourite first."""
    p = 32 // bits
    bks = tile_block_k_options(bits, group_size)
    n_cap = max(16, next_pow2(n))
    m_cap = max(16, next_pow2(m))
    if interpreter_active():
        bk = next(b for b in bks[::-1] if b >= min(64, bks[0]))
        return [dict(BLOCK_M=min(64, m_cap), BLOCK_N=min(64, n_cap), BLOCK_KW=bk // p, GROUP_M=8, num_warps=4,
                     num_stages=1, UNPACK=unpack) for unpack in (0, 1)]
    out, seen = [], set()
    for unpack in (1, 0):
        for bm, bn, bk_pref, warps, stages in [(128, 128, 64, 8, 3), (128, 256, 64, 8, 3), (64, 128, 64, 4, 4),
                                               (128, 128, 128, 8, 3), (64, 256, 64, 8, 4), (128, 64, 64, 4, 4),
                                               (64, 128, 128, 4, 3), (128, 128, 32, 8, 4)]:
            bm, bn = min(bm, m_cap), min(bn, n_cap)
            bk = next((b for b in bks if b <= bk_pref), bks[-1])
            key = (bm, bn, bk, warps, stages, unpack)
            if key not in seen:
                seen.add(key)
                out.append(dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_KW=bk // p, GROUP_M=8, num_warps=warps,
                                num_stages=stages, UNPACK=unpack))
    return out


def gemm_dequant(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    group_size: int,
    in_features: int,
    *,
    out: torch.Tensor | None = None,
    config: Config | None = None,
) -> torch.Tensor:
    """`x @ deq(W).T` for x [M, K] (any M; meant for M >= 64), into `out` [M, N] (x's dtype)."""
    n = check_weight(qweight, scales, zeros, bits, group_size, in_features)
    check_activation("x", x, in_features, qweight.device)
    if x.dim() != 2:
        raise ValueError(f"gemm_dequant takes x of shape [M, K], got {tuple(x.shape)}")
    if not supports(bits, group_size):
        raise ValueError(
            f"gemm_dequant needs a group size divisible by a power of two >= 16 and >= {32 // bits}, "
            f"got {group_size}"
        )
    if x.stride(-1) != 1:
        x = x.contiguous()
    m = x.shape[0]
    if out is None:
        out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    check_out(out, (m, n), x.dtype, x.device)
    if m == 0 or n == 0:
        return out

    def launch(cfg: Config) -> torch.Tensor:
        grid = (cdiv(m, cfg["BLOCK_M"]) * cdiv(n, cfg["BLOCK_N"]),)
        _gemm_dequant_kernel[grid](
            x, qweight, scales, zeros, out, m, n, in_features, x.stride(0), n, (1 << bits) - 1,
            BITS=bits, GROUP=group_size, BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
            BLOCK_KW=cfg["BLOCK_KW"], GROUP_M=cfg["GROUP_M"], DOT_PRECISION=dot_precision(x.dtype),
            UNPACK=cfg.get("UNPACK", 0),
            num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        )
        return out

    if config is None:
        key = ("gemm", m_bucket(m), n, in_features, bits, group_size, x.dtype, str(x.device))
        config = pick_config(key, candidates(m, n, in_features, bits, group_size), launch)
    return launch(config)
