"""`ChannelMixLinear`: one linear stored in several formats over groups of its input channels.

y = Σ_i part_i(x[..., perm[start_i:end_i]]) + b, where each part is a QuantLinear (so the Triton kernels run
on CUDA and the torch path elsewhere) over a contiguous slice of the permuted inputs (engine/quant/mix.py).

State-dict keys (the on-disk format) for a [N, K] layer with parts of K_i inputs:

=====================  =======================================  ==========================================
key                    dtype / shape                            present when
=====================  =======================================  ==========================================
``perm``               int16 [K] (int32 when K > 32768)         always: permuted input j = original perm[j]
``parts.<i>.<key>``    a QuantLinear's tensors for [N, K_i]     always, one set per part (no part bias)
``bias``               fp16 or fp32 [N]                         the layer has a bias (added once)
=====================  =======================================  ==========================================

This module also holds the helpers that let the rest of the engine treat both quantized layer kinds
alike: `quant_modules`, `format_of`, `module_bits`, `quantize_module`, `load_quant_module`, `build_module`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .bpw import LayerBits, MixedLayerBits, layer_bits, perm_bits_for
from .linear import QuantLinear
from .mix import ChannelMix, parse_format
from .quantize import QuantizedWeight, quantize_weight
from .spec import QuantSpec


def _perm_dtype(in_features: int) -> torch.dtype:
    return torch.int16 if perm_bits_for(in_features) == 16 else torch.int32


@dataclass
class MixedWeight:
    """A channel-mix weight in stored form: the parts' QuantizedWeights and the permutation (int64 [K])."""

    mix: ChannelMix
    parts: list[QuantizedWeight]
    perm: torch.Tensor


def quantize_mixed(
    weight: torch.Tensor, mix: ChannelMix, method: str = "rtn", name: str = "", **options
) -> MixedWeight:
    """Quantize a weight [N, K] as a channel-mix: part i from columns perm[slice_i] (identity perm if none)."""
    k = weight.shape[1]
    if mix.in_features != k:
        raise ValueError(f"{name or mix.name}: the mix covers {mix.in_features} inputs, the weight has {k}")
    perm = torch.arange(k) if mix.perm is None else torch.tensor(mix.perm, dtype=torch.int64)
    perm = perm.to(weight.device)
    parts = []
    for i, ((start, end), spec) in enumerate(zip(mix.slices, mix.specs)):
        how = method if spec.asymmetric else "rtn"  # HQQ refines zero-points: symmetric formats have none
        cols = weight.index_select(1, perm[start:end])
        parts.append(quantize_weight(cols, spec, how, f"{name}.parts.{i}", **options))
    return MixedWeight(mix, parts, perm)


