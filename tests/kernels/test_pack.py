"""Packing round-trips and matches the documented bit layout (GPTQ order, LSB first)."""

import pytest
import torch

from bitsmith.kernels.pack import pack_codes, packed_rows, scatter_code_deltas, unpack_codes


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


def test_three_bit_codes_are_bit_planes_32_to_3_words() -> None:
    gen = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 8, (2, 40), generator=gen, dtype=torch.uint8)  # 40 codes: one unit and a padded one
    words = pack_codes(codes, 3)
    assert words.shape == (6, 2) and packed_rows(40, 3) == 6
    w = [int(words[i, 0]) & 0xFFFFFFFF for i in range(6)]
    c = [int(x) for x in codes[0]] + [0] * 24
    for unit in range(2):
        lo0, lo1, hi = w[3 * unit: 3 * unit + 3]
        run = c[32 * unit: 32 * unit + 32]
        assert lo0 == sum((q & 3) << (2 * j) for j, q in enumerate(run[:16]))
        assert lo1 == sum((q & 3) << (2 * j) for j, q in enumerate(run[16:]))
        assert hi == sum((q >> 2) << j for j, q in enumerate(run))


def test_three_bits_cost_exactly_three_bits_per_code() -> None:
    assert packed_rows(576, 3) * 32 == 3 * 576 and packed_rows(4096, 3) * 32 == 3 * 4096


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_scattered_code_changes_match_repacking(bits: int) -> None:
    gen = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 1 << bits, (6, 100), generator=gen, dtype=torch.int32)
    packed = pack_codes(codes, bits)
    new = codes.clone()
    moved = torch.rand(codes.shape, generator=gen) < 0.3
    new[moved] = torch.randint(0, 1 << bits, (int(moved.sum()),), generator=gen, dtype=torch.int32)
    n_idx, k_idx = moved.nonzero(as_tuple=True)  # the words' layout is [K, N]: rows k, columns n
    cols = n_idx[n_idx >= 2] - 2, k_idx[n_idx >= 2]
    scatter_code_deltas(packed, 2, cols[1], cols[0], codes[cols[0] + 2, cols[1]], new[cols[0] + 2, cols[1]], bits)
    expect = codes.clone()
    expect[2:] = new[2:]
    assert torch.equal(packed, pack_codes(expect, bits))
