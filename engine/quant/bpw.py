"""Exact bits-per-weight accounting of everything a quantized linear stores (torch-free: the planner uses it).

For a linear of shape [N, K] = (out_features, in_features) and G = ceil(K / g) groups, the stored
tensors (engine/quant/linear.py, state-dict keys in brackets) cost:

* codes  [qweight]: int32 [packed_rows(K, b), N] — whole packing units, the padding of the last one counts
  (2/4/8 bits: 32 // b codes per word; 3 bits: bit planes, 32 codes in 3 words, kernels/pack.py);
* scales [scales]: fp16 [G, N]; or, double-quantized, [scale_codes] int32 [G, packed_rows(N, S)] (codes packed
  along N, GPTQ-qzeros layout) + [scale_meta] fp16 [2, N] (per-row offset, step);
* zeros  [zeros]: fp16 [G, N]; or integer [zero_codes] int32 [G, packed_rows(N, b)]; or double-quantized
  [zero_codes] int32 [G, packed_rows(N, Z)] + [zero_meta] fp16 [2, N]; symmetric specs store none;
* an optional input permutation (act-order), int16 or int32 per input channel;
* an optional bias, N × 16 or 32 bits, reported separately and not part of bpw.

bpw = (codes + scales + zeros + permutation) / (N·K). A channel-mix linear (engine/quant/mix.py) stores one
such set of tensors per part ([N, K_i] in the part's format, keys ``parts.<i>.<key>``) plus its permutation
[perm] (int16 when K <= 32768, else int32); `channel_mix_bits` counts them. The tests check these formulas
against the byte sizes of real QuantLinear and ChannelMixLinear state dicts, so this module cannot drift from
the storage format.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bitsmith.kernels.pack_layout import packed_rows

from .spec import QuantSpec

WORD_BITS = 32
STAT_BITS = 16
META_ROWS = 2  # (offset, step) per output row for each double-quantized statistic


def _words(count: int, bits: int) -> int:
    """int32 words that hold `count` codes of `bits` bits, in whole packing units (kernels/pack_layout.py)."""
    return packed_rows(count, bits)


class _Totals:
    """What follows from a layer's bits by kind: weights, statistics, the bpw total (codes, statistics and
    permutation; not the bias) and bpw. Shared by plain and channel-mix layers."""

    out_features: int
    in_features: int
    codes: int
    scales: int
    zeros: int
    meta: int
    perm: int

    @property
    def weights(self) -> int:
        """Number of weights N·K the layer stands for."""
        return self.out_features * self.in_features

    @property
    def stats(self) -> int:
        """Bits of scales, zeros and their second-level statistics."""
        return self.scales + self.zeros + self.meta

    @property
    def total(self) -> int:
        """Bits counted in bpw: codes, statistics and permutation (not the bias)."""
        return self.codes + self.stats + self.perm

    @property
    def bpw(self) -> float:
        """Bits per weight of everything stored for this layer except its bias."""
        return self.total / self.weights


@dataclass(frozen=True)
class LayerBits(_Totals):
    """Bits stored for one quantized linear, by tensor kind; `bpw` excludes the bias."""

    name: str
    out_features: int
    in_features: int
    spec: QuantSpec
    codes: int
    scales: int
    zeros: int
    meta: int
    perm: int = 0
    bias: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able breakdown."""
        return {
            "name": self.name,
            "out_features": self.out_features,
            "in_features": self.in_features,
            "spec": self.spec.name,
            "codes_bits": self.codes,
            "scales_bits": self.scales,
            "zeros_bits": self.zeros,
            "meta_bits": self.meta,
            "perm_bits": self.perm,
            "bias_bits": self.bias,
            "bpw": self.bpw,
        }


