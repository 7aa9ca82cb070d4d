"""The packing contract of quantized codes, re-exported from bitsmith.kernels.pack (its single home)."""

from bitsmith.kernels.pack import SUPPORTED_PACK_BITS, codes_per_word, pack_codes, packed_rows, unpack_codes

__all__ = ["SUPPORTED_PACK_BITS", "codes_per_word", "pack_codes", "packed_rows", "unpack_codes"]
