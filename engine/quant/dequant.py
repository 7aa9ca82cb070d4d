"""Torch dequantization of packed weights, straight into the [K, N] layout a matmul `x @ W.T` wants.

Used by QuantLinear off CUDA (CPU, Apple MPS). It unpacks with int32 shifts (an arithmetic shift of a
negative word still leaves the right low bits under the mask) and applies statistics per group by
broadcasting, so no [N, K] index or repeated statistics tensor is built. The result is bit-identical
to kernels/reference.py's fp32 dequantization.
"""

from __future__ import annotations

import torch

from bitsmith.kernels.pack import codes_per_word


def dequantize_packed_t(
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    group_size: int,
    in_features: int,
) -> torch.Tensor:
    """fp32 W.T [K, N] with W[n, k] = (q[n, k] - zeros[k // g, n]) * scales[k // g, n]."""
    p = codes_per_word(bits)
    rows, n = qweight.shape
    shifts = torch.arange(0, p * bits, bits, dtype=torch.int32, device=qweight.device).view(1, p, 1)
    q = ((qweight.unsqueeze(1) >> shifts) & ((1 << bits) - 1)).reshape(rows * p, n)
    groups = scales.shape[0]
    length = groups * group_size
    if rows * p >= length:
        q = q[:length]
    else:
        q = torch.cat([q, q.new_zeros(length - rows * p, n)])
    w = (q.view(groups, group_size, n).to(torch.float32) - zeros.to(torch.float32).unsqueeze(1)) * scales.to(
        torch.float32
    ).unsqueeze(1)
    return w.reshape(length, n)[:in_features]
