"""The entry points of the low-bit kernels: pick a path by batch size and device, validate, run.

`quant_matmul` is `x @ deq(W).T` for x [..., K]; `quant_matmul_autograd` the same with gradients:
to x by the backward kernel, to scales and zeros when they require it, and to the dequantized weight
(dW = dY^T X, float32 [N, K]) through an optional `weight_grad_hook`, which is how the Q-SFT optimizer
receives the signal for the packed codes. Importable without triton: kernels are imported on first use,
and devices the kernels cannot serve (CPU without the interpreter, Apple GPUs) use torch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import reference
from .triton_utils import (
    autotune_enabled,
    kernels_usable,
    m_bucket,
    pick_config,
    tile_block_k_options,
    triton_width,
    words_fit_groups,
)
from .validate import check_activation, check_out, check_weight

# Row counts at which each path takes over; see docs/benchmarks/kernels.md before changing them.
GEMV_MAX_M = 4
SPLITK_MAX_M = 64

PATHS = ("torch", "dense", "gemv", "splitk", "gemm")
DENSE_MIN_M = 64  # from here on the tuner also times dequantize-then-cuBLAS (docs/benchmarks/kernels.md)

WeightGradHook = Callable[[torch.Tensor], None]


def choose_path(m: int, device: torch.device, bits: int, group_size: int) -> str:
    """Which implementation serves `m` rows on `device`: one of PATHS.

    torch: dequantize with torch then matmul (no Triton for this device). dense: the Triton dequantize
    kernel then cuBLAS (group sizes the fused kernels cannot tile, and 3-bit planes beyond the GEMV's M).
    gemv / splitk / gemm: fused kernels for M <= GEMV_MAX_M, M <= SPLITK_MAX_M and larger M.
    """
    if not kernels_usable(device):
        return "torch"
    if not triton_width(bits):  # 3-bit planes: the GEMV and the dequantize kernel unpack them
        return "gemv" if m <= GEMV_MAX_M else "dense"
    if not words_fit_groups(bits, group_size):
        return "dense"
    if m <= GEMV_MAX_M:
        return "gemv"
    if m <= SPLITK_MAX_M or not tile_block_k_options(bits, group_size):
        return "splitk"
    return "gemm"


def eligible_paths(m: int, bits: int, group_size: int) -> list[str]:
    """The paths that can serve `m` rows of this format on a GPU (the tuner times them and keeps the fastest)."""
    paths = []
    if not triton_width(bits):
        return ["gemv"] if m <= GEMV_MAX_M else ["dense"]
    if words_fit_groups(bits, group_size):
        if m <= GEMV_MAX_M:
            paths.append("gemv")
        if m <= 4 * SPLITK_MAX_M:
            paths.append("splitk")
    if m >= 16 and tile_block_k_options(bits, group_size):
        paths.append("gemm")
    if m >= DENSE_MIN_M and triton_width(bits):
        paths.append("dense")  # dequantize + cuBLAS beat the fused GEMM at many large-M shapes on an H100
    return paths


def pick_path(x2: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, bits: int,
              group_size: int, in_features: int, out: torch.Tensor | None = None) -> str:
    """The path for this call: the heuristic of `choose_path`, or on a CUDA GPU with tuning on, the fastest
    eligible path for this shape, timed once per process (kernel speed depends on N, K and the GPU, and the
    crossover points measured on an H100 differ by shape: docs/benchmarks/kernels.md)."""
    m = x2.shape[0]
    path = choose_path(m, x2.device, bits, group_size)
    if x2.device.type != "cuda" or path not in ("gemv", "splitk", "gemm") or not autotune_enabled():
        return path
    others = [p for p in eligible_paths(m, bits, group_size) if p != path]
    if not others:
        return path
    key = ("path", m_bucket(m), qweight.shape[1], in_features, bits, group_size, x2.dtype, str(x2.device))
    cands = [{"path": p} for p in [path, *others]]
    return pick_config(key, cands, lambda c: run_path(c["path"], x2, qweight, scales, zeros, bits, group_size,
                                                      in_features, out))["path"]


def run_path(
    path: str,
    x2: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    group_size: int,
    in_features: int,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run one named path on a 2-D x [M, K] (benchmarks and tests call this to pin a path)."""
    args = (x2, qweight, scales, zeros, bits, group_size, in_features)
    if path == "gemv":
        from .gemv import gemv

        return gemv(*args, out=out)
    if path == "splitk":
        from .gemm_splitk import gemm_splitk

        return gemm_splitk(*args, out=out)
    if path == "gemm":
        from .gemm_dequant import gemm_dequant

        return gemm_dequant(*args, out=out)
    if path == "dense":
        from .dequant import dequantize_kernel

        w = dequantize_kernel(qweight, scales, zeros, bits, group_size, in_features, x2.dtype)
        return torch.matmul(x2, w.t(), out=out) if out is not None else torch.matmul(x2, w.t())
    if path == "torch":
        w = reference.dequantize(qweight, scales, zeros, bits, group_size, in_features).to(x2.dtype)
        return torch.matmul(x2, w.t(), out=out) if out is not None else torch.matmul(x2, w.t())
    raise ValueError(f"unknown path {path!r}; choose one of {PATHS}")


def quant_matmul(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    group_size: int,
    in_features: int,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """`x @ deq(W).T` for x [..., K] (float16, bfloat16 or float32) -> [..., N] in x's dtype.

    Raises ValueError naming the shapes when the operands do not fit together (see validate.py).
    """
    n = check_weight(qweight, scales, zeros, bits, group_size, in_features)
    check_activation("x", x, in_features, qweight.device)
    lead = tuple(x.shape[:-1])
    x2 = x.reshape(-1, in_features)
    if x2.shape[0] and x2.stride(-1) != 1:
        x2 = x2.contiguous()
    m = x2.shape[0]
    out2 = None
    if out is not None:
        check_out(out, (*lead, n), x.dtype, x.device)
        out2 = out.view(m, n)
    if m == 0 or n == 0:
        return out if out is not None else x.new_empty((*lead, n))
    path = pick_path(x2, qweight, scales, zeros, bits, group_size, in_features, out2)
    y = run_path(path, x2, qweight, scales, zeros, bits, group_size, in_features, out2)
    return out if out is not None else y.view(*lead, n)


def quant_matmul_backward_input(
    dy: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    group_size: int,
    in_features: int,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """`dY @ deq(W)` for dy [..., N] -> [..., K] in dy's dtype: the kernel where it applies, else torch."""
    n = check_weight(qweight, scales, zeros, bits, group_size, in_features)
    check_activation("dy", dy, n, qweight.device)
    lead = tuple(dy.shape[:-1])
    dy2 = dy.reshape(-1, n)
    if dy2.shape[0] and dy2.stride(-1) != 1:
        dy2 = dy2.contiguous()
    m = dy2.shape[0]
    out2 = None
    if out is not None:
        check_out(out, (*lead, in_features), dy.dtype, dy.device)
        out2 = out.view(m, in_features)
    if m == 0:
        return out if out is not None else dy.new_empty((*lead, in_features))
    if kernels_usable(dy.device) and tile_block_k_options(bits, group_size):
        from .backward import matmul_backward_input

        y = matmul_backward_input(dy2, qweight, scales, zeros, bits, group_size, in_features, out=out2)
    else:
        w = dequantize(qweight, scales, zeros, bits, group_size, in_features, dy.dtype)
        y = torch.matmul(dy2, w, out=out2) if out2 is not None else torch.matmul(dy2, w)
    return out if out is not None else y.view(*lead, in_features)


def dequantize(
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    group_size: int,
    in_features: int,
    dtype: torch.dtype = torch.float16,
) -> torch.Tensor:
    """The dense weight [N, K] in `dtype`: the Triton kernel where it runs, the torch reference elsewhere."""
    check_weight(qweight, scales, zeros, bits, group_size, in_features)
    if kernels_usable(qweight.device):
        from .dequant import dequantize_kernel as _kernel

        return _kernel(qweight, scales, zeros, bits, group_size, in_features, dtype)
    return reference.dequantize(qweight, scales, zeros, bits, group_size, in_features).to(dtype)


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
    """The Triton dequantize kernel (imported on use; needs a CUDA GPU or the interpreter)."""
    from .dequant import dequantize_kernel as _kernel

    return _kernel(qweight, scales, zeros, bits, group_size, in_features, dtype, out=out)


def scale_zero_grads(
    dw: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    group_size: int,
    in_features: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients to scales and zeros [G, N] from dW = dL/d deq(W) [N, K] (float32), by the chain rule.

    w = (q - z) * s, so dL/ds = sum over the group of dW * (q - z) and dL/dz = -s * sum of dW.
    """
    from .pack import unpack_codes

    n, k, g = dw.shape[0], in_features, group_size
    groups = scales.shape[0]
    pad = groups * g - k
    q = unpack_codes(qweight, bits, k).to(torch.float32)
    dw_g = torch.nn.functional.pad(dw, (0, pad)).view(n, groups, g)
    q_g = torch.nn.functional.pad(q, (0, pad)).view(n, groups, g)
    z = zeros.to(torch.float32).t()
    s = scales.to(torch.float32).t()
    ds = (dw_g * (q_g - z[:, :, None])).sum(-1)
    dz = -s * dw_g.sum(-1)
    return ds.t().to(scales.dtype), dz.t().to(zeros.dtype)


class QuantMatmulFunction(torch.autograd.Function):
    """Autograd for `quant_matmul`: dX by the backward kernel; dW to a hook; scale and zero gradients.

    The packed codes get no gradient of their own (they are integers); `weight_grad_hook(dW)`, if given,
    receives dW = dY^T X as float32 [N, K] once per backward, after dX has been computed, so the hook may
    update the packed weight in place. Accumulating over micro-batches is the hook's business.
    """

    @staticmethod
    def forward(ctx, x, qweight, scales, zeros, bits, group_size, in_features, weight_grad_hook):
        y = quant_matmul(x, qweight, scales, zeros, bits, group_size, in_features)
        need_x = weight_grad_hook is not None or ctx.needs_input_grad[2] or ctx.needs_input_grad[3]
        ctx.save_for_backward(x if need_x else None, qweight, scales, zeros)
        ctx.meta = (bits, group_size, in_features, weight_grad_hook)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, qweight, scales, zeros = ctx.saved_tensors
        bits, group_size, in_features, hook = ctx.meta
        dx = ds = dz = None
        if ctx.needs_input_grad[0]:
            dx = quant_matmul_backward_input(dy, qweight, scales, zeros, bits, group_size, in_features)
        if x is not None:
            n = qweight.shape[1]
            dy2 = dy.reshape(-1, n).to(torch.float32)
            dw = dy2.t() @ x.reshape(-1, in_features).to(torch.float32)
            if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
                ds, dz = scale_zero_grads(dw, qweight, scales, zeros, bits, group_size, in_features)
                ds = ds if ctx.needs_input_grad[2] else None
                dz = dz if ctx.needs_input_grad[3] else None
            if hook is not None:
                hook(dw)
        return dx, None, ds, dz, None, None, None, None


def quant_matmul_autograd(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    group_size: int,
    in_features: int,
    weight_grad_hook: WeightGradHook | None = None,
) -> torch.Tensor:
    """`quant_matmul` that autograd can differentiate; see QuantMatmulFunction for what flows back."""
    return QuantMatmulFunction.apply(x, qweight, scales, zeros, bits, group_size, in_features, weight_grad_hook)
