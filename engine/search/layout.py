"""Choose a quantized format per layer to minimise predicted error under a bits-per-weight budget.

This is a multiple-choice knapsack: every layer takes exactly one of its options (a format with a
cost in bits and a predicted error). `lagrangian` sweeps the price of a bit: for a price λ each
layer independently takes argmin(error + λ·bits); bisection finds the cheapest price that meets the
budget, and the slack left is spent greedily on the upgrades with the best error saved per bit.
`dp` solves the problem exactly on costs rounded up to a grid of the budget; the rounding wastes up to
one grid unit per layer, which matters at 224 layers and not at 7, while the sweep's gaps matter at 7
layers and not at 224 — so `best` (the default) runs both and keeps the better layout. All are pure
numpy and take well under 0.1 s for an 8B model's 224 linears, so the GUI can search per slider move.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bitsmith.engine.errors import BadInputError


@dataclass(frozen=True)
class Option:
    """One format a layer may take: its name, its stored bits (codes + statistics) and predicted error."""

    fmt: str
    bits: int
    error: float


@dataclass(frozen=True)
class LayerChoices:
    """A quantizable layer: its name, weight count, and the options it may take."""

    name: str
    params: int
    options: tuple[Option, ...]


@dataclass(frozen=True)
class Layout:
    """The chosen format per layer, what it costs and the error it is predicted to cause."""

    formats: dict[str, str]
    bits: int
    params: int
    predicted_error: float
    budget_bpw: float
    method: str = "best"
    per_layer_error: dict[str, float] = field(default_factory=dict)

    @property
    def bpw(self) -> float:
        """Achieved bits per weight over the quantized layers."""
        return self.bits / self.params


def _arrays(layers: Sequence[LayerChoices]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pad options into [L, J] cost and error arrays (missing options cost +inf) and a validity mask."""
    if not layers:
        raise BadInputError("no layers to search over", "the model has no quantizable linear layers")
    width = max(len(layer.options) for layer in layers)
    cost = np.full((len(layers), width), np.inf)
    err = np.full((len(layers), width), np.inf)
    for i, layer in enumerate(layers):
        if not layer.options:
            raise BadInputError(f"layer {layer.name} has no format options", "give each layer at least one format")
        for j, opt in enumerate(layer.options):
            if not np.isfinite(opt.error):
                raise BadInputError(f"layer {layer.name}: error of {opt.fmt} is {opt.error}", "re-run the measurement")
            cost[i, j], err[i, j] = opt.bits, opt.error
    return cost, err, np.isfinite(cost)


def feasible_range(layers: Sequence[LayerChoices]) -> tuple[float, float]:
    """The smallest and largest bpw any layout of these layers can have."""
    cost, _, _ = _arrays(layers)
    params = sum(layer.params for layer in layers)
    finite = np.where(np.isfinite(cost), cost, -np.inf)
    return float(np.min(cost, axis=1).sum()) / params, float(np.max(finite, axis=1).sum()) / params


def _pick(cost: np.ndarray, err: np.ndarray, lam: float) -> np.ndarray:
    """Each layer's best option at bit price `lam` (ties go to the cheaper option; padding never wins)."""
    with np.errstate(invalid="ignore"):  # 0 · inf on padded options: masked just below
        score = np.where(np.isfinite(cost), err + lam * cost, np.inf)
    best = score.min(axis=1, keepdims=True)
    return np.where(score <= best + 1e-12 * np.abs(best), cost, np.inf).argmin(axis=1)


def _lagrangian(cost: np.ndarray, err: np.ndarray, limit: float) -> np.ndarray:
    """Bisection on the bit price, then greedy upgrades into the remaining slack."""
    rows = np.arange(cost.shape[0])
    lo, hi = 0.0, 1.0
    while cost[rows, _pick(cost, err, hi)].sum() > limit:
        hi *= 4.0
        if hi > 1e30:
            break
    if cost[rows, _pick(cost, err, lo)].sum() <= limit:
        hi = lo
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if cost[rows, _pick(cost, err, mid)].sum() <= limit:
            hi = mid
        else:
            lo = mid
    choice = _pick(cost, err, hi)
    spent = cost[rows, choice].sum()
    while True:  # greedy: best error saved per extra bit among upgrades that still fit
        d_cost = cost - cost[rows, choice][:, None]
        d_err = err[rows, choice][:, None] - err
        ok = (d_err > 0) & (d_cost > 0) & (d_cost <= limit - spent)
        free = (d_err > 0) & (d_cost <= 0)
        with np.errstate(invalid="ignore"):  # -inf / inf on padded options, never selected
            ratio = np.where(free, np.inf, np.where(ok, d_err / np.where(d_cost > 0, d_cost, 1), -1.0))
        i, j = np.unravel_index(np.argmax(ratio), ratio.shape)
        if ratio[i, j] <= 0:
            return choice
        spent += d_cost[i, j]
        choice[i] = j


