"""Packing of b-bit codes into int32 words along the input dimension, least significant bits first.

Layout (GPTQ's, also the on-disk layout of shared/DESIGN.md §3): a weight of shape [N, K]
(out_features, in_features) is stored as `qweight` int32 [ceil(K / (32 // bits)), N]; word
`qweight[i, n]` holds codes `w[n, i*p : (i+1)*p]` with p = 32 // bits, the first in the lowest bits.
A K that is not a multiple of p is padded with zero codes, which every kernel masks out.

3-bit codes go 10 to a word (bits 0..29; the top two bits stay zero): 3.2 stored bits per code, and a
word never straddles two codes, so unpacking stays one shift and mask. The GEMV (batch <= 4, i.e. decode)
unpacks 10-code words; the tensor-core kernels tile words in powers of two and do not, so larger batches of
INT3 layers dequantize in torch and then matmul.
"""

from __future__ import annotations

import torch

SUPPORTED_PACK_BITS = (2, 3, 4, 8)


def codes_per_word(bits: int) -> int:
    """How many b-bit codes one int32 word holds (10 at 3 bits); ValueError for widths that cannot be packed."""
    if bits not in SUPPORTED_PACK_BITS:
        raise ValueError(f"cannot pack {bits}-bit codes: supported widths are {SUPPORTED_PACK_BITS}")
    return 32 // bits


def packed_rows(in_features: int, bits: int) -> int:
    """Number of int32 rows that hold `in_features` codes of `bits` bits."""
    p = codes_per_word(bits)
    return (in_features + p - 1) // p


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer codes [N, K] in [0, 2^bits - 1] into int32 [ceil(K/p), N] (LSB first along K)."""
    if codes.dim() != 2:
        raise ValueError(f"codes must be 2-D [out_features, in_features], got shape {tuple(codes.shape)}")
    p = codes_per_word(bits)
    c = codes.to(torch.int64)
    if c.numel() and (int(c.min()) < 0 or int(c.max()) > (1 << bits) - 1):
        raise ValueError(
            f"codes out of range for {bits} bits: min {int(c.min())}, max {int(c.max())}, "
            f"allowed [0, {(1 << bits) - 1}]"
        )
    n, k = c.shape
    rows = packed_rows(k, bits)
    pad = rows * p - k
    if pad:
        c = torch.nn.functional.pad(c, (0, pad))
    c = c.view(n, rows, p)
    shifts = torch.arange(p, dtype=torch.int64, device=c.device) * bits
    words = (c << shifts).sum(dim=-1)  # [N, rows], each < 2^32
    words = torch.where(words >= (1 << 31), words - (1 << 32), words)
    return words.to(torch.int32).t().contiguous()


def unpack_codes(qweight: torch.Tensor, bits: int, in_features: int) -> torch.Tensor:
    """Inverse of `pack_codes`: int32 [ceil(K/p), N] to uint8 codes [N, K]."""
    if qweight.dtype != torch.int32 or qweight.dim() != 2:
        raise ValueError(f"qweight must be a 2-D int32 tensor, got {qweight.dtype} {tuple(qweight.shape)}")
    p = codes_per_word(bits)
    rows = packed_rows(in_features, bits)
    if qweight.shape[0] != rows:
        raise ValueError(
            f"qweight has {qweight.shape[0]} rows but {in_features} inputs at {bits} bits need {rows}"
        )
    w = qweight.t().to(torch.int64) & 0xFFFFFFFF  # [N, rows], unsigned
    shifts = torch.arange(p, dtype=torch.int64, device=w.device) * bits
    codes = (w.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)  # [N, rows, p]
    return codes.reshape(w.shape[0], rows * p)[:, :in_features].to(torch.uint8)
