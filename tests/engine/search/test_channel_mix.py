"""The channel-mix search: exact option prices, permutations that keep groups whole, never worse than layer-mix."""

import math
import time

import numpy as np
import pytest
import torch

from bitsmith.engine.quant.bpw import layer_bits
from bitsmith.engine.quant.mix import ChannelMix, parse_format
from bitsmith.engine.quant.mixed_linear import ChannelMixLinear
from bitsmith.engine.quant.quantize import dequantize_weight, quantize_weight
from bitsmith.engine.quant.spec import parse_spec
from bitsmith.engine.search.channel_mix import (
    channel_mix_choices,
    mix_for,
    mix_options,
    pareto,
    plan_layout,
    search_channel_mix,
    unit_ranking,
)
from bitsmith.engine.search.layout import Option, search_layout
from bitsmith.engine.search.measure import LayerMeasure, Measurement, channel_unit

FORMATS = ["int4_g128", "int3_g128", "int2_g64"]


def _layer(rng: np.random.Generator, name: str, n: int, k: int, formats=FORMATS, unit: int = 128) -> LayerMeasure:
    """Per-unit errors falling ~4x per bit, with units of very different sensitivity (what channel-mix exploits)."""
    units = -(-k // unit)
    sens = rng.lognormal(0, 1.5, size=units) * np.minimum(1.0, (k - np.arange(units) * unit) / unit)
    groups = {f: list(sens * 4.0 ** (-parse_spec(f).bits) * rng.uniform(0.7, 1.3, size=units)) for f in formats}
    return LayerMeasure(name, n, k, {f: layer_bits(n, k, parse_spec(f)).total for f in formats},
                        {f: math.fsum(groups[f]) for f in formats}, groups)


def _measurement(rng: np.random.Generator, shapes, blocks: int, formats=FORMATS) -> Measurement:
    layers = [_layer(rng, f"{b}.{j}", n, k, formats) for b in range(blocks) for j, (n, k) in enumerate(shapes)]
    return Measurement(list(formats), "rtn", 4, 128, layers=layers, unit=channel_unit(formats))


SMOL = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]


@pytest.mark.parametrize("seed", range(6))
def test_never_predicts_more_error_than_layer_mix(seed: int) -> None:
    """The options are a superset and the search keeps the better layout: never worse, at every budget."""
    rng = np.random.default_rng(seed)
    m = _measurement(rng, SMOL, 4)
    choices = channel_mix_choices(m)
    assert all(len(c.options) > len(FORMATS) for c in choices)  # every layer got mixes
    better = 0
    for budget in np.linspace(2.4, 4.1, 5):
        pure = search_layout(m.choices(), float(budget))
        mixed = search_channel_mix(m, float(budget), choices=choices)
        assert mixed.bpw <= budget + 1e-12
        assert mixed.predicted_error <= pure.predicted_error
        better += mixed.predicted_error < pure.predicted_error * (1 - 1e-6)
    assert better >= 3, better  # and it usually finds a strictly better layout


