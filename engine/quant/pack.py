"""The packing contract of quantized codes, re-exported from bitsmith.kernels.pack (its single home)."""

from bitsmith.kernels.pack import (
    PLANAR_BITS,
    SUPPORTED_PACK_BITS,
    codes_per_word,
    pack_codes,
    pack_unit,
    packed_rows,
    scatter_code_deltas,
    unpack_codes,
    unpack_rows,
)

__all__ = [
    "PLANAR_BITS", "SUPPORTED_PACK_BITS", "codes_per_word", "pack_codes", "pack_unit", "packed_rows",
    "scatter_code_deltas", "unpack_codes", "unpack_rows",
]
