"""The budget step's smallest layout follows the preset's candidate formats, layer by layer."""

from types import SimpleNamespace

import pytest

from bitsmith.app.pages import quantize_budget as qb
from bitsmith.engine.modelinfo import LinearShape
from bitsmith.engine.quant.bpw import layer_bits
from bitsmith.engine.quant.spec import parse_spec


def _info() -> SimpleNamespace:  # min_feasible_bpw reads only the linear shapes of a ModelInfo
    shapes = [(576, 576), (1536, 576), (576, 1536), (192, 576)]
    return SimpleNamespace(linears=[LinearShape(f"l{i}", n, k) for i, (n, k) in enumerate(shapes)])


def test_smallest_layout_takes_each_layers_cheapest_format() -> None:
    info = _info()
    formats = ("int4_g128_dq8", "int2_g64_dq8", "int2_g64")
    bits = sum(min(layer_bits(li.out_features, li.in_features, parse_spec(f)).total for f in formats)
               for li in info.linears)
    weights = sum(li.out_features * li.in_features for li in info.linears)
    low = qb.min_feasible_bpw(info, formats)
    assert low == pytest.approx(bits / weights, abs=0.01) and low >= bits / weights
    assert low < qb.min_feasible_bpw(info, ("int2_g64",)) < qb.min_feasible_bpw(info, ("int4_g128",))


def test_preset_formats_come_from_the_engine() -> None:
    from bitsmith.engine.pipeline.presets import PRESETS

    for name, preset in PRESETS.items():
        assert qb.preset_formats(name) == tuple(preset.formats)
