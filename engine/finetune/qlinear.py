"""`QSFTLinear`: a QuantLinear made trainable without a float copy of its weight.

The packed int32 codes of the wrapped QuantLinear stay the only copy of the weight. Its scales train as
`log_scales` (fp32): Adam on log s moves every scale by a relative amount, whatever its magnitude, and s
stays positive; fp32 because an fp16 scale cannot take steps smaller than about 5e-4 of itself, which is
where Adam's steps are. Zero-points train as fp32 parameters when the format stores them as floats (``_zf``)
or double-quantized (``_zq``); exact integer zero-points stay fixed (moving one by a whole step equals moving
every code of its group, which the code optimizer does anyway, and an integer zero keeps 0.0 exact).
Double-quantized scales and zeros are re-encoded into their format by `write_back`, so the bpw never changes.

`QSFTMatmul` computes y = x @ deq(W).T. Its backward gives dX (Triton kernel on CUDA, torch elsewhere), the
gradients of scales and zeros by the chain rule, and hands dW = dY^T X, a block of output rows at a time,
to the layer's code optimizer, which moves codes in place before the next block is computed. dW of the
whole layer never exists at once, and no layer's dW outlives its backward.
"""

from __future__ import annotations

from types import ModuleType
from typing import Protocol

import torch
from torch import nn

from bitsmith.engine.quant import stats as st
from bitsmith.engine.quant.dequant import dequantize_packed_t
from bitsmith.engine.quant.groups import SCALE_FLOOR
from bitsmith.engine.quant.linear import QuantLinear
from bitsmith.engine.quant.pack import unpack_rows

BLOCK_ELEMENTS = 1 << 24
"""Elements of dW computed at once in the backward (64 MiB in fp32): bounds its transient memory."""

BACKENDS = ("auto", "torch", "kernels")


class CodeStepper(Protocol):
    """What QSFTMatmul's backward calls with each block of dW (implemented by optim.CodeOptimizer)."""

    def step_rows(self, layer: QSFTLinear, r0: int, r1: int, dwt: torch.Tensor, codes: torch.Tensor,
                  scales: torch.Tensor) -> None:
        """Move the codes of output columns r0:r1 from dW^T [K, R] (codes int32 [K, R], scales [G, R])."""


def _dispatch() -> ModuleType | None:
    try:
        from bitsmith.kernels import dispatch
    except ImportError:
        return None
    return dispatch


