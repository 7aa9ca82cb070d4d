"""What a quantized weight format is: `QuantSpec` and its names (torch-free: the planner imports it).

Naming grammar (shared/DESIGN.md §2): ``int{bits}_g{group}`` followed by optional suffixes, in this
canonical order::

    int{b}_g{g}[_sym][_dq{S}][_zf | _zq{Z}]

* ``int4_g128`` — 4-bit codes, groups of 128 inputs, asymmetric, fp16 scales and *integer* zero-points
  stored as 4-bit codes (GPTQ-style). ``int2_g64`` and ``int8_g128`` likewise.
* ``_sym`` — symmetric: the zero-point is fixed at 2^(b-1) and not stored.
* ``_dq8`` / ``_dq4`` — double-quantized scales: 8- or 4-bit codes in the log2 domain with a per-output-row
  fp16 (offset, step). ``int2_g64_dq8`` ≈ 2.16 bpw, ``int2_g64_dq4`` ≈ 2.10 bpw at K = 4096.
* ``_zf`` — fp16 zero-points that may be fractional (what HQQ's optimiser produces).
* ``_zq8`` / ``_zq4`` — fractional zero-points double-quantized to 8/4-bit affine codes with a per-row fp16
  (offset, step); the width must exceed the weight width (at equal width use the exact integer zeros).

Integer zero-points are the default because, on SmolLM2-135M (DESIGN.md §2), an integer zero that
makes 0.0 exactly representable gave held-out perplexity ≈ 28 vs ≈ 34 (W4/g128) and ≈ 123 vs ≈ 437
(W3/g128) against fp16 float zeros, and they are also the cheapest to store.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

SPEC_BITS = (2, 3, 4, 8)
"""Weight widths a spec may name."""
PACKABLE_BITS = (2, 3, 4, 8)
"""Widths kernels/pack.py packs into int32 words (3-bit: bit planes, 32 codes in 3 words)."""
SCALE_BITS = (16, 8, 4)
"""16 = fp16 scales; 8 / 4 = log2-domain double-quantized scale codes."""
STAT_CODE_BITS = (4, 8)
"""Widths of double-quantized (second-level) statistic codes."""

_NAME_RE = re.compile(r"^int(\d+)_g(\d+)((?:_[a-z0-9]+)*)$")


@dataclass(frozen=True)
class QuantSpec:
    """One group-wise weight format: `w = (q - z) * s` per group of `group_size` inputs, q in [0, 2^bits-1].

    Defaults: asymmetric (weights are rarely centred within a group), fp16 scales, and integer
    zero-points as `bits`-bit codes (`zero_bits=None` resolves to `bits`; see the module docstring for
    why integer zeros). For symmetric specs `zero_bits` resolves to 0: nothing is stored.
    """

    bits: int
    group_size: int
    asymmetric: bool = True
    scale_bits: int = 16
    zero_bits: int | None = None

    def __post_init__(self) -> None:
        for field in ("bits", "group_size", "scale_bits"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"QuantSpec.{field} must be an integer, got {value!r}")
        if self.bits not in SPEC_BITS:
            raise ValueError(f"unsupported weight width {self.bits} bits: choose one of {SPEC_BITS}")
        if self.group_size <= 0:
            raise ValueError(f"group_size must be a positive number of inputs, got {self.group_size}")
        if self.scale_bits not in SCALE_BITS:
            raise ValueError(
                f"unsupported scale_bits {self.scale_bits}: 16 (fp16) or {STAT_CODE_BITS} (double-quantized)"
            )
        if not isinstance(self.asymmetric, bool):
            raise ValueError(f"QuantSpec.asymmetric must be True or False, got {self.asymmetric!r}")
        zb = self.zero_bits
        if zb is not None and (not isinstance(zb, int) or isinstance(zb, bool)):
            raise ValueError(f"QuantSpec.zero_bits must be an integer or None, got {zb!r}")
        if not self.asymmetric:
            if zb not in (None, 0):
                raise ValueError(f"a symmetric spec stores no zero-points; zero_bits must be None, got {zb}")
            object.__setattr__(self, "zero_bits", 0)
            return
        if zb is None:
            object.__setattr__(self, "zero_bits", self.bits)
        elif zb != 16 and zb != self.bits and not (zb in STAT_CODE_BITS and zb > self.bits):
            raise ValueError(
                f"unsupported zero_bits {zb} for {self.bits}-bit weights: use 16 (fp16 zeros), "
                f"{self.bits} (integer zero-points) or a double-quantized width in {STAT_CODE_BITS} "
                f"above {self.bits}"
            )

    # -- what is stored -------------------------------------------------------------------------
    @property
    def maxq(self) -> int:
        """Largest code, 2^bits - 1."""
        return (1 << self.bits) - 1

    @property
    def packable(self) -> bool:
        """Whether the codes can be packed into int32 words (2, 3, 4 or 8 bits)."""
        return self.bits in PACKABLE_BITS

    @property
    def double_quant_scales(self) -> bool:
        """Scales are stored as log2-domain codes plus a per-row fp16 (offset, step)."""
        return self.scale_bits != 16

    @property
    def integer_zeros(self) -> bool:
        """Zero-points are exact integers in [0, 2^bits - 1] stored as `bits`-bit codes (GPTQ-style)."""
        return self.asymmetric and self.zero_bits == self.bits

    @property
    def float_zeros(self) -> bool:
        """Zero-points are stored as fp16 and may be fractional."""
        return self.asymmetric and self.zero_bits == 16

    @property
    def double_quant_zeros(self) -> bool:
        """Fractional zero-points stored as affine `zero_bits` codes plus a per-row fp16 (offset, step)."""
        return self.asymmetric and not self.integer_zeros and not self.float_zeros

    def require_packable(self) -> None:
        """Raise ValueError unless codes of this width can be packed."""
        if not self.packable:
            raise ValueError(
                f"{self.name}: {self.bits}-bit codes cannot be packed into int32 words; "
                f"packable widths are {PACKABLE_BITS}"
            )

    def groups(self, in_features: int) -> int:
        """Number of groups along the input dimension; the last one is shorter when K % g != 0."""
        return -(-in_features // self.group_size)

    # -- names and serialisation ----------------------------------------------------------------
    @property
    def name(self) -> str:
        """The canonical name, e.g. "int2_g64_dq8"; `parse_spec(spec.name) == spec`."""
        parts = [f"int{self.bits}_g{self.group_size}"]
        if not self.asymmetric:
            parts.append("sym")
        if self.double_quant_scales:
            parts.append(f"dq{self.scale_bits}")
        if self.float_zeros:
            parts.append("zf")
        elif self.double_quant_zeros:
            parts.append(f"zq{self.zero_bits}")
        return "_".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields (for bitsmith.json / quant_strategy.json)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantSpec:
        """Inverse of `to_dict`; unknown keys are a ValueError."""
        known = {"bits", "group_size", "asymmetric", "scale_bits", "zero_bits"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown QuantSpec fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    def __str__(self) -> str:
        return self.name


def parse_spec(name: str | QuantSpec) -> QuantSpec:
    """Parse a spec name such as "int4_g128" or "int2_g64_dq8_zq4" (grammar in the module docstring)."""
    if isinstance(name, QuantSpec):
        return name
    if not isinstance(name, str):
        raise ValueError(f"a quantization spec name must be a string, got {name!r}")
    text = name.strip().lower()
    m = _NAME_RE.match(text)
    if not m:
        raise ValueError(
            f"unknown quantization spec {name!r}: expected int<bits>_g<group>[_sym][_dq8|_dq4][_zf|_zq8|_zq4], "
            f"e.g. {', '.join(PRESETS)}"
        )
    kwargs: dict[str, Any] = {"bits": int(m.group(1)), "group_size": int(m.group(2))}
    seen: set[str] = set()
    for token in filter(None, m.group(3).split("_")):
        kind = re.sub(r"\d+$", "", token)
        if kind in seen:
            raise ValueError(f"quantization spec {name!r} repeats the suffix kind {kind!r}")
        seen.add(kind)
        if token == "sym":
            kwargs["asymmetric"] = False
        elif token == "zf":
            kwargs["zero_bits"] = 16
        elif re.fullmatch(r"dq\d+", token):
            kwargs["scale_bits"] = int(token[2:])
        elif re.fullmatch(r"zq\d+", token):
            kwargs["zero_bits"] = int(token[2:])
            if kwargs["zero_bits"] <= kwargs["bits"]:
                raise ValueError(
                    f"unsupported zero_bits {kwargs['zero_bits']} in {name!r}: double-quantized zeros must be "
                    f"wider than the {kwargs['bits']}-bit weights; drop the suffix for exact integer zeros"
                )
        else:
            raise ValueError(
                f"unknown suffix {token!r} in quantization spec {name!r}: known suffixes are "
                "_sym, _dq8, _dq4, _zf, _zq8, _zq4"
            )
    if "zf" in seen and "zq" in seen:
        raise ValueError(f"quantization spec {name!r} names two zero-point formats (_zf and _zq)")
    try:
        return QuantSpec(**kwargs)
    except ValueError as exc:
        raise ValueError(f"invalid quantization spec {name!r}: {exc}") from None


INT4_G128 = QuantSpec(bits=4, group_size=128)
"""Base format: INT4, groups of 128, fp16 scales, 4-bit integer zeros (≈ 4.16 bpw)."""
INT2_G64 = QuantSpec(bits=2, group_size=64)
"""Base format: INT2, groups of 64, fp16 scales, 2-bit integer zeros (≈ 2.28 bpw)."""

PRESETS: dict[str, QuantSpec] = {
    s.name: s
    for s in (
        INT4_G128,
        INT2_G64,
        QuantSpec(bits=8, group_size=128),
        QuantSpec(bits=3, group_size=128),
        QuantSpec(bits=4, group_size=128, scale_bits=8),
        QuantSpec(bits=2, group_size=64, scale_bits=8),
        QuantSpec(bits=2, group_size=64, scale_bits=4),
    )
}
"""Named formats the product offers by default; `parse_spec` accepts any valid name beyond these."""