def layer_bits(
    out_features: int,
    in_features: int,
    spec: QuantSpec,
    *,
    perm_bits: int = 0,
    bias_bits: int = 0,
    name: str = "",
) -> LayerBits:
    """Exact stored bits of a quantized linear [N, K] in format `spec` (see the module docstring)."""
    n, k = out_features, in_features
    if n <= 0 or k <= 0:
        raise ValueError(f"layer {name or '?'} has shape [{n}, {k}]; both sizes must be positive")
    if perm_bits not in (0, 16, 32):
        raise ValueError(f"perm_bits must be 0 (none), 16 or 32, got {perm_bits}")
    if bias_bits not in (0, 16, 32):
        raise ValueError(f"bias_bits must be 0 (none), 16 or 32, got {bias_bits}")
    g = spec.groups(k)
    codes = _words(k, spec.bits) * WORD_BITS * n
    meta = 0
    if spec.double_quant_scales:
        scales = g * _words(n, spec.scale_bits) * WORD_BITS
        meta += META_ROWS * n * STAT_BITS
    else:
        scales = g * n * STAT_BITS
    zb = spec.zero_bits or 0
    if not spec.asymmetric:
        zeros = 0
    elif spec.float_zeros:
        zeros = g * n * STAT_BITS
    else:
        zeros = g * _words(n, zb) * WORD_BITS
        if spec.double_quant_zeros:
            meta += META_ROWS * n * STAT_BITS
    return LayerBits(
        name=name,
        out_features=n,
        in_features=k,
        spec=spec,
        codes=codes,
        scales=scales,
        zeros=zeros,
        meta=meta,
        perm=perm_bits * k,
        bias=bias_bits * n,
    )


def perm_bits_for(in_features: int) -> int:
    """Bits per stored permutation entry: int16 holds indices up to 32767, wider layers need int32."""
    return 16 if in_features <= 2**15 else 32