class ChannelMixLinear(nn.Module):
    """y = Σ_i part_i(x[..., perm[slice_i]]) + b: a permutation plus one QuantLinear per part (see module doc)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        mix: ChannelMix | str,
        *,
        bias: bool = False,
        bias_dtype: torch.dtype = torch.float16,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        mix = parse_format(mix)
        if not isinstance(mix, ChannelMix):
            raise ValueError(f"{mix.name} is a single format: use QuantLinear")
        if mix.in_features != in_features:
            raise ValueError(f"the mix {mix.name} covers {mix.in_features} inputs, the layer has {in_features}")
        if bias_dtype not in (torch.float16, torch.float32):
            raise ValueError(f"bias_dtype must be float16 or float32, got {bias_dtype}")
        self.in_features = in_features
        self.out_features = out_features
        self.mix = ChannelMix(mix.specs, mix.widths)  # the permutation lives in the `perm` buffer
        self.parts = nn.ModuleList(
            QuantLinear(w, out_features, s, device=device) for s, w in zip(mix.specs, mix.widths)
        )
        self.register_buffer("perm", torch.arange(in_features, dtype=_perm_dtype(in_features), device=device))
        self.register_buffer("bias", torch.zeros(out_features, dtype=bias_dtype, device=device) if bias else None)
        self.register_buffer("gather", torch.arange(in_features, device=device), persistent=False)
        self.register_load_state_dict_post_hook(lambda module, _incompatible: module._materialize())

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_quantized(cls, mw: MixedWeight, bias: torch.Tensor | None = None) -> ChannelMixLinear:
        """Wrap a MixedWeight (and an optional bias, kept fp32 if it is fp32, else stored fp16)."""
        bias_dtype = torch.float32 if bias is not None and bias.dtype == torch.float32 else torch.float16
        device = mw.parts[0].qweight.device
        layer = cls(
            mw.mix.in_features, mw.parts[0].out_features, mw.mix, bias=bias is not None, bias_dtype=bias_dtype,
            device=device,
        )
        with torch.no_grad():
            for i, qw in enumerate(mw.parts):
                layer.parts[i] = QuantLinear.from_quantized(qw)
            layer.perm.copy_(mw.perm.to(device, layer.perm.dtype))
            if bias is not None:
                layer.bias.copy_(bias.detach().to(bias_dtype))
        layer._materialize()
        return layer

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, mix: ChannelMix | str, method: str = "rtn", name: str = "", **options
    ) -> ChannelMixLinear:
        """Quantize a torch Linear as `mix` (its `perm`, or the identity) by `method` ("rtn" or "hqq")."""
        mix = parse_format(mix)
        if not isinstance(mix, ChannelMix):
            raise ValueError(f"{mix.name} is a single format: use QuantLinear.from_linear")
        return cls.from_quantized(quantize_mixed(linear.weight.detach(), mix, method, name, **options), linear.bias)

    @classmethod
    def from_state_dict(
        cls, state: Mapping[str, torch.Tensor], mix: ChannelMix | str, in_features: int, prefix: str = ""
    ) -> ChannelMixLinear:
        """A ChannelMixLinear straight from stored tensors (keys `prefix + key`); ValueError if they do not fit."""
        mix = parse_format(mix)
        if not isinstance(mix, ChannelMix):
            raise ValueError(f"{prefix}: {mix.name} is a single format, not a channel-mix")
        if prefix + "perm" not in state:
            raise ValueError(f"no {prefix}perm in the state dict: not a channel-mix linear")
        parts = [
            QuantLinear.from_state_dict(state, spec, width, prefix=f"{prefix}parts.{i}.")
            for i, (spec, width) in enumerate(zip(mix.specs, mix.widths))
        ]
        bias = state.get(prefix + "bias")
        layer = cls(
            in_features, parts[0].out_features, mix, bias=bias is not None,
            bias_dtype=bias.dtype if bias is not None else torch.float16, device=state[prefix + "perm"].device,
        )
        known = {"perm", "bias"} | {f"parts.{i}.{k}" for i, p in enumerate(parts) for k in p.state_dict()}
        extra = sorted(k[len(prefix):] for k in state if k.startswith(prefix) and k[len(prefix):] not in known)
        if extra:
            raise ValueError(f"{prefix}: unexpected tensors {extra} for channel-mix {mix.name}")
        for key in ("perm", "bias"):
            ref = getattr(layer, key)
            if ref is None:
                continue
            t = state[prefix + key]
            if tuple(t.shape) != tuple(ref.shape) or t.dtype != ref.dtype:
                raise ValueError(
                    f"{prefix}{key}: stored {t.dtype} {tuple(t.shape)}, channel-mix {mix.name} expects "
                    f"{ref.dtype} {tuple(ref.shape)}"
                )
        with torch.no_grad():
            for i, p in enumerate(parts):
                if p.out_features != layer.out_features:
                    raise ValueError(f"{prefix}parts.{i} has {p.out_features} outputs, part 0 has {layer.out_features}")
                layer.parts[i] = p
            layer.perm.copy_(state[prefix + "perm"])
            if bias is not None:
                layer.bias.copy_(bias)
        layer._materialize()
        return layer

    # -- state --------------------------------------------------------------------------------------
    def _materialize(self) -> None:
        """Check `perm` is a permutation and refresh the int64 gather index the forward uses."""
        perm = self.perm.to(torch.int64)
        if not torch.equal(torch.sort(perm).values, torch.arange(self.in_features, device=perm.device)):
            raise ValueError(f"channel-mix {self.mix.name}: the stored perm is not a permutation of the inputs")
        self.gather = perm

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 - torch's signature
        """Move buffers with `fn` but keep their dtypes (the bias's is part of the stored format)."""

        def keep_dtype(t: torch.Tensor) -> torch.Tensor:
            out = fn(t)
            return out if out.dtype == t.dtype else t.to(out.device)

        return super()._apply(keep_dtype, recurse)

    @property
    def mix_with_perm(self) -> ChannelMix:
        """The mix carrying this layer's permutation."""
        return self.mix.with_perm(self.perm.tolist())

    # -- compute ----------------------------------------------------------------------------------
    def dequantize_t(self) -> torch.Tensor:
        """fp32 W.T [K, N] in the original input order."""
        stacked = torch.cat([p.dequantize_t() for p in self.parts], dim=0)  # permuted rows
        out = torch.empty_like(stacked)
        out[self.gather] = stacked
        return out

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight [N, K] this layer stands for, in the original input order."""
        return self.dequantize_t().t().to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., K] -> [..., N] in x's dtype: each part's QuantLinear forward on its gathered inputs, summed."""
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input has {x.shape[-1]} features, this layer expects {self.in_features}")
        y = None
        for (start, end), part in zip(self.mix.slices, self.parts):
            out = part(x.index_select(-1, self.gather[start:end]))
            y = out if y is None else y + out
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y

    # -- facts ------------------------------------------------------------------------------------
    def layer_bits(self) -> MixedLayerBits:
        """Exact stored bits (bias excluded from bpw, counted apart)."""
        bias_bits = 0 if self.bias is None else self.bias.element_size() * 8
        return self.mix.layer_bits(self.out_features, bias_bits=bias_bits)

    @property
    def bpw(self) -> float:
        """Bits per weight of every part's codes and statistics plus the permutation (bias excluded)."""
        return self.layer_bits().bpw

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, mix={self.mix.name}, "
            f"bias={self.bias is not None}, bpw={self.bpw:.3f}"
        )


