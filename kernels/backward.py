"""Gradient of a low-bit linear to its input: dX[M, K] = dY[M, N] @ deq(W)[N, K], on tensor cores.

Each program owns a [BLOCK_M, BLOCK_K] tile of dX and loops over N. The [BLOCK_K/p, BLOCK_N] block of
packed words is unpacked as in the forward (`unpack_kn`) into a [BLOCK_K, BLOCK_N] tile of deq(W).T,
scaled (a K tile lies inside one group, so scales and zeros are one row per tile) and fed to tl.dot
transposed. Needs no copy of the dense weight, which is what Q-SFT saves memory with.
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
def _dx_kernel(
    dy_ptr,
    qw_ptr,
    s_ptr,
    z_ptr,
    dx_ptr,
    M,
    N,
    K,
    stride_dym,
    stride_dxm,
    code_mask,
    BITS: tl.constexpr,
    GROUP: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_KW: tl.constexpr,
    GROUP_M: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    P: tl.constexpr = 32 // BITS
    BLOCK_K: tl.constexpr = BLOCK_KW * P
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    num_k = tl.cdiv(K, BLOCK_K)
    width = GROUP_M * num_k
    first_m = (pid // width) * GROUP_M
    rows = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % rows
    pid_k = (pid % width) // rows

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < M
    kw = pid_k * BLOCK_KW + tl.arange(0, BLOCK_KW)
    kw_ok = kw < tl.cdiv(K, P)
    g = (pid_k * BLOCK_K) // GROUP
    dy_rows = dy_ptr + offs_m.to(tl.int64)[:, None] * stride_dym
    dy_ty = dy_ptr.dtype.element_ty

    acc = tl.zeros([BLOCK_M, BLOCK_K], tl.float32)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        offs_n = tl.max_contiguous(tl.multiple_of(offs_n, BLOCK_N), BLOCK_N)
        n_ok = offs_n < N
        w = tl.load(qw_ptr + kw[:, None] * N + offs_n[None, :], mask=kw_ok[:, None] & n_ok[None, :], other=0,
                    eviction_policy="evict_first").to(tl.uint32, bitcast=True)
        s = tl.load(s_ptr + g * N + offs_n, mask=n_ok, other=0.0).to(tl.float32)
        zs = tl.load(z_ptr + g * N + offs_n, mask=n_ok, other=0.0).to(tl.float32) * s
        q3 = unpack_kn(w, code_mask, BITS)
        wt = tl.reshape((q3 * s[None, None, :] - zs[None, None, :]).to(dy_ty), [BLOCK_K, BLOCK_N])
        dyt = tl.load(dy_rows + offs_n[None, :], mask=m_ok[:, None] & n_ok[None, :], other=0.0)
        acc = tl.dot(dyt, tl.trans(wt), acc, input_precision=DOT_PRECISION)

    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    dx_ptrs = dx_ptr + offs_m.to(tl.int64)[:, None] * stride_dxm + offs_k[None, :]
    tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=m_ok[:, None] & (offs_k < K)[None, :])


def supports(bits: int, group_size: int) -> bool:
    """Whether this kernel handles the format (a K tile must fit inside one group)."""
    return bool(tile_block_k_options(bits, group_size))


def candidates(m: int, n: int, k: int, bits: int, group_size: int) -> list[Config]:
    """Configurations to try for this shape, the heuristic favourite first."""
    p = 32 // bits
    bks = tile_block_k_options(bits, group_size)
    m_cap = max(16, next_pow2(m))
    n_cap = max(16, next_pow2(n))
    if interpreter_active():
        bk = next(b for b in bks[::-1] if b >= min(64, bks[0]))
        return [dict(BLOCK_M=min(64, m_cap), BLOCK_N=min(64, n_cap), BLOCK_KW=bk // p, GROUP_M=8, num_warps=4,
                     num_stages=1)]
    out, seen = [], set()
    for bm, bn, bk_pref, warps, stages in [(128, 64, 128, 8, 3), (128, 128, 64, 8, 3), (64, 64, 128, 4, 4),
                                           (128, 64, 64, 4, 4), (256, 64, 128, 8, 3), (64, 128, 64, 4, 3)]:
        bm, bn = min(bm, m_cap), min(bn, n_cap)
        bk = next((b for b in bks if b <= bk_pref), bks[-1])
        key = (bm, bn, bk, warps, stages)
        if key not in seen:
            seen.add(key)
            out.append(dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_KW=bk // p, GROUP_M=8, num_warps=warps,
                            num_stages=stages))
    return out


def matmul_backward_input(
    dy: torch.Tensor,
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
    """`dY @ deq(W)` for dy [M, N], into `out` [M, K] (dy's dtype)."""
    n = check_weight(qweight, scales, zeros, bits, group_size, in_features)
    check_activation("dy", dy, n, qweight.device)
    if dy.dim() != 2:
        raise ValueError(f"matmul_backward_input takes dy of shape [M, N], got {tuple(dy.shape)}")
    if not supports(bits, group_size):
        raise ValueError(
            f"the backward kernel needs a group size divisible by a power of two >= 16 and >= {32 // bits}, "
            f"got {group_size}"
        )
    if dy.stride(-1) != 1:
        dy = dy.contiguous()
    m, k = dy.shape[0], in_features
    if out is None:
        out = torch.empty((m, k), dtype=dy.dtype, device=dy.device)
    check_out(out, (m, k), dy.dtype, dy.device)
    if m == 0:
        return out
    if n == 0:
        return out.zero_()

    def launch(cfg: Config) -> torch.Tensor:
        block_k = cfg["BLOCK_KW"] * (32 // bits)
        grid = (cdiv(m, cfg["BLOCK_M"]) * cdiv(k, block_k),)
        _dx_kernel[grid](
            dy, qweight, scales, zeros, out, m, n, k, dy.stride(0), k, (1 << bits) - 1,
            BITS=bits, GROUP=group_size, BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
            BLOCK_KW=cfg["BLOCK_KW"], GROUP_M=cfg["GROUP_M"], DOT_PRECISION=dot_precision(dy.dtype),
            num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        )
        return out

    if config is None:
        key = ("dx", m_bucket(m), n, k, bits, group_size, dy.dtype, str(dy.device))
        config = pick_config(key, candidates(m, n, k, bits, group_size), launch)
    return launch(config)
