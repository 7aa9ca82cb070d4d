"""Triton device functions shared by the low-bit kernels, and the split-K reduction kernel."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_utils import cdiv


@triton.jit
def code_f32(w, code_mask, SHIFT: tl.constexpr):
    """Exact float32 of the code at bits [SHIFT, SHIFT+b) of uint32 `w` (SHIFT + b <= 23).

    No shift and no int-to-float conversion: the code's bits become the low mantissa bits of a float
    whose exponent puts the code in the units place, `2^(23-SHIFT) + code`, then the offset is
    subtracted: one LOP3 and one FADD per code. `code_mask` is (1 << b) - 1 passed as a run-time
    value, so that ptxas keeps the shifted masks in registers instead of re-creating them each use.
    """
    MAGIC: tl.constexpr = (150 - SHIFT) << 23
    BASE: tl.constexpr = 2.0 ** (23 - SHIFT)
    return ((w & (code_mask << SHIFT)) | MAGIC).to(tl.float32, bitcast=True) - BASE


@triton.jit
def unpack_kn(w, code_mask, BITS: tl.constexpr):
    """Exact float32 codes [BKW, p, BN] of a word tile [BKW, BN] (uint32); [i, j] is row k = i * p + j.

    The codes are made as in `code_f32` (one SHF per code of the upper half-word, one LOP3 and one FADD
    per code). Callers finish element-wise work on the 3-D tile and then `tl.reshape` it to [BK, BN]:
    Triton then writes it to shared memory for tl.dot without a layout shuffle.
    """
    P: tl.constexpr = 32 // BITS
    shift = (tl.arange(0, P) * BITS).to(tl.uint32)
    low = shift % 16
    magic = (150 - low) << 23
    w3 = w[:, None, :] >> (shift - low)[None, :, None]
    q3 = ((w3 & (code_mask.to(tl.uint32) << low)[None, :, None]) | magic[None, :, None]).to(
        tl.float32, bitcast=True
    ) - magic.to(tl.float32, bitcast=True)[None, :, None]
    return q3


@triton.jit
def _splitk_reduce_kernel(part_ptr, out_ptr, MN, SPLIT, BLOCK: tl.constexpr):
    """out[i] = sum over s of part[s, i] (float32), stored in out's dtype."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < MN
    acc = tl.zeros([BLOCK], tl.float32)
    ptrs = part_ptr + offs.to(tl.int64)
    for _ in range(SPLIT):
        acc += tl.load(ptrs, mask=ok, other=0.0)
        ptrs += MN
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=ok)


def splitk_reduce(partials: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Sum float32 partials [S, M, N] over S into the contiguous `out` [M, N] (any float dtype)."""
    split = partials.shape[0]
    mn = out.numel()
    block = 1024
    _splitk_reduce_kernel[(cdiv(mn, block),)](partials, out, mn, split, BLOCK=block, num_warps=4)
    return out


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot input precision: exact float32 products for float32 activations, the default otherwise."""
    return "ieee" if dtype == torch.float32 else "tf32"


def tl_dtype(dtype: torch.dtype):
    """The triton.language dtype of a torch float dtype."""
    return {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32}[dtype]