QUANT_MODULES = (QuantLinear, ChannelMixLinear)
"""The module kinds a quantized layer can be."""


def quant_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Qualified name → quantized layer (QuantLinear or ChannelMixLinear), without the parts inside channel-mixes."""
    out: dict[str, nn.Module] = {}
    inside: list[str] = []
    for name, mod in model.named_modules():
        if any(name.startswith(p) for p in inside):
            continue
        if isinstance(mod, ChannelMixLinear):
            inside.append(name + ".")
            out[name] = mod
        elif isinstance(mod, QuantLinear):
            out[name] = mod
    return out


def format_of(mod: nn.Module) -> str:
    """The format name of a quantized layer: its spec's, or its mix's (e.g. "int4_g128:256+int2_g64:320")."""
    return mod.mix.name if isinstance(mod, ChannelMixLinear) else mod.spec.name


def module_bits(mod: nn.Module) -> LayerBits | MixedLayerBits:
    """Exact stored bits of a quantized layer."""
    if isinstance(mod, ChannelMixLinear):
        return mod.layer_bits()
    return layer_bits(mod.out_features, mod.in_features, mod.spec)


def quantize_module(
    linear: nn.Linear, fmt: QuantSpec | ChannelMix | str, method: str = "hqq", name: str = ""
) -> nn.Module:
    """The quantized replacement of `linear` in `fmt` (symmetric formats always by RTN: HQQ refines zeros)."""
    f = parse_format(fmt)
    if isinstance(f, ChannelMix):
        return ChannelMixLinear.from_linear(linear, f, method, name)
    return QuantLinear.from_linear(linear, f, method if f.asymmetric else "rtn", name)


def load_quant_module(
    state: Mapping[str, torch.Tensor], fmt: QuantSpec | ChannelMix | str, in_features: int, prefix: str = ""
) -> nn.Module:
    """A quantized layer of format `fmt` from stored tensors (QuantLinear or ChannelMixLinear)."""
    f = parse_format(fmt)
    if isinstance(f, ChannelMix):
        return ChannelMixLinear.from_state_dict(state, f, in_features, prefix=prefix)
    return QuantLinear.from_state_dict(state, f, in_features, prefix=prefix)


def build_module(weight: QuantizedWeight | MixedWeight, bias: torch.Tensor | None = None) -> nn.Module:
    """The quantized layer of a stored-form weight (QuantizedWeight → QuantLinear, MixedWeight → ChannelMixLinear)."""
    if isinstance(weight, MixedWeight):
        return ChannelMixLinear.from_quantized(weight, bias)
    return QuantLinear.from_quantized(weight, bias)


def mixed_weight_from_parts(mix: ChannelMix, parts: Sequence[QuantizedWeight]) -> MixedWeight:
    """A MixedWeight from parts quantized elsewhere (calibration), with `mix.perm` (or the identity)."""
    k = mix.in_features
    perm = torch.arange(k) if mix.perm is None else torch.tensor(mix.perm, dtype=torch.int64)
    return MixedWeight(mix, list(parts), perm.to(parts[0].qweight.device))
