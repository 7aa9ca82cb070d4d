"""Triton dequantization of a packed weight to a dense [N, K] tensor (any group size).

For the dequantize-then-matmul baseline, formats the fused kernels do not cover (any group size, 3-bit
bit planes), and training code that wants the dense weight for a moment. Exactly the reference's
arithmetic, `(q - z) * s` in float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .jit_helpers import unpack_kn
from .pack_layout import pack_unit
from .triton_utils import GPU_DTYPES, INTERPRETER_DTYPES, cdiv, interpreter_active, next_pow2
from .validate import check_out, check_weight


@triton.jit
def _dequant_kernel(
    qw_ptr,
    s_ptr,
    z_ptr,
    out_ptr,
    N,
    K,
    code_mask,
    BITS: tl.constexpr,
    GROUP: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_KW: tl.constexpr,
):
    # P codes per packing unit (kernels/pack.py): one word, or at 3 bits three words of bit planes
    P: tl.constexpr = 32 if BITS == 3 else 32 // BITS
    BLOCK_K: tl.constexpr = BLOCK_KW * P
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_n = tl.max_contiguous(tl.multiple_of(offs_n, BLOCK_N), BLOCK_N)
    n_ok = offs_n < N
    kw = pid_k * BLOCK_KW + tl.arange(0, BLOCK_KW)
    unit_ok = (kw < tl.cdiv(K, P))[:, None] & n_ok[None, :]
    if BITS == 3:
        w_ptrs = qw_ptr + (3 * kw)[:, None] * N + offs_n[None, :]
        w0 = tl.load(w_ptrs, mask=unit_ok, other=0).to(tl.uint32, bitcast=True)
        w1 = tl.load(w_ptrs + N, mask=unit_ok, other=0).to(tl.uint32, bitcast=True)
        w2 = tl.load(w_ptrs + 2 * N, mask=unit_ok, other=0).to(tl.uint32, bitcast=True)
        j = tl.arange(0, 32).to(tl.uint32)
        lo_word = tl.where((j < 16)[None, :, None], w0[:, None, :], w1[:, None, :])
        lo = (lo_word >> (2 * (j % 16))[None, :, None]) & 3
        hi = (w2[:, None, :] >> j[None, :, None]) & 1
        q = tl.reshape((lo | (hi << 2)).to(tl.float32), [BLOCK_K, BLOCK_N])
    else:
        w = tl.load(qw_ptr + kw[:, None] * N + offs_n[None, :], mask=unit_ok, other=0).to(tl.uint32, bitcast=True)
        q = tl.reshape(unpack_kn(w, code_mask, BITS), [BLOCK_K, BLOCK_N])
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    ok = (offs_k < K)[:, None] & n_ok[None, :]
    sz_offs = (offs_k // GROUP)[:, None] * N + offs_n[None, :]
    s = tl.load(s_ptr + sz_offs, mask=ok, other=0.0).to(tl.float32)
    z = tl.load(z_ptr + sz_offs, mask=ok, other=0.0).to(tl.float32)
    out_ptrs = out_ptr + offs_n.to(tl.int64)[None, :] * K + offs_k[:, None]
    tl.store(out_ptrs, ((q - z) * s).to(out_ptr.dtype.element_ty), mask=ok)


def dequantize_kernel(
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    group_size: int,
    in_features: int,
    dtype: torch.dtype = torch.float16,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The dense weight [N, K] in `dtype` (float16, bfloat16 or float32), written by a Triton kernel."""
    n = check_weight(qweight, scales, zeros, bits, group_size, in_features)
    allowed = INTERPRETER_DTYPES if interpreter_active() and qweight.device.type == "cpu" else GPU_DTYPES
    if dtype not in allowed:
        raise ValueError(f"cannot dequantize to {dtype}; supported here: {', '.join(map(str, allowed))}")
    if out is None:
        out = torch.empty((n, in_features), dtype=dtype, device=qweight.device)
    check_out(out, (n, in_features), dtype, qweight.device)
    if n == 0:
        return out
    p = pack_unit(bits)[0]
    block_n = min(64, max(16, next_pow2(n)))
    block_kw = max(1, 64 // p) if interpreter_active() else max(1, 128 // p)
    grid = (cdiv(n, block_n), cdiv(cdiv(in_features, p), block_kw))
    _dequant_kernel[grid](
        qweight, scales, zeros, out, n, in_features, (1 << bits) - 1,
        BITS=bits, GROUP=group_size, BLOCK_N=block_n, BLOCK_KW=block_kw, num_warps=4,
    )
    return out
