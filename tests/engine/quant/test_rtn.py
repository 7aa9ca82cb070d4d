"""Round-to-nearest: codes in range, error within half a step, partial last groups, clipping search."""

import pytest
import torch

from bitsmith.engine.quant import parse_spec, rtn_quantize, rtn_stats


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(torch.seed() % 2**63)


def _expand(stats: torch.Tensor, k: int, g: int) -> torch.Tensor:
    return stats[torch.arange(k) // g].t()  # [G, N] -> [N, K]


@pytest.mark.parametrize("name", ["int2_g64", "int4_g128", "int8_g128", "int4_g128_zf", "int2_g64_zq8", "int4_g32_sym"])
@pytest.mark.parametrize("k", [576, 1000, 50])
def test_codes_in_range_and_within_half_a_step(name: str, k: int) -> None:
    spec = parse_spec(name)
    w = torch.randn(24, k, generator=_gen()) * torch.rand(24, 1, generator=_gen())
    w[3] += 0.5  # an all-positive row: integer zeros must still cover it
    res = rtn_quantize(w, spec)
    assert res.codes.dtype == torch.uint8 and res.codes.shape == (24, k)
    assert int(res.codes.max()) <= spec.maxq
    groups = spec.groups(k)
    assert res.scales.shape == res.zeros.shape == (groups, 24)
    assert res.scales.dtype == torch.float32 and bool((res.scales > 0).all())
    if spec.integer_zeros:
        assert torch.equal(res.zeros, res.zeros.round())
        assert float(res.zeros.min()) >= 0 and float(res.zeros.max()) <= spec.maxq
    s = _expand(res.scales, k, spec.group_size)
    z = _expand(res.zeros, k, spec.group_size)
    err = (w - (res.codes.float() - z) * s).abs()
    assert bool((err <= s * (0.5 + 1e-5)).all()), float((err / s).max())


def test_short_last_group_uses_only_its_own_weights() -> None:
    spec = parse_spec("int4_g128")
    k = 576  # 4 full groups of 128 and one of 64
    w = torch.randn(8, k, generator=_gen())
    w[:, 512:] = torch.linspace(-0.1, 0.3, 64)  # the short group has a known range
    scales, zeros = rtn_stats(w, spec)
    assert scales.shape == (5, 8)
    torch.testing.assert_close(scales[4], torch.full((8,), 0.4 / 15))
    assert torch.equal(zeros[4], torch.full((8,), float(round(0.1 / (0.4 / 15)))))


def test_constant_and_zero_groups_are_exact() -> None:
    spec = parse_spec("int2_g64")
    w = torch.zeros(4, 128)
    w[1] = 0.25
    res = rtn_quantize(w, spec)
    s = _expand(res.scales, 128, 64)
    z = _expand(res.zeros, 128, 64)
    assert bool(torch.isfinite(res.scales).all())
    torch.testing.assert_close((res.codes.float() - z) * s, w)


@pytest.mark.parametrize("name", ["int2_g64", "int4_g128", "int2_g64_zf"])
def test_clipping_search_lowers_error_on_heavy_tails(name: str) -> None:
    spec = parse_spec(name)
    w = torch.distributions.StudentT(3.0).sample((64, 512))
    errs = {}
    for clip in (False, True):
        res = rtn_quantize(w, spec, clip=clip)
        s = _expand(res.scales, 512, spec.group_size)
        z = _expand(res.zeros, 512, spec.group_size)
        errs[clip] = float((w - (res.codes.float() - z) * s).square().mean())
    assert errs[True] < 0.97 * errs[False], errs