@dataclass(frozen=True)
class MixedLayerBits(_Totals):
    """Bits stored for one channel-mix linear: its parts (each a LayerBits over its inputs) and the permutation."""

    name: str
    out_features: int
    in_features: int
    parts: tuple[LayerBits, ...]
    perm: int
    bias: int = 0

    @property
    def codes(self) -> int:
        """Bits of the packed codes of every part."""
        return sum(p.codes for p in self.parts)

    @property
    def scales(self) -> int:
        """Bits of the scales of every part."""
        return sum(p.scales for p in self.parts)

    @property
    def zeros(self) -> int:
        """Bits of the zero-points of every part."""
        return sum(p.zeros for p in self.parts)

    @property
    def meta(self) -> int:
        """Bits of the parts' second-level statistics."""
        return sum(p.meta for p in self.parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able breakdown (the parts' own breakdowns included)."""
        return {
            "name": self.name,
            "out_features": self.out_features,
            "in_features": self.in_features,
            "spec": "+".join(f"{p.spec.name}:{p.in_features}" for p in self.parts),
            "codes_bits": self.codes,
            "scales_bits": self.scales,
            "zeros_bits": self.zeros,
            "meta_bits": self.meta,
            "perm_bits": self.perm,
            "bias_bits": self.bias,
            "bpw": self.bpw,
            "parts": [p.to_dict() for p in self.parts],
        }


def channel_mix_bits(
    out_features: int, parts: Sequence[tuple[QuantSpec, int]], *, bias_bits: int = 0, name: str = ""
) -> MixedLayerBits:
    """Exact stored bits of a channel-mix linear whose parts are (format, inputs) in permuted order."""
    if bias_bits not in (0, 16, 32):
        raise ValueError(f"bias_bits must be 0 (none), 16 or 32, got {bias_bits}")
    rows = tuple(layer_bits(out_features, k, spec, name=f"{name}.parts.{i}") for i, (spec, k) in enumerate(parts))
    k = sum(r.in_features for r in rows)
    return MixedLayerBits(
        name=name, out_features=out_features, in_features=k, parts=rows, perm=perm_bits_for(k) * k,
        bias=bias_bits * out_features,
    )


@dataclass(frozen=True)
class KeptTensor:
    """A tensor stored unquantized (embeddings, norms, usually lm_head) at `bits` per element."""

    name: str
    numel: int
    bits: int = 16


@dataclass(frozen=True)
class ModelBits:
    """Size report of a whole model: quantized linears, biases, and the tensors kept in 16 bits."""

    layers: tuple[LayerBits | MixedLayerBits, ...]
    kept: tuple[KeptTensor, ...]

    @property
    def quantized_weights(self) -> int:
        """Weights in quantized linears."""
        return sum(layer.weights for layer in self.layers)

    @property
    def quantized_bits(self) -> int:
        """Bits of quantized linears (codes, statistics, permutations; no biases)."""
        return sum(layer.total for layer in self.layers)

    @property
    def bias_bits(self) -> int:
        """Bits of the quantized linears' biases (reported apart from bpw)."""
        return sum(layer.bias for layer in self.layers)

    @property
    def kept_bits(self) -> int:
        """Bits of the unquantized tensors."""
        return sum(t.numel * t.bits for t in self.kept)

    @property
    def kept_16bit(self) -> list[str]:
        """Names of the tensors that stay in 16 bits (what the report must say)."""
        return [t.name for t in self.kept if t.bits == 16]

    @property
    def bpw(self) -> float:
        """Bits per weight over the quantized linears: what a bpw budget constrains."""
        return self.quantized_bits / self.quantized_weights if self.quantized_weights else 0.0

    @property
    def total_bits(self) -> int:
        """Everything stored: quantized linears, their biases and the kept tensors."""
        return self.quantized_bits + self.bias_bits + self.kept_bits

    @property
    def total_bytes(self) -> int:
        """`total_bits` in bytes (rounded up)."""
        return -(-self.total_bits // 8)

    @property
    def overall_bpw(self) -> float:
        """Bits per parameter over all parameters, kept tensors and biases included."""
        params = (
            self.quantized_weights
            + sum(t.numel for t in self.kept)
            + sum(layer.out_features for layer in self.layers if layer.bias)
        )
        return self.total_bits / params if params else 0.0

    def summary(self) -> str:
        """A few human lines: bpw, size, what stays 16-bit."""
        kept = ", ".join(self.kept_16bit) or "nothing"
        return (
            f"{len(self.layers)} quantized linears: {self.quantized_weights:,} weights at {self.bpw:.3f} bpw; "
            f"total {self.total_bytes / 2**20:.1f} MiB ({self.overall_bpw:.3f} bits/parameter overall); "
            f"kept in 16 bits: {kept}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able report (for bitsmith.json and the GUI)."""
        return {
            "bpw": self.bpw,
            "overall_bpw": self.overall_bpw,
            "total_bytes": self.total_bytes,
            "quantized_weights": self.quantized_weights,
            "quantized_bits": self.quantized_bits,
            "bias_bits": self.bias_bits,
            "kept_bits": self.kept_bits,
            "kept_16bit": self.kept_16bit,
            "kept": [{"name": t.name, "numel": t.numel, "bits": t.bits} for t in self.kept],
            "layers": [layer.to_dict() for layer in self.layers],
        }


def model_bits(
    layers: Iterable[tuple[str, int, int, QuantSpec]],
    kept: Iterable[tuple[str, int] | KeptTensor] = (),
    *,
    biased: Collection[str] = (),
    bias_bits: int = 16,
    perm_bits: int = 0,
) -> ModelBits:
    """Size report for quantized linears (name, N, K, spec) and tensors kept whole ((name, numel) at 16 bits)."""
    rows = tuple(
        layer_bits(n, k, spec, perm_bits=perm_bits, bias_bits=bias_bits if name in biased else 0, name=name)
        for name, n, k, spec in layers
    )
    kept_rows = tuple(t if isinstance(t, KeptTensor) else KeptTensor(t[0], int(t[1])) for t in kept)
    return ModelBits(layers=rows, kept=kept_rows)
