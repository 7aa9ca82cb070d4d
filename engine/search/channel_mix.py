"""The channel-mix search: each layer may also split its input channels between two formats.

For a layer measured per unit of input channels (engine/search/measure.py: `unit` channels, a whole number
of groups in every candidate format) and for every pair of formats (high, low) where high costs more bits,
the units are ranked by the error they save in the high format (err_low − err_high; every full unit costs
the same extra bits, so this is also the error saved per extra bit). For each fraction s in `FRACTIONS`, the
top round(s · units) units take the high format and the rest the low one. That option's predicted error is
the sum of its units' errors (additive, as the whole measurement is); its bits are counted exactly from the
two parts plus the permutation (engine/quant/bpw.py). The multiple-choice knapsack of engine/search/layout.py
then picks one option per layer among the pure formats and these mixes, unchanged.

The permutation follows from the ranking: the high units in their original order, then the low units in
theirs; a shorter last unit (K not a multiple of the unit) always stays last in the low part, so every
group of either part is a group of the measured quantization and the prediction stays exact.

`search_channel_mix` also solves the layer-mix problem and keeps the better layout, so channel-mix mode never
predicts more error than layer-mix at the same budget (the layout search's `best` method is exact on a grid
but not in general, so a superset of options alone would not guarantee it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import lru_cache

import numpy as np

from bitsmith.engine.quant.mix import ChannelMix, parse_format
from bitsmith.engine.quant.spec import parse_spec
from bitsmith.engine.search.layout import LayerChoices, Layout, Option, search_layout
from bitsmith.engine.search.measure import LayerMeasure, Measurement

FRACTIONS = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875)
"""Shares of a layer's full units offered in the higher format (each distinct unit count once)."""


def _units(layer: LayerMeasure, unit: int) -> tuple[int, bool]:
    """(full units, whether a shorter last unit follows) of a layer's inputs."""
    return layer.in_features // unit, layer.in_features % unit != 0


def unit_ranking(layer: LayerMeasure, high: str, low: str, unit: int) -> list[int]:
    """Full units by the error the high format saves over the low one, most first (ties: lower index first)."""
    full, _ = _units(layer, unit)
    saved = np.asarray(layer.group_errors[low][:full]) - np.asarray(layer.group_errors[high][:full])
    return np.lexsort((np.arange(full), -saved)).tolist()


def mix_for(layer: LayerMeasure, high: str, low: str, n_high: int, unit: int) -> ChannelMix:
    """The mix with the `n_high` best units in `high` and the rest in `low`, carrying its permutation."""
    full, short = _units(layer, unit)
    if not 0 < n_high < full + short:
        raise ValueError(f"{layer.name}: {n_high} of {full + short} units in {high} is not a mix")
    is_high = np.zeros(full, dtype=bool)
    is_high[unit_ranking(layer, high, low, unit)[:n_high]] = True
    units = np.concatenate([np.flatnonzero(is_high), np.flatnonzero(~is_high)])
    perm = (units[:, None] * unit + np.arange(unit)).ravel().tolist() + list(range(full * unit, layer.in_features))
    width = n_high * unit
    return ChannelMix((parse_spec(high), parse_spec(low)), (width, layer.in_features - width), tuple(perm))


@lru_cache(maxsize=4096)
def _mix_bits(out_features: int, high: str, low: str, width: int, in_features: int) -> tuple[str, int]:
    """(name, stored bits) of the mix with `width` inputs in `high` and the rest in `low` (layers share shapes)."""
    mix = ChannelMix((parse_spec(high), parse_spec(low)), (width, in_features - width))
    return mix.name, mix.layer_bits(out_features).total


def pareto(options: Sequence[Option]) -> list[Option]:
    """The options no other option beats on both bits and error (the only ones an optimal layout can take)."""
    kept, best = [], math.inf
    for opt in sorted(options, key=lambda o: (o.bits, o.error)):
        if opt.error < best:
            kept.append(opt)
            best = opt.error
    return kept


