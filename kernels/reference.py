"""Torch references for every low-bit kernel: slow, simple and the definition of correct.

The format: `w[n, k] = (q[n, k] - zeros[k // g, n]) * scales[k // g, n]`, with `q` packed as
kernels/pack.py describes, `scales` and `zeros` of shape [ceil(K / g), N]. The last group is
shorter when K is not a multiple of g. References compute in float32.
"""

from __future__ import annotations

import torch

from .pack import unpack_codes


def check_operands(
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    group_size: int,
    in_features: int,
) -> int:
    """Validate a packed weight's tensors against each other; returns out_features or raises ValueError."""
    if group_size <= 0:
        raise ValueError(f"group_size must be positive, got {group_size}")
    n = qweight.shape[1]
    groups = (in_features + group_size - 1) // group_size
    for name, t in (("scales", scales), ("zeros", zeros)):
        if t.shape != (groups, n):
            raise ValueError(
                f"{name} has shape {tuple(t.shape)}, expected ({groups}, {n}) for K={in_features}, "
                f"group {group_size}, N={n}"
            )
        if not t.is_floating_point():
            raise ValueError(f"{name} must be floating point, got {t.dtype}")
    return n


def dequantize(
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    group_size: int,
    in_features: int,
) -> torch.Tensor:
    """The float32 weight [N, K] that a packed weight stands for."""
    check_operands(qweight, scales, zeros, bits, group_size, in_features)
    q = unpack_codes(qweight, bits, in_features).to(torch.float32)  # [N, K]
    gidx = torch.arange(in_features, device=q.device) // group_size
    s = scales.to(torch.float32)[gidx].t()  # [N, K]
    z = zeros.to(torch.float32)[gidx].t()
    return (q - z) * s


def matmul(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    group_size: int,
    in_features: int,
) -> torch.Tensor:
    """`x @ deq(W).T` for x [..., K]: the forward of a quantized linear (no bias), in x's dtype."""
    if x.shape[-1] != in_features:
        raise ValueError(f"input has {x.shape[-1]} features, the weight expects {in_features}")
    w = dequantize(qweight, scales, zeros, bits, group_size, in_features)
    return (x.to(torch.float32) @ w.t()).to(x.dtype)


def matmul_backward_input(
    dy: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    group_size: int,
    in_features: int,
) -> torch.Tensor:
    """`dX = dY @ deq(W)` for dy [..., N]: the gradient of a quantized linear to its input."""
    n = check_operands(qweight, scales, zeros, bits, group_size, in_features)
    if dy.shape[-1] != n:
        raise ValueError(f"gradient has {dy.shape[-1]} features, the weight has {n} outputs")
    w = dequantize(qweight, scales, zeros, bits, group_size, in_features)
    return (dy.to(torch.float32) @ w).to(dy.dtype)
