"""Double quantization of group statistics: packing, error bounds, determinism, re-rounded codes."""

import pytest
import torch

from bitsmith.engine.quant import parse_spec, quantize_codes, quantize_weight, unpack_codes
from bitsmith.engine.quant import stats as st


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(torch.seed() % 2**63)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_stat_codes_pack_along_n(bits: int) -> None:
    codes = torch.randint(0, 1 << bits, (9, 37), generator=_gen(), dtype=torch.uint8)
    packed = st.pack_stat_codes(codes, bits)
    assert packed.dtype == torch.int32 and packed.shape == (9, -(-37 * bits // 32))
    assert torch.equal(st.unpack_stat_codes(packed, bits, 37), codes)


@pytest.mark.parametrize("bits", [8, 4])
def test_scale_double_quant_within_stated_relative_error(bits: int) -> None:
    # log-uniform scales spanning 4 octaves per row, like real layers
    scales = 1e-3 * torch.exp2(4 * torch.rand(9, 300, generator=_gen()))
    codes, meta = st.encode_scales(scales, bits)
    assert codes.dtype == torch.uint8 and int(codes.max()) <= (1 << bits) - 1
    assert meta.dtype == torch.float16 and meta.shape == (2, 300)
    dec = st.decode_scales(codes, meta)
    assert dec.dtype == torch.float16
    # Stated bound: half a log2 step (step ≈ range / (2^S - 1), fp16-rounded up) plus fp16 rounding.
    step = meta[1].float()
    bound = torch.exp2(step / 2) * (1 + 2.0**-11) - 1 + 1e-6
    rel = (dec.float() / scales - 1).abs()
    assert bool((rel <= bound).all()), float((rel / bound).max())
    assert float(bound.max()) < (0.006 if bits == 8 else 0.1)
    assert torch.equal(st.decode_scales(codes.clone(), meta.clone()), dec)  # a pure function of the codes


def test_zero_double_quant_and_integer_zeros() -> None:
    zeros = 3 * torch.rand(5, 64, generator=_gen())
    codes, meta = st.encode_zeros(zeros, parse_spec("int2_g64_zq8"))
    dec = st.decode_zeros(codes, meta).float()
    assert bool(((dec - zeros).abs() <= meta[1].float() / 2 + 2e-3).all())
    integers = torch.randint(0, 4, (5, 64), generator=_gen()).float()
    codes, meta = st.encode_zeros(integers, parse_spec("int2_g64"))
    assert meta is None and torch.equal(st.decode_zeros(codes, None).float(), integers)
    with pytest.raises(ValueError, match="whole numbers"):
        st.encode_zeros(integers + 0.5, parse_spec("int2_g64"))


def test_dead_group_does_not_coarsen_the_row() -> None:
    w = torch.randn(16, 512, generator=_gen()) * 0.02
    w[:, :64] = 0.0  # a constant group in every row
    qw = quantize_weight(w, "int2_g64_dq4")
    live = qw.scales[1:].float()
    codes, meta = st.encode_scales(live, 4)
    assert float((meta[1].float()).max()) < 1.0  # steps stay a fraction of an octave


@pytest.mark.parametrize("name", ["int2_g64_dq8", "int2_g64_dq4", "int4_g128_zq8", "int2_g64_dq8_zq4", "int4_g128"])
def test_materialized_stats_and_rerounded_codes(name: str) -> None:
    spec = parse_spec(name)
    w = torch.randn(48, 576, generator=_gen()) * 0.05
    qw = quantize_weight(w, spec, "rtn")
    scales, zeros = st.materialize_stats(qw.stored, spec, 48, 576)
    assert torch.equal(scales, qw.scales) and torch.equal(zeros, qw.zeros)
    # the codes are the nearest ones for the decoded statistics, not for the fp32 ones
    assert torch.equal(unpack_codes(qw.qweight, spec.bits, 576), quantize_codes(w, qw.scales, qw.zeros, spec))


def test_double_quantized_scales_cost_little_quality() -> None:
    w = torch.distributions.StudentT(4.0).sample((96, 1024)) * 0.02
    err = {}
    for name in ("int2_g64", "int2_g64_dq8", "int4_g128", "int4_g128_dq8"):
        qw = quantize_weight(w, name)
        from bitsmith.engine.quant import dequantize_weight

        err[name] = float((dequantize_weight(qw) - w).square().mean())
    assert err["int2_g64_dq8"] < 1.01 * err["int2_g64"], err
    assert err["int4_g128_dq8"] < 1.01 * err["int4_g128"], err