def test_option_prices_are_exact_for_the_layer_they_describe() -> None:
    """Each option's bits are the stored bits of the ChannelMixLinear it plans; its error is the sum of its units'."""
    rng = np.random.default_rng(0)
    layer = _layer(rng, "l", 48, 576)  # 4 full units and a short one of 64 inputs
    unit = 128
    options = mix_options(layer, FORMATS, unit)
    assert {o.fmt.split("+")[0].split(":")[0] for o in options} == {"int4_g128", "int3_g128"}
    for opt in options:
        f = parse_format(opt.fmt)
        high, low = (s.name for s in f.specs)
        mix = mix_for(layer, high, low, f.widths[0] // unit, unit)
        assert mix == f and mix.perm is not None
        lin = torch.nn.Linear(576, 48, bias=False)
        stored = ChannelMixLinear.from_linear(lin, mix, "rtn").state_dict()
        assert opt.bits == sum(t.numel() * t.element_size() * 8 for t in stored.values())
        high_units = {mix.perm[i] // unit for i in range(0, f.widths[0], unit)}
        want = sum(layer.group_errors[high if u in high_units else low][u] for u in range(5))
        assert opt.error == pytest.approx(want, rel=1e-12)
        # the high units are the ones the high format helps most, and the short unit stays last, in the low part
        ranked = unit_ranking(layer, high, low, unit)
        assert high_units == set(ranked[: len(high_units)])
        assert list(mix.perm[-64:]) == list(range(512, 576)) and 4 not in high_units


def test_quantizing_whole_units_reproduces_each_format_column_by_column() -> None:
    """Why the prediction is exact: a part made of whole measured units quantizes them as the layer-wide format did
    (groups never straddle units), so ΔW of a mix is the measured ΔW of each format, column by column."""
    w = torch.randn(32, 576)
    rng = np.random.default_rng(1)
    layer = _layer(rng, "l", 32, 576, ["int4_g128", "int2_g64"])
    mix = mix_for(layer, "int4_g128", "int2_g64", 2, 128)
    got = ChannelMixLinear.from_linear(_lin(w), mix, "rtn").dequantize()
    perm = torch.tensor(mix.perm)
    for fmt, cols in (("int4_g128", perm[:256]), ("int2_g64", perm[256:])):
        whole = dequantize_weight(quantize_weight(w, fmt, "rtn"))
        assert torch.equal(got[:, cols], whole[:, cols]), fmt


def _lin(w: torch.Tensor) -> torch.nn.Linear:
    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    lin.weight.data.copy_(w)
    return lin


def test_plan_attaches_the_permutations_the_search_priced() -> None:
    rng = np.random.default_rng(3)
    m = _measurement(rng, SMOL, 2)
    layout = search_channel_mix(m, 3.0)
    plan = plan_layout(m, layout.formats)
    mixes = {n: f for n, f in plan.items() if isinstance(f, ChannelMix)}
    assert mixes, "no layer was mixed at 3.0 bpw"
    for name, f in plan.items():
        assert parse_format(f).name == layout.formats[name]
    for f in mixes.values():
        assert sorted(f.perm) == list(range(f.in_features))
    # one plain layer cannot be a mix this search makes
    with pytest.raises(ValueError, match="not a mix"):
        plan_layout(m, {m.layers[0].name: "int4_g128:128+int3_g128:128+int2_g64:320"})


def test_no_unit_errors_means_no_mixes() -> None:
    rng = np.random.default_rng(4)
    m = _measurement(rng, SMOL, 1)
    m.unit = 0  # e.g. a block-streamed measurement
    assert [len(c.options) for c in channel_mix_choices(m)] == [len(FORMATS)] * len(SMOL)


def test_pareto_keeps_only_undominated_options() -> None:
    opts = [Option("a", 10, 5.0), Option("b", 12, 6.0), Option("c", 12, 4.0), Option("d", 20, 4.0), Option("e", 8, 9)]
    assert [o.fmt for o in pareto(opts)] == ["e", "a", "c"]


def test_eight_billion_scale_channel_mix_search_is_under_a_second() -> None:
    rng = np.random.default_rng()
    shapes = [(4096, 4096)] * 2 + [(1024, 4096)] * 2 + [(14336, 4096)] * 2 + [(4096, 14336)]
    m = _measurement(rng, shapes, 32, ["int4_g128_dq8", "int3_g128_dq8", "int2_g64_dq8"])
    assert len(m.layers) == 224
    start = time.perf_counter()
    choices = channel_mix_choices(m)  # built once per measurement, reused for every budget
    built = time.perf_counter() - start
    start = time.perf_counter()
    layout = search_channel_mix(m, 2.5, choices=choices)
    elapsed = time.perf_counter() - start
    assert 2.45 < layout.bpw <= 2.5
    assert layout.predicted_error < search_layout(m.choices(), 2.5).predicted_error
    assert built < 1.0, f"building the options took {built:.3f} s"
    assert elapsed < 1.0, f"search took {elapsed:.3f} s"
