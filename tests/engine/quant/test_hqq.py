"""HQQ refinement lowers reconstruction error against RTN and keeps integer zeros integral."""

import pytest
import torch

from bitsmith.engine.quant import dequantize_weight, hqq_refine, parse_spec, quantize_weight, rtn_stats
from bitsmith.engine.quant.groups import group_mask, group_sq_error, group_view, to_grouped_stats


def _student_t(n: int, k: int) -> torch.Tensor:
    return torch.distributions.StudentT(3.0).sample((n, k)) * 0.02


@pytest.mark.parametrize("name", ["int4_g128", "int2_g64", "int2_g64_dq8", "int4_g128_zf", "int2_g64_zf"])
def test_hqq_beats_rtn_on_heavy_tailed_weights(name: str) -> None:
    w = _student_t(128, 576)
    errs = {}
    for method in ("rtn", "hqq"):
        errs[method] = float((dequantize_weight(quantize_weight(w, name, method)) - w).square().mean())
    assert errs["hqq"] < 0.95 * errs["rtn"], errs


@pytest.mark.parametrize("name", ["int2_g64", "int4_g128_zf"])
def test_no_group_gets_worse_than_its_start(name: str) -> None:
    spec = parse_spec(name)
    w = _student_t(64, 320)  # 320 = 2.5 groups of 128: a short last group too
    s0, z0 = rtn_stats(w, spec)
    s1, z1 = hqq_refine(w, s0, z0, spec)
    wg, mask = group_view(w, spec.group_size), group_mask(320, spec.group_size, "cpu")
    e0 = group_sq_error(wg, to_grouped_stats(s0), to_grouped_stats(z0), spec.maxq, mask)
    e1 = group_sq_error(wg, to_grouped_stats(s1), to_grouped_stats(z1), spec.maxq, mask)
    assert bool((e1 <= e0 * (1 + 1e-6)).all())
    assert float(e1.sum()) < float(e0.sum())
    if spec.integer_zeros:
        assert torch.equal(z1, z1.round()) and float(z1.min()) >= 0 and float(z1.max()) <= spec.maxq


def test_zero_only_variant_runs_and_symmetric_is_refused() -> None:
    spec = parse_spec("int4_g128_zf")
    w = _student_t(16, 256)
    s0, z0 = rtn_stats(w, spec)
    s1, z1 = hqq_refine(w, s0, z0, spec, update_scale=False)
    assert torch.equal(s1, s0) and not torch.equal(z1, z0)
    with pytest.raises(ValueError, match="symmetric"):
        hqq_refine(w, s0, z0, parse_spec("int4_g128_sym"))
