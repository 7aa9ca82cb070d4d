"""Packing of b-bit codes into int32 words along the input dimension, least significant bits first.

Layout (GPTQ's, also the on-disk layout of shared/DESIGN.md §3): a weight of shape [N, K]
(out_features, in_features) is stored as `qweight` int32 [rows, N], N contiguous. Codes go in *units*:
a run of `c` consecutive inputs stored in `w` consecutive rows (`pack_unit`). A K that is not a multiple
of c is padded with zero codes, which every kernel masks out.

* 2, 4, 8 bits: one word per unit of p = 32 // bits codes; word `qweight[i, n]` holds codes
  `w[n, i*p : (i+1)*p]`, the first in the lowest bits.
* 3 bits: bit planes, 32 codes in 3 words (exactly 3 bits per code, as GPTQ's contiguous 3-bit packing,
  but no code straddles two words): rows 3u and 3u+1 hold the low two bits of codes 32u..32u+15 and
  32u+16..32u+31 (16 two-bit fields each, like 2-bit packing), row 3u+2 holds their high bit, code 32u+j at
  bit j. Unpacking is one shift and mask per plane: `q = lo | hi << 2`.
"""

from __future__ import annotations

import torch

from .pack_layout import PLANAR_BITS, SUPPORTED_PACK_BITS, pack_unit, packed_rows

__all__ = [
    "PLANAR_BITS", "SUPPORTED_PACK_BITS", "codes_per_word", "pack_codes", "pack_unit", "packed_rows",
    "scatter_code_deltas", "unpack_codes", "unpack_rows",
]


def codes_per_word(bits: int) -> int:
    """How many b-bit codes one int32 word holds, for the one-word-per-unit widths (2, 4, 8 bits)."""
    codes, words = pack_unit(bits)
    if words != 1:
        raise ValueError(f"{bits}-bit codes are stored as bit planes (32 codes in {words} words), not per word")
    return codes


def _to_int32(words: torch.Tensor) -> torch.Tensor:
    """int64 values in [0, 2^32) to int32 with the same bits."""
    return torch.where(words >= (1 << 31), words - (1 << 32), words).to(torch.int32)


def _fields(c: torch.Tensor, width: int) -> torch.Tensor:
    """Sum of c[..., j] << (j * width) over the last dimension (int64; each field must fit its width)."""
    shifts = torch.arange(c.shape[-1], dtype=torch.int64, device=c.device) * width
    return (c << shifts).sum(dim=-1)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer codes [N, K] in [0, 2^bits - 1] into int32 [packed_rows(K), N] (LSB first along K)."""
    if codes.dim() != 2:
        raise ValueError(f"codes must be 2-D [out_features, in_features], got shape {tuple(codes.shape)}")
    unit, _ = pack_unit(bits)
    c = codes.to(torch.int64)
    if c.numel() and (int(c.min()) < 0 or int(c.max()) > (1 << bits) - 1):
        raise ValueError(
            f"codes out of range for {bits} bits: min {int(c.min())}, max {int(c.max())}, "
            f"allowed [0, {(1 << bits) - 1}]"
        )
    n, k = c.shape
    units = -(-k // unit)
    pad = units * unit - k
    if pad:
        c = torch.nn.functional.pad(c, (0, pad))
    c = c.view(n, units, unit)
    if bits == PLANAR_BITS:
        lo = _fields((c & 3).view(n, units, 2, 16), 2)  # [N, U, 2]
        hi = _fields(c >> 2, 1).unsqueeze(-1)  # [N, U, 1]
        words = torch.cat([lo, hi], dim=-1).reshape(n, units * 3)
    else:
        words = _fields(c, bits)  # [N, U]
    return _to_int32(words).t().contiguous()


def unpack_rows(qweight: torch.Tensor, bits: int) -> torch.Tensor:
    """Packed words [rows, R] (any column slice) -> int32 codes [units * unit, R], padding included.

    Stays in int32 and in the words' own [K, N] layout: an arithmetic shift of a negative word still
    leaves the right low bits under the mask, so no widening and no transpose is needed.
    """
    unit, per = pack_unit(bits)
    rows, r = qweight.shape
    if rows % per:
        raise ValueError(f"{bits}-bit codes take {per} words per unit; {rows} rows is not a whole number of units")
    dev = qweight.device
    if bits == PLANAR_BITS:
        w = qweight.view(rows // 3, 3, r)
        lo_shift = torch.arange(0, 32, 2, dtype=torch.int32, device=dev).view(1, 1, 16, 1)
        lo = ((w[:, :2].unsqueeze(2) >> lo_shift) & 3).reshape(-1, 32, r)
        hi = (w[:, 2].unsqueeze(1) >> torch.arange(32, dtype=torch.int32, device=dev).view(1, 32, 1)) & 1
        return (lo | (hi << 2)).reshape(-1, r)
    shifts = torch.arange(0, unit * bits, bits, dtype=torch.int32, device=dev).view(1, unit, 1)
    return ((qweight.unsqueeze(1) >> shifts) & ((1 << bits) - 1)).reshape(-1, r)


def unpack_codes(qweight: torch.Tensor, bits: int, in_features: int) -> torch.Tensor:
    """Inverse of `pack_codes`: int32 [packed_rows(K), N] to uint8 codes [N, K]."""
    if qweight.dtype != torch.int32 or qweight.dim() != 2:
        raise ValueError(f"qweight must be a 2-D int32 tensor, got {qweight.dtype} {tuple(qweight.shape)}")
    rows = packed_rows(in_features, bits)
    if qweight.shape[0] != rows:
        raise ValueError(
            f"qweight has {qweight.shape[0]} rows but {in_features} inputs at {bits} bits need {rows}"
        )
    return unpack_rows(qweight, bits)[:in_features].t().to(torch.uint8)


def scatter_code_deltas(qweight: torch.Tensor, r0: int, k_idx: torch.Tensor, r_idx: torch.Tensor,
                        old: torch.Tensor, new: torch.Tensor, bits: int) -> None:
    """Rewrite codes in place: code (k_idx[i], r0 + r_idx[i]) goes from old[i] to new[i] (int32 vectors).

    Adds each field's difference, shifted into place, to its word; several codes of one word add up field
    by field (the fields are disjoint and each stays in range, so no carry crosses a field; int32 wraps like
    uint32). A 3-bit code touches two words, one per bit plane.
    """
    if k_idx.numel() == 0:
        return
    n = qweight.shape[1]
    flat = qweight.view(-1)
    cols = r_idx + r0
    if bits == PLANAR_BITS:
        unit, j = k_idx // 32, k_idx % 32
        lo_rows = unit * 3 + j // 16
        lo_delta = ((new & 3) - (old & 3)) << ((j % 16) * 2).to(torch.int32)
        hi_delta = ((new >> 2) - (old >> 2)) << j.to(torch.int32)
        flat.index_put_((lo_rows * n + cols,), lo_delta.to(torch.int32), accumulate=True)
        flat.index_put_(((unit * 3 + 2) * n + cols,), hi_delta.to(torch.int32), accumulate=True)
        return
    p = codes_per_word(bits)
    delta = (new - old) << ((k_idx % p) * bits).to(torch.int32)
    flat.index_put_(((k_idx // p) * n + cols,), delta.to(torch.int32), accumulate=True)
