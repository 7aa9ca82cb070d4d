"""Checks of a quantized matmul's operands, shared by every kernel wrapper: clear ValueErrors, early."""

from __future__ import annotations

import torch

from .pack import SUPPORTED_PACK_BITS, packed_rows
from .reference import check_operands
from .triton_utils import GPU_DTYPES, INTERPRETER_DTYPES, interpreter_active


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def check_weight(
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    group_size: int,
    in_features: int,
) -> int:
    """Validate a packed weight (dtype, shapes, layout, device); returns out_features N or raises ValueError."""
    for name, t in (("qweight", qweight), ("scales", scales), ("zeros", zeros)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if bits not in SUPPORTED_PACK_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_PACK_BITS}, got {bits}")
    if in_features <= 0:
        raise ValueError(f"in_features must be positive, got {in_features}")
    if qweight.dtype != torch.int32 or qweight.dim() != 2:
        raise ValueError(
            f"qweight must be a 2-D int32 tensor of packed codes [ceil(K/{32 // bits}), N], "
            f"got {qweight.dtype} with shape {_shape(qweight)}; pack codes with bitsmith.kernels.pack.pack_codes"
        )
    rows = packed_rows(in_features, bits)
    if qweight.shape[0] != rows:
        raise ValueError(
            f"qweight has shape {_shape(qweight)} but K={in_features} inputs at {bits} bits need "
            f"{rows} packed rows; is the weight transposed or packed with another bit width?"
        )
    n = check_operands(qweight, scales, zeros, bits, group_size, in_features)
    allowed = INTERPRETER_DTYPES if interpreter_active() and qweight.device.type == "cpu" else GPU_DTYPES
    for name, t in (("scales", scales), ("zeros", zeros)):
        if t.dtype not in allowed:
            raise ValueError(f"{name} has dtype {t.dtype}; supported here: {', '.join(map(str, allowed))}")
    for name, t in (("qweight", qweight), ("scales", scales), ("zeros", zeros)):
        if not t.is_contiguous():
            raise ValueError(f"{name} (shape {_shape(t)}) must be contiguous; call .contiguous() on it first")
        if t.device != qweight.device:
            raise ValueError(f"{name} is on {t.device} but qweight is on {qweight.device}; move them together")
    return n


def check_activation(name: str, x: torch.Tensor, features: int, weight_device: torch.device) -> None:
    """Validate an activation (or gradient) [..., features] against the weight's device; raises ValueError."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    under_interpreter = interpreter_active() and x.device.type == "cpu"
    allowed = INTERPRETER_DTYPES if under_interpreter else GPU_DTYPES
    if x.dtype not in allowed:
        where = " under the Triton interpreter (no bfloat16 there)" if under_interpreter else ""
        raise ValueError(
            f"{name} has dtype {x.dtype}; supported{where}: {', '.join(map(str, allowed))}"
        )
    if x.dim() < 1 or x.shape[-1] != features:
        raise ValueError(f"{name} has shape {_shape(x)}; its last dimension must be {features}")
    if x.device != weight_device:
        raise ValueError(f"{name} is on {x.device} but the weight is on {weight_device}; move them together")


def check_out(out: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> None:
    """Validate a caller-provided output buffer; raises ValueError."""
    if _shape(out) != tuple(shape) or out.dtype != dtype or out.device != device:
        raise ValueError(
            f"out is {out.dtype} {_shape(out)} on {out.device}; expected {dtype} {tuple(shape)} on {device}"
        )
    if not out.is_contiguous():
        raise ValueError(f"out (shape {_shape(out)}) must be contiguous")