def _pairs(formats: Sequence[str], layer: LayerMeasure) -> list[tuple[str, str]]:
    """(high, low) format pairs where the high one stores more bits for this layer."""
    return [(h, lo) for h in formats for lo in formats if layer.bits[h] > layer.bits[lo]]


def _unit_counts(full: int, short: bool, fractions: Sequence[float]) -> list[int]:
    """Distinct counts of high units for the fractions: at least one unit, and at least one unit left low."""
    top = full if short else full - 1
    return sorted({min(max(round(f * full), 1), top) for f in fractions}) if top >= 1 else []


def mix_options(layer: LayerMeasure, formats: Sequence[str], unit: int,
                fractions: Sequence[float] = FRACTIONS) -> list[Option]:
    """The channel-mix options of one layer (none when it was not measured per unit or has a single unit)."""
    if not unit or not layer.group_errors or any(f not in layer.group_errors for f in formats):
        return []
    full, short = _units(layer, unit)
    counts = _unit_counts(full, short, fractions)
    options = []
    for high, low in _pairs(formats, layer):
        ranking = unit_ranking(layer, high, low, unit)
        err_high = np.asarray(layer.group_errors[high], dtype=np.float64)
        err_low = np.asarray(layer.group_errors[low], dtype=np.float64)
        saved = np.cumsum([err_low[u] - err_high[u] for u in ranking])
        base = math.fsum(err_low)
        for n in counts:
            name, bits = _mix_bits(layer.out_features, high, low, n * unit, layer.in_features)
            options.append(Option(name, bits, max(base - float(saved[n - 1]), 0.0)))
    return options


def channel_mix_choices(measurement: Measurement, fractions: Sequence[float] = FRACTIONS) -> list[LayerChoices]:
    """The search problem: each layer's pure formats, plus those of its channel-mix options that are not beaten
    on both bits and error by another option (dominated options can never be part of an optimal layout)."""
    by_name = {m.name: m for m in measurement.layers}
    out = []
    for c in measurement.choices():
        mixes = mix_options(by_name[c.name], measurement.formats, measurement.unit, fractions)
        front = {o.fmt for o in pareto(c.options + tuple(mixes))}
        out.append(replace(c, options=c.options + tuple(o for o in mixes if o.fmt in front)))
    return out


def plan_layout(measurement: Measurement, formats: Mapping[str, str]) -> dict[str, str | ChannelMix]:
    """The searched layout with each channel-mix carrying its permutation (what calibration quantizes)."""
    by_name = {m.name: m for m in measurement.layers}
    plan: dict[str, str | ChannelMix] = {}
    for name, fmt in formats.items():
        f = parse_format(fmt)
        if not isinstance(f, ChannelMix):
            plan[name] = fmt
            continue
        if len(f.specs) != 2 or f.widths[0] % measurement.unit:
            raise ValueError(f"{name}: {fmt} is not a mix this search makes")
        high, low = (s.name for s in f.specs)
        plan[name] = mix_for(by_name[name], high, low, f.widths[0] // measurement.unit, measurement.unit)
    return plan


def search_channel_mix(
    measurement: Measurement, budget_bpw: float, *, choices: Sequence[LayerChoices] | None = None,
    fractions: Sequence[float] = FRACTIONS,
) -> Layout:
    """The least-error layout among pure formats and channel-mixes within the budget (never worse than layer-mix)."""
    mixed = search_layout(choices if choices is not None else channel_mix_choices(measurement, fractions), budget_bpw)
    pure = search_layout(measurement.choices(), budget_bpw)
    return mixed if mixed.predicted_error <= pure.predicted_error else pure


def mixed_layers(formats: Mapping[str, str]) -> dict[str, ChannelMix]:
    """The layers of a layout that are channel-mixes."""
    out = {}
    for name, fmt in formats.items():
        f = parse_format(fmt)
        if isinstance(f, ChannelMix):
            out[name] = f
    return out
