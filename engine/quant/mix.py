"""Channel-mix formats: several group-wise formats in one linear, each over a contiguous slice of permuted inputs.

A channel-mix linear [N, K] stores an input permutation `perm` and one quantized part per format: part i
holds the weight columns perm[start_i:end_i] in its own format (engine/quant/mixed_linear.py). Its format
name lists the parts in permuted order as ``<spec name>:<width>`` joined by ``+``::

    int4_g128:256+int2_g64:320      inputs perm[0:256] in int4_g128, perm[256:576] in int2_g64

Every part but the last is a whole number of its format's groups, so no group straddles two parts; the last
part may end with a shorter group, as any layer may. The permutation is data (the layer's `perm` tensor,
int16 when K <= 32768, else int32), not part of the name; `ChannelMix.perm` carries it from the search to
the quantizer. Torch-free, like spec.py: the planner and `bitsmith inspect` use it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from .bpw import LayerBits, MixedLayerBits, channel_mix_bits, layer_bits
from .spec import QuantSpec, parse_spec

PART_SEP = "+"
WIDTH_SEP = ":"
MODES = ("layer-mix", "channel-mix")
"""Layout modes: one format per layer, or (channel-mix) also several formats per layer over input-channel groups."""


@dataclass(frozen=True)
class ChannelMix:
    """Formats over contiguous slices of a linear's permuted inputs: part i takes `widths[i]` inputs in `specs[i]`.

    `perm` (the permutation, perm[j] = original index of permuted input j) is carried along but is not part of
    the format: two mixes with the same parts compare equal whatever their permutations.
    """

    specs: tuple[QuantSpec, ...]
    widths: tuple[int, ...]
    perm: tuple[int, ...] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        specs = tuple(parse_spec(s) for s in self.specs)
        object.__setattr__(self, "specs", specs)
        widths = tuple(self.widths)
        object.__setattr__(self, "widths", widths)
        if len(specs) < 2 or len(specs) != len(widths):
            raise ValueError(f"a channel-mix needs two or more parts, each with a width; got {specs} and {widths}")
        for i, (spec, width) in enumerate(zip(specs, widths)):
            if not isinstance(width, int) or isinstance(width, bool) or width <= 0:
                raise ValueError(f"channel-mix part {i} ({spec.name}) has width {width!r}: use positive integers")
            spec.require_packable()
            if i < len(specs) - 1 and width % spec.group_size:
                raise ValueError(
                    f"channel-mix part {i} ({spec.name}) is {width} inputs wide, not a whole number of its "
                    f"{spec.group_size}-input groups (only the last part may end with a shorter group)"
                )
        if self.perm is not None:
            perm, k = tuple(int(p) for p in self.perm), self.in_features
            if len(perm) != k or len(set(perm)) != k or min(perm) != 0 or max(perm) != k - 1:
                raise ValueError(f"{self.name}: perm is not a permutation of the {self.in_features} inputs")
            object.__setattr__(self, "perm", perm)

    # -- facts ------------------------------------------------------------------------------------
    @property
    def in_features(self) -> int:
        """Inputs covered by the parts together."""
        return sum(self.widths)

    @property
    def name(self) -> str:
        """The canonical name, e.g. "int4_g128:256+int2_g64:320"; `parse_format(mix.name) == mix`."""
        return PART_SEP.join(f"{s.name}{WIDTH_SEP}{w}" for s, w in zip(self.specs, self.widths))

    @property
    def label(self) -> str:
        """The formats without widths, e.g. "int4_g128+int2_g64": what layers are counted by in summaries."""
        return PART_SEP.join(s.name for s in self.specs)

    @property
    def asymmetric(self) -> bool:
        """Whether every part is asymmetric."""
        return all(s.asymmetric for s in self.specs)

    @property
    def slices(self) -> list[tuple[int, int]]:
        """(start, end) of each part in the permuted input order."""
        out, start = [], 0
        for w in self.widths:
            out.append((start, start + w))
            start += w
        return out

    def require_packable(self) -> None:
        """Raise ValueError unless every part's codes can be packed (checked at construction already)."""
        for s in self.specs:
            s.require_packable()

    def with_perm(self, perm: list[int] | tuple[int, ...]) -> ChannelMix:
        """The same mix carrying permutation `perm` (validated)."""
        return ChannelMix(self.specs, self.widths, tuple(perm))

    def perm_digest(self) -> str:
        """A short hash of the permutation ("" without one): identifies a mixed layer's exact layout."""
        if self.perm is None:
            return ""
        return hashlib.sha256(",".join(map(str, self.perm)).encode()).hexdigest()[:16]

    def layer_bits(self, out_features: int, *, bias_bits: int = 0, name: str = "") -> MixedLayerBits:
        """Exact stored bits of a channel-mix linear [out_features, in_features] (engine/quant/bpw.py)."""
        return channel_mix_bits(out_features, list(zip(self.specs, self.widths)), bias_bits=bias_bits, name=name)

    def __str__(self) -> str:
        return self.name


def parse_format(name: str | QuantSpec | ChannelMix) -> QuantSpec | ChannelMix:
    """A single format ("int4_g128") or a channel-mix ("int4_g128:256+int2_g64:320"); ValueError otherwise."""
    if isinstance(name, QuantSpec | ChannelMix):
        return name
    if not isinstance(name, str):
        raise ValueError(f"a format name must be a string, got {name!r}")
    text = name.strip()
    if WIDTH_SEP not in text and PART_SEP not in text:
        return parse_spec(text)
    specs, widths = [], []
    for part in text.split(PART_SEP):
        spec_name, sep, width = part.partition(WIDTH_SEP)
        if not sep or not width.strip().isdigit():
            raise ValueError(
                f"unknown format {name!r}: a channel-mix is written as parts '<format>:<inputs>' joined by '+', "
                "e.g. int4_g128:256+int2_g64:320"
            )
        specs.append(parse_spec(spec_name))
        widths.append(int(width))
    try:
        return ChannelMix(tuple(specs), tuple(widths))
    except ValueError as exc:
        raise ValueError(f"invalid channel-mix format {name!r}: {exc}") from None


def format_key(fmt: str | QuantSpec | ChannelMix) -> str:
    """A format's name, with a channel-mix's permutation digest appended: identifies what would be stored."""
    f = parse_format(fmt)
    digest = f.perm_digest() if isinstance(f, ChannelMix) else ""
    return f"{f.name}#{digest}" if digest else f.name


def is_channel_mix(fmt: str | QuantSpec | ChannelMix) -> bool:
    """Whether a format (object or name) is a channel-mix."""
    return isinstance(parse_format(fmt), ChannelMix)


def format_label(fmt: str | QuantSpec | ChannelMix) -> str:
    """What a layer is counted as in summaries: the spec's name, or the mix's formats without widths."""
    f = parse_format(fmt)
    return f.label if isinstance(f, ChannelMix) else f.name


def format_layer_bits(
    fmt: str | QuantSpec | ChannelMix, out_features: int, in_features: int, *, bias_bits: int = 0, name: str = ""
) -> LayerBits | MixedLayerBits:
    """Exact stored bits of a linear [out, in] in any format (a channel-mix's permutation included)."""
    f = parse_format(fmt)
    if isinstance(f, ChannelMix):
        if f.in_features != in_features:
            raise ValueError(f"{name or f.name}: the mix covers {f.in_features} inputs, the layer has {in_features}")
        return f.layer_bits(out_features, bias_bits=bias_bits, name=name)
    return layer_bits(out_features, in_features, f, bias_bits=bias_bits, name=name)
