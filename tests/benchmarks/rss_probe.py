"""Peak resident memory per pipeline stage and per probed call, for comparing engine/plan.py with real runs.

Linux only (reads /proc/self). `StageTracker` resets the kernel's high-water mark (VmHWM, via
/proc/self/clear_refs) whenever a stage starts, so each stage's peak is exact, not sampled; a sampling thread
(every `interval` seconds) keeps a timeline of the resident set labelled with the innermost probed call, to
attribute what was resident at a peak. `probe(module, name, tracker)` wraps a function so its calls are labelled
and their resident set before/after and peak during are recorded. Used by tests/benchmarks/bench_plan_rss.py.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import time
from pathlib import Path
from typing import Any

PAGE = 4096


def rss_bytes() -> int:
    """The process's resident set now (anonymous + file-backed + shared memory pages)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmHWM, VmRSS, RssAnon, RssFile, ...)."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+)", text, re.M).group(1))


def anon_file() -> tuple[int, int]:
    """(anonymous, file-backed) resident bytes now: the file part is mapped checkpoint pages (safetensors mmap)."""
    text = Path("/proc/self/status").read_text()
    return tuple(int(re.search(rf"^{f}:\s+(\d+)", text, re.M).group(1)) * 1024 for f in ("RssAnon", "RssFile"))


def reset_peak() -> None:
    """Set VmHWM to the current resident set (Linux ≥ 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


class StageTracker:
    """Exact peak per stage (VmHWM reset at each stage) and a labelled timeline of the resident set."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.t0 = time.perf_counter()
        self.stages: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []
        self.timeline: list[tuple[float, int, str, int]] = []
        self.labels: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> StageTracker:
        self.stage("start")
        self._thread.start()
        return self

    def _now(self) -> float:
        return round(time.perf_counter() - self.t0, 4)

    def _sample(self) -> None:
        last = -1
        while not self._stop.is_set():
            rss = rss_bytes()
            label = self.labels[-1] if self.labels else (self.stages[-1]["stage"] if self.stages else "")
            if rss != last:  # keep the timeline small: only changes
                self.timeline.append((self._now(), rss, label, anon_file()[1]))
                last = rss
            time.sleep(self.interval)

    def _close_stage(self) -> None:
        if self.stages and "peak" not in self.stages[-1]:
            self.stages[-1]["peak"] = status_kb("VmHWM") * 1024
            self.stages[-1]["end_rss"] = rss_bytes()
            self.stages[-1]["end_file"] = anon_file()[1]
            self.stages[-1]["end_s"] = self._now()

    def stage(self, name: str) -> None:
        """Close the current stage (its exact peak) and start `name`."""
        with self._lock:
            self._close_stage()
            reset_peak()
            self.stages.append({"stage": name, "start_s": self._now(), "start_rss": rss_bytes()})

    def finish(self) -> dict[str, Any]:
        with self._lock:
            self._close_stage()
        self._stop.set()
        self._thread.join()
        return {"stages": self.stages, "calls": self.calls, "timeline": self.timeline}

    def stage_peaks(self) -> dict[str, int]:
        """{stage: peak bytes}, the largest when a stage name repeats."""
        out: dict[str, int] = {}
        for s in self.stages:
            if "peak" in s:
                out[s["stage"]] = max(out.get(s["stage"], 0), s["peak"])
        return out


def probe(module: Any, name: str, tracker: StageTracker, label: str | None = None) -> None:
    """Replace `module.name` by a wrapper recording each call's resident set before, after and (sampled) peak."""
    fn = getattr(module, name)
    if getattr(fn, "_probed", False):
        return
    label = label or name

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        entry = {"call": label, "start_s": tracker._now(), "rss_before": rss_bytes()}
        tracker.labels.append(label)
        mark = len(tracker.timeline)
        try:
            return fn(*args, **kwargs)
        finally:
            tracker.labels.pop()
            entry["rss_after"] = rss_bytes()
            entry["end_s"] = tracker._now()
            seen = [r for _, r, _, _ in tracker.timeline[mark:]]
            entry["sampled_peak"] = max([entry["rss_before"], entry["rss_after"], *seen])
            tracker.calls.append(entry)

    wrapper._probed = True  # type: ignore[attr-defined]
    setattr(module, name, wrapper)


def write_report(path: str | Path, report: dict[str, Any]) -> None:
    """The tracker's report as JSON (the timeline thinned to at most 20k points)."""
    timeline = report.get("timeline", [])
    step = max(1, len(timeline) // 20000)
    report = {**report, "timeline": timeline[::step]}
    Path(path).write_text(json.dumps(report, indent=1))
