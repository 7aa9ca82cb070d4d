"""How much of the predicted error calibration removes, learned from the finished runs of one measurement.

The measurement predicts the loss increase of round-to-nearest quantization (the sum of per-layer errors);
calibration then removes a large, model-dependent share of it (SmolLM2-135M, demo preset, 3.0 bpw: the
prediction said perplexity 145, calibration reached 32.9 — a log-ratio gain of 0.35). Every finished
`quantize` run records (predicted, achieved) loss increase next to the cached measurement; the next search
scales its predicted curve by the median achieved/predicted ratio of earlier runs of the same preset, so the
GUI's quality curve is drawn from what this model really reached, and says how many runs it rests on.
Pure Python (json, statistics): no torch.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from bitsmith.engine.jobfiles import write_text_atomic

KEEP_RUNS = 16


@dataclass(frozen=True)
class Gain:
    """The achieved/predicted loss-increase ratio, and the runs it is the median of."""

    ratio: float
    runs: int

    def describe(self) -> str:
        """For a chart title or a log line."""
        return f"after calibration, scaled by {self.ratio:.2f} from {self.runs} earlier run(s) of this model"


def history_path(measure_path: Path) -> Path:
    """Where the runs of a cached measurement are kept: beside it."""
    return measure_path.with_name(measure_path.stem + ".runs.json")


def read_runs(path: Path) -> list[dict]:
    """The recorded runs; a missing or unreadable file is no history (it is only a refinement)."""
    try:
        runs = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [r for r in runs if isinstance(r, dict)] if isinstance(runs, list) else []


def record_run(path: Path, preset: str, bpw: float, predicted: float, achieved: float) -> None:
    """Append one finished run (loss increases in nats per token over full precision), keeping the newest."""
    runs = read_runs(path) + [{"preset": preset, "bpw": bpw, "predicted": predicted, "achieved": achieved}]
    write_text_atomic(path, json.dumps(runs[-KEEP_RUNS:], indent=1))


def gain_for(path: Path, preset: str) -> Gain | None:
    """The median achieved/predicted ratio of this preset's recorded runs, or None without usable runs."""
    ratios = [float(r["achieved"]) / float(r["predicted"]) for r in read_runs(path)
              if r.get("preset") == preset and _positive(r.get("predicted")) and _finite(r.get("achieved"))]
    if not ratios:
        return None
    return Gain(max(0.0, statistics.median(ratios)), len(ratios))


def _positive(x: object) -> bool:
    return isinstance(x, int | float) and x > 1e-9


def _finite(x: object) -> bool:
    return isinstance(x, int | float) and x == x and abs(x) != float("inf")
