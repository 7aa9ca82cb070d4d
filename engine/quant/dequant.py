"""Torch dequantization of packed weights, straight into the [K, N] layout a matmul `x @ W.T` wants.

Used by QuantLinear off CUDA (CPU, Apple MPS). It unpacks with int32 shifts (kernels/pack.py's
`unpack_rows`, any width including 3-bit planes) and applies statistics per group by broadcasting, so
no [N, K] index or repeated statistics tensor is built. The result is bit-identical to kernels/reference.py's
fp32 dequantization.
"""

from __future__ import annotations

import torch

from bitsmith.kernels.pack import unpack_rows


def dequantize_packed_t(
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    group_size: int,
    in_features: int,
) -> torch.Tensor:
    """fp32 W.T [K, N] with W[n, k] = (q[n, k] - zeros[k // g, n]) * scales[k // g, n]."""
    q = unpack_rows(qweight, bits)
    n = q.shape[1]
    groups = scales.shape[0]
    length = groups * group_size
    if q.shape[0] >= length:
        q = q[:length]
    else:
        q = torch.cat([q, q.new_zeros(length - q.shape[0], n)])
    w = (q.view(groups, group_size, n).to(torch.float32) - zeros.to(torch.float32).unsqueeze(1)) * scales.to(
        torch.float32
    ).unsqueeze(1)
    return w.reshape(length, n)[:in_features]