def _dp(cost: np.ndarray, err: np.ndarray, limit: float, grid: int) -> np.ndarray:
    """Exact knapsack on costs rounded up to `grid` units of the budget (so the result never exceeds it)."""
    unit = limit / grid
    units = np.where(np.isfinite(cost), np.ceil(cost / unit - 1e-9), grid + 1).astype(np.int64)
    n, width = cost.shape
    best = np.full(grid + 1, np.inf)
    best[0] = 0.0
    back = np.zeros((n, grid + 1), dtype=np.int16)
    for i in range(n):
        new = np.full(grid + 1, np.inf)
        for j in range(width):
            u = units[i, j]
            if u > grid:
                continue
            cand = np.full(grid + 1, np.inf)
            cand[u:] = best[: grid + 1 - u] + err[i, j]
            better = cand < new
            new[better] = cand[better]
            back[i, better] = j
        best = new
    if not np.isfinite(best).any():
        # rounding every cost up can exclude layouts that fit within a few grid units of the smallest one
        cheapest = np.where(np.isfinite(cost), cost, np.inf).argmin(axis=1)
        if cost[np.arange(n), cheapest].sum() <= limit * (1 + 1e-12):
            return cheapest
        raise BadInputError("no layout fits the budget", "raise the budget")
    b = int(np.argmin(best))
    choice = np.zeros(n, dtype=np.int64)
    for i in range(n - 1, -1, -1):
        choice[i] = back[i, b]
        b -= units[i, choice[i]]
    return choice


def _bit_limit(budget_bpw: float, params: int) -> float:
    """The budget in whole bits: stored bits are integers, and budget × params may land one ulp below one."""
    exact = budget_bpw * params
    return float(np.floor(exact + 1e-13 * abs(exact)))


def search_layout(
    layers: Sequence[LayerChoices], budget_bpw: float, method: str = "best", grid: int | None = None
) -> Layout:
    """The layout with the least predicted error whose bits per weight stay within `budget_bpw`."""
    cost, err, _ = _arrays(layers)
    params = sum(layer.params for layer in layers)
    low, high = feasible_range(layers)
    if budget_bpw < low - 1e-12:
        raise BadInputError(
            f"a budget of {budget_bpw:.3f} bpw is below the smallest layout ({low:.3f} bpw)",
            f"choose at least {low:.3f} bpw, or add a smaller format",
        )
    limit = _bit_limit(min(budget_bpw, high), params)
    rows = np.arange(len(layers))
    grid = grid or int(np.clip(4_000_000 // len(layers), 20_000, 400_000))
    if method == "lagrangian":
        choice = _lagrangian(cost, err, limit)
    elif method == "dp":
        choice = _dp(cost, err, limit, grid)
    elif method == "best":
        choice = min(
            (_lagrangian(cost, err, limit), _dp(cost, err, limit, grid)), key=lambda c: err[rows, c].sum()
        )
    else:
        raise ValueError(f"unknown search method {method!r}: use 'best', 'lagrangian' or 'dp'")
    return Layout(
        formats={layer.name: layer.options[c].fmt for layer, c in zip(layers, choice)},
        bits=int(cost[rows, choice].sum()),
        params=params,
        predicted_error=float(err[rows, choice].sum()),
        budget_bpw=budget_bpw,
        method=method,
        per_layer_error={layer.name: float(err[i, c]) for i, (layer, c) in enumerate(zip(layers, choice))},
    )


def quality_curve(layers: Sequence[LayerChoices], points: int = 41) -> list[tuple[float, float]]:
    """(bpw, predicted error) of the best layout at evenly spaced budgets across the feasible range."""
    low, high = feasible_range(layers)
    curve = []
    for b in np.linspace(low, high, points):
        layout = search_layout(layers, float(b), method="lagrangian")
        curve.append((layout.bpw, layout.predicted_error))
    return curve