class QSFTLinear(nn.Module):
    """Trainable view of a QuantLinear (see module docstring); `unwrap()` gives the QuantLinear back."""

    def __init__(self, base: QuantLinear, *, train_scales: bool = True, train_zeros: bool = True,
                 backend: str = "auto", name: str = "") -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.base = base
        self.name = name
        self.backend = backend
        spec = base.spec
        self.log_scales = nn.Parameter(torch.log(base.scales.detach().float().clamp(min=SCALE_FLOOR)),
                                       requires_grad=train_scales)
        self.zeros_trainable = train_zeros and (spec.float_zeros or spec.double_quant_zeros)
        if self.zeros_trainable:
            self.zeros = nn.Parameter(base.zeros.detach().float())
        else:
            self.zeros = None
        self.code_optimizer: CodeStepper | None = None
        self.cache_dequantized = False  # keep deq(W) from forward for dX (CPU: saves a dequantize per step)
        self.compute_dtype: torch.dtype | None = None  # torch path: matmul dtype (None: fp32); bf16 on bf16 CPUs

    @property
    def spec(self):  # noqa: ANN201 - QuantSpec
        """The wrapped layer's format."""
        return self.base.spec

    @property
    def in_features(self) -> int:
        """K."""
        return self.base.in_features

    @property
    def out_features(self) -> int:
        """N."""
        return self.base.out_features

    def current_zeros(self) -> torch.Tensor:
        """Zero-points [G, N] as used in the forward (the trainable fp32 ones, or the fixed fp16 ones)."""
        return self.zeros if self.zeros is not None else self.base.zeros

    def use_kernels(self, x: torch.Tensor) -> bool:
        """Whether this call goes through bitsmith.kernels (CUDA by default; forced by backend="kernels")."""
        if self.backend == "torch" or (self.backend == "auto" and not x.is_cuda):
            return False
        return _dispatch() is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., K] -> [..., N]."""
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input has {x.shape[-1]} features, this layer expects {self.in_features}")
        y = QSFTMatmul.apply(x, self.log_scales.exp(), self.current_zeros(), self)
        bias = self.base.bias
        return y if bias is None else y + bias.to(y.dtype)

    @torch.no_grad()
    def write_back(self) -> None:
        """Store the trained statistics into the QuantLinear, in its own format (re-encoded if double-quantized)."""
        base, spec = self.base, self.spec
        scales = self.log_scales.detach().float().exp().clamp(SCALE_FLOOR, st.FP16_MAX)
        if spec.double_quant_scales:
            codes, meta = st.encode_scales(scales.cpu(), spec.scale_bits)
            base.scale_codes.copy_(st.pack_stat_codes(codes, spec.scale_bits).to(base.scale_codes.device))
            base.scale_meta.copy_(meta.to(base.scale_meta.device))
        else:
            base.scales.copy_(scales.to(torch.float16))
        if self.zeros is not None:
            zeros = self.zeros.detach().float().clamp(-st.FP16_MAX, st.FP16_MAX)
            if spec.float_zeros:
                base.zeros.copy_(zeros.to(torch.float16))
            else:
                codes, meta = st.encode_zeros(zeros.cpu(), spec)
                base.zero_codes.copy_(st.pack_stat_codes(codes, spec.zero_bits).to(base.zero_codes.device))
                base.zero_meta.copy_(meta.to(base.zero_meta.device))
        base._materialize()

    def unwrap(self) -> QuantLinear:
        """Write the statistics back and return the plain QuantLinear (the codes were trained in place)."""
        self.write_back()
        return self.base

    def extra_repr(self) -> str:
        return (f"{self.spec.name}, in={self.in_features}, out={self.out_features}, "
                f"zeros={'trained' if self.zeros is not None else 'fixed'}")


class QSFTMatmul(torch.autograd.Function):
    """y = x @ deq(W).T with gradients to x, scales and zeros, and dW blocks to the code optimizer."""

    @staticmethod
    def forward(ctx, x, scales, zeros, layer: QSFTLinear):  # noqa: ANN001, ANN205 - autograd signature
        base, spec = layer.base, layer.spec
        kernels = layer.use_kernels(x)
        ctx.layer, ctx.kernels, ctx.w_t = layer, kernels, None
        if kernels:
            y = _dispatch().quant_matmul(x, base.qweight, scales.contiguous(), zeros.contiguous(), spec.bits,
                                         spec.group_size, layer.in_features)
        else:
            cd = layer.compute_dtype or torch.float32
            w_t = dequantize_packed_t(base.qweight, scales, zeros, spec.bits, spec.group_size,
                                      layer.in_features).to(cd)
            y = (x.to(cd) @ w_t).to(x.dtype)
            if layer.cache_dequantized and torch.is_grad_enabled():
                ctx.w_t = w_t
        ctx.save_for_backward(x, scales, zeros)
        return y

    @staticmethod
    def backward(ctx, dy):  # noqa: ANN001, ANN205 - autograd signature
        x, scales, zeros = ctx.saved_tensors
        layer: QSFTLinear = ctx.layer
        base, spec = layer.base, layer.spec
        k, n = layer.in_features, layer.out_features
        dx = ds = dz = None
        if ctx.needs_input_grad[0]:
            if ctx.kernels:
                dx = _dispatch().quant_matmul_backward_input(dy.contiguous(), base.qweight, scales.contiguous(),
                                                             zeros.contiguous(), spec.bits, spec.group_size, k)
            else:
                cd = layer.compute_dtype or torch.float32
                w_t = ctx.w_t if ctx.w_t is not None else dequantize_packed_t(
                    base.qweight, scales, zeros, spec.bits, spec.group_size, k).to(cd)
                dx = (dy.to(cd) @ w_t.t()).to(dy.dtype)
        ctx.w_t = None
        need_s, need_z = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        stepper = layer.code_optimizer
        if need_s or need_z or stepper is not None:
            ds = torch.zeros_like(scales, dtype=torch.float32) if need_s else None
            dz = torch.zeros_like(zeros, dtype=torch.float32) if need_z else None
            _weight_grad_blocks(layer, dy.reshape(-1, n), x.reshape(-1, k), scales, zeros, ds, dz, stepper)
            ds = ds.to(scales.dtype) if ds is not None else None
            dz = dz.to(zeros.dtype) if dz is not None else None
        return dx, ds, dz, None


def unpack_t(qweight: torch.Tensor, bits: int, in_features: int) -> torch.Tensor:
    """Packed words [rows, R] (any column slice) -> int32 codes [K, R], the layout the words are in."""
    return unpack_rows(qweight, bits)[:in_features]


def grouped_t(t: torch.Tensor, groups: int, group_size: int) -> torch.Tensor:
    """[K, R] -> [G, g, R], zero-padded along K to G·g (the last group may be short)."""
    pad = groups * group_size - t.shape[0]
    if pad:
        t = torch.cat([t, t.new_zeros(pad, t.shape[1])])
    return t.view(groups, group_size, t.shape[1])


def _weight_grad_blocks(layer: QSFTLinear, dy2: torch.Tensor, x2: torch.Tensor, scales: torch.Tensor,
                        zeros: torch.Tensor, ds: torch.Tensor | None, dz: torch.Tensor | None,
                        stepper: CodeStepper | None) -> None:
    """dW^T = X^T dY by blocks of output columns: statistics gradients, then the code step of that block.

    Everything here is in the packed words' own layout, [K, N] (K = inputs along the packed dimension), so
    codes unpack and repack without transposes and a group is a run of g rows.
    """
    spec, qweight = layer.spec, layer.base.qweight
    k, n, g = layer.in_features, layer.out_features, spec.group_size
    groups = scales.shape[0]
    cols = max(1, min(n, BLOCK_ELEMENTS // max(k, 1)))
    cd = x2.dtype if x2.is_cuda else (layer.compute_dtype or torch.float32)
    x2t = x2.t().to(cd)
    for r0 in range(0, n, cols):
        r1 = min(n, r0 + cols)
        dwt = (x2t @ dy2[:, r0:r1].to(cd)).to(torch.float32)  # [K, R]
        codes = unpack_t(qweight[:, r0:r1], spec.bits, k)  # int32 [K, R]
        s_blk = scales[:, r0:r1].to(torch.float32)  # [G, R]
        if ds is not None or dz is not None:
            dwg = grouped_t(dwt, groups, g)
            total = dwg.sum(1)  # [G, R]
            if ds is not None:  # sum dW (q - z) = sum dW q - z sum dW (padded rows have dW = 0)
                dq = (dwg * grouped_t(codes, groups, g)).sum(1)
                ds[:, r0:r1] = dq - zeros[:, r0:r1].to(torch.float32) * total
            if dz is not None:
                dz[:, r0:r1] = -s_blk * total
            del dwg
        if stepper is not None:
            stepper.step_rows(layer, r0, r1, dwt, codes, s_blk)


def wrap_model(model: nn.Module, *, train_scales: bool = True, train_zeros: bool = True,
               backend: str = "auto") -> dict[str, QSFTLinear]:
    """Replace every QuantLinear of `model` by a QSFTLinear (in place); returns them by qualified name."""
    from bitsmith.engine.quant.store import set_submodule

    wrapped = {}
    for name, mod in list(model.named_modules()):
        if isinstance(mod, QuantLinear):
            layer = QSFTLinear(mod, train_scales=train_scales, train_zeros=train_zeros, backend=backend, name=name)
            set_submodule(model, name, layer)
            wrapped[name] = layer
    return wrapped


def unwrap_model(model: nn.Module) -> int:
    """Put the trained QuantLinears back in place of every QSFTLinear; returns how many."""
    from bitsmith.engine.quant.store import set_submodule

    count = 0
    for name, mod in list(model.named_modules()):
        if isinstance(mod, QSFTLinear):
            set_submodule(model, name, mod.unwrap())
            count += 1
    return count

