"""Packing round-trips and matches the documented bit layout (GPTQ order, LSB first)."""

import pytest
import torch

from bitsmith.kernels.pack import pack_codes, packed_rows, unpack_codes


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("k", [1, 7, 64, 576, 577])
def test_round_trip(bits: int, k: int) -> None:
    gen = torch.Generator().manual_seed(torch.seed())
    codes = torch.randint(0, 1 << bits, (5, k), generator=gen, dtype=torch.uint8)
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.int32
    assert packed.shape == (packed_rows(k, bits), 5)
    assert torch.equal(unpack_codes(packed, bits, k), codes)


def test_layout_is_lsb_first_along_inputs() -> None:
    codes = torch.tensor([[1, 2, 3, 15, 0, 0, 0, 9]], dtype=torch.uint8)
    word = int(pack_codes(codes, 4)[0, 0]) & 0xFFFFFFFF
    assert word == 0x9000F321


def test_out_of_range_codes_are_rejected() -> None:
    with pytest.raises(ValueError, match="out of range"):
        pack_codes(torch.tensor([[4]]), 2)


def test_unsupported_width_is_rejected() -> None:
    with pytest.raises(ValueError, match="5-bit"):
        pack_codes(torch.zeros(1, 8, dtype=torch.uint8), 5)


def test_three_bit_codes_go_ten_to_a_word() -> None:
    codes = torch.arange(20, dtype=torch.uint8).remainder(8).view(1, 20)
    words = pack_codes(codes, 3)
    assert words.shape == (2, 1)
    first = int(words[0, 0]) & 0xFFFFFFFF
    assert first == sum(int(c) << (3 * i) for i, c in enumerate(codes[0, :10])) and first < (1 << 30)
