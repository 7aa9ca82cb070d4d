"""How many int32 words a run of b-bit codes takes (torch-free, so the planner's bpw accounting shares it).

kernels/pack.py describes the layout; this module holds only its arithmetic.
"""

from __future__ import annotations

SUPPORTED_PACK_BITS = (2, 3, 4, 8)
PLANAR_BITS = 3
"""The width stored as bit planes (a two-bit plane and a one-bit plane)."""


def pack_unit(bits: int) -> tuple[int, int]:
    """(codes, words) of one packing unit: (32 // bits, 1), or (32, 3) for 3-bit planes; ValueError otherwise."""
    if bits not in SUPPORTED_PACK_BITS:
        raise ValueError(f"cannot pack {bits}-bit codes: supported widths are {SUPPORTED_PACK_BITS}")
    return (32, 3) if bits == PLANAR_BITS else (32 // bits, 1)


def packed_rows(in_features: int, bits: int) -> int:
    """Number of int32 rows that hold `in_features` codes of `bits` bits (whole units)."""
    codes, words = pack_unit(bits)
    return -(-in_features // codes) * words
