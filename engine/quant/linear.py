"""`QuantLinear`: a linear layer that stores only packed codes and group statistics.

State-dict keys — the on-disk format, stable (shapes for a [N, K] layer, G = ceil(K / g)):

======================  ===================================  =============================================
key                     dtype / shape                         present when
======================  ===================================  =============================================
``qweight``             int32 [ceil(K/(32//b)), N]            always (kernels/pack.py layout)
``scales``              fp16 [G, N]                           scale_bits == 16
``scale_codes``         int32 [G, ceil(N/(32//S))]            scale_bits in (8, 4): log2-domain codes
``scale_meta``          fp16 [2, N]                           with scale_codes: per-row (offset, step)
``zeros``               fp16 [G, N]                           zero_bits == 16 (float zero-points)
``zero_codes``          int32 [G, ceil(N/(32//Z))]            integer zeros (Z = b) or double-quantized (Z)
``zero_meta``           fp16 [2, N]                           double-quantized zeros: per-row (offset, step)
``bias``                fp16 or fp32 [N]                      the layer has a bias
======================  ===================================  =============================================

Statistic codes are packed along N (engine/quant/stats.py). When statistics are stored as codes, the
fp16 `scales` / `zeros` the kernels consume are non-persistent buffers materialised from them
(deterministically, see stats.py) at construction and after every `load_state_dict`. The format
fixes every dtype: `.half()`, `.float()` or `.to(dtype)` move the module between devices but never
re-type its buffers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import ModuleType

import torch

from bitsmith.kernels.pack import packed_rows

from . import stats as st
from .bpw import layer_bits
from .dequant import dequantize_packed_t
from .quantize import QuantizedWeight, quantize_weight
from .spec import QuantSpec, parse_spec

log = logging.getLogger(__name__)

_DISPATCH: ModuleType | None | bool = False  # False: not looked up yet; None: not importable


def _kernels() -> ModuleType | None:
    """bitsmith.kernels.dispatch, imported on first CUDA use; None (logged once) if it cannot be imported."""
    global _DISPATCH
    if _DISPATCH is False:
        try:
            from bitsmith.kernels import dispatch
        except ImportError as exc:
            log.warning("quantized CUDA kernels unavailable (%s); using the torch path", exc)
            dispatch = None
        _DISPATCH = dispatch
    return _DISPATCH  # type: ignore[return-value]


class QuantLinear(torch.nn.Module):
    """y = x @ deq(W).T + b with W stored as packed low-bit codes and group statistics (see module doc)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        spec: QuantSpec | str,
        *,
        bias: bool = False,
        bias_dtype: torch.dtype = torch.float16,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        spec = parse_spec(spec)
        spec.require_packable()
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"QuantLinear needs positive sizes, got in={in_features}, out={out_features}")
        if bias_dtype not in (torch.float16, torch.float32):
            raise ValueError(f"bias_dtype must be float16 or float32, got {bias_dtype}")
        self.in_features = in_features
        self.out_features = out_features
        self.spec = spec
        n, g = out_features, spec.groups(in_features)
        self.register_buffer(
            "qweight", torch.zeros(packed_rows(in_features, spec.bits), n, dtype=torch.int32, device=device)
        )
        self._stored_keys = tuple(st.stat_shapes(spec, n, in_features))
        for key, (shape, dtype) in st.stat_shapes(spec, n, in_features).items():
            self.register_buffer(key, torch.zeros(shape, dtype=dtype, device=device))
        for key in ("scales", "zeros"):
            if key not in self._stored_keys:
                self.register_buffer(key, torch.zeros(g, n, dtype=torch.float16, device=device), persistent=False)
        self.register_buffer("bias", torch.zeros(n, dtype=bias_dtype, device=device) if bias else None)
        self.register_load_state_dict_post_hook(lambda module, _incompatible: module._materialize())
        self._materialize()

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_quantized(cls, qw: QuantizedWeight, bias: torch.Tensor | None = None) -> QuantLinear:
        """Wrap a QuantizedWeight (and an optional bias, kept fp32 if it is fp32, else stored fp16)."""
        bias_dtype = torch.float32 if bias is not None and bias.dtype == torch.float32 else torch.float16
        layer = cls(
            qw.in_features,
            qw.out_features,
            qw.spec,
            bias=bias is not None,
            bias_dtype=bias_dtype,
            device=qw.qweight.device,
        )
        with torch.no_grad():
            layer.qweight.copy_(qw.qweight)
            for key in layer._stored_keys:
                getattr(layer, key).copy_(qw.stored[key])
            if bias is not None:
                layer.bias.copy_(bias.detach().to(bias_dtype))
        layer._materialize()
        return layer

    @classmethod
    def from_linear(
        cls, linear: torch.nn.Linear, spec: QuantSpec | str, method: str = "rtn", name: str = "", **options
    ) -> QuantLinear:
        """Quantize a torch Linear (on its own device) by `method`; options go to `quantize_weight`."""
        qw = quantize_weight(linear.weight, spec, method, name, **options)
        return cls.from_quantized(qw, linear.bias)

    @classmethod
    def from_state_dict(
        cls,
        state: Mapping[str, torch.Tensor],
        spec: QuantSpec | str,
        in_features: int,
        prefix: str = "",
    ) -> QuantLinear:
        """Build a QuantLinear straight from stored tensors (keys `prefix + key`), no float Linear needed."""
        spec = parse_spec(spec)
        key = prefix + "qweight"
        if key not in state:
            raise ValueError(f"no {key!r} in the state dict: not a quantized linear of this format")
        qweight = state[key]
        bias = state.get(prefix + "bias")
        layer = cls(
            in_features,
            int(qweight.shape[1]),
            spec,
            bias=bias is not None,
            bias_dtype=bias.dtype if bias is not None else torch.float16,
            device=qweight.device,
        )
        expected = layer.state_dict()
        present = {k[len(prefix) :] for k in state if k.startswith(prefix) and "." not in k[len(prefix) :]}
        missing, extra = sorted(set(expected) - present), sorted(present - set(expected))
        if missing or extra:
            raise ValueError(
                f"{prefix or 'state dict'}: tensors do not match format {spec.name} "
                f"(missing {missing}, unexpected {extra})"
            )
        for k, ref in expected.items():
            t = state[prefix + k]
            if tuple(t.shape) != tuple(ref.shape) or t.dtype != ref.dtype:
                raise ValueError(
                    f"{prefix}{k}: stored {t.dtype} {tuple(t.shape)}, format {spec.name} with "
                    f"in_features={in_features} expects {ref.dtype} {tuple(ref.shape)}"
                )
        layer.load_state_dict({k: state[prefix + k] for k in expected}, strict=True)
        return layer

    # -- statistics -------------------------------------------------------------------------------
    def _materialize(self) -> None:
        """Recompute the fp16 scales/zeros from the stored tensors (a pure function of them)."""
        stored = {key: getattr(self, key) for key in self._stored_keys}
        scales, zeros = st.materialize_stats(stored, self.spec, self.out_features, self.in_features)
        with torch.no_grad():
            if "scales" not in self._stored_keys:
                self.scales = scales.to(self.qweight.device)
            if "zeros" not in self._stored_keys:
                self.zeros = zeros.to(self.qweight.device)

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 - torch's signature
        """Move buffers with `fn` but keep their dtypes: the stored format fixes them."""

        def keep_dtype(t: torch.Tensor) -> torch.Tensor:
            out = fn(t)
            return out if out.dtype == t.dtype else t.to(out.device)

        return super()._apply(keep_dtype, recurse)

    # -- compute ----------------------------------------------------------------------------------
    def dequantize_t(self) -> torch.Tensor:
        """fp32 W.T [K, N] (the layout the torch matmul path uses)."""
        return dequantize_packed_t(
            self.qweight, self.scales, self.zeros, self.spec.bits, self.spec.group_size, self.in_features
        )

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight [N, K] this layer stands for (bit-identical to kernels.reference.dequantize in fp32)."""
        return self.dequantize_t().t().to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., K] -> [..., N] in x's dtype: kernels.dispatch on CUDA when importable, else dequantize + matmul.

        Differentiable with respect to x on every path; the stored codes and statistics get no gradient.
        """
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input has {x.shape[-1]} features, this layer expects {self.in_features}")
        kernels = _kernels() if x.is_cuda else None
        if kernels is not None:
            matmul = kernels.quant_matmul
            if x.requires_grad and torch.is_grad_enabled():  # the plain kernel call is not differentiable
                matmul = getattr(kernels, "quant_matmul_autograd", matmul)
            y = matmul(
                x, self.qweight, self.scales, self.zeros, self.spec.bits, self.spec.group_size, self.in_features
            )
        elif x.device.type == "cpu":
            # CPU half-precision GEMMs are slow and no more exact: compute in fp32, return x's dtype.
            y = (x.to(torch.float32) @ self.dequantize_t()).to(x.dtype)
        else:
            y = x @ self.dequantize_t().to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y

    # -- facts ------------------------------------------------------------------------------------
    @property
    def bpw(self) -> float:
        """Bits per weight of the stored codes and statistics (bias excluded; engine/quant/bpw.py)."""
        return layer_bits(self.out_features, self.in_features, self.spec).bpw

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, spec={self.spec.name}, "
            f"bias={self.bias is not None}, bpw={self.bpw:.3f}"
        )
