"""How the Models page writes sizes, counts, speeds, times and fit verdicts (shared by its table, details pane and
downloads list)."""

from __future__ import annotations

from typing import Any

FIT_COLORS = {"gpu": "#2e9d58", "offload": "#d08a1e", "cpu": "#3d7be0", "no_fit": "#d0473a"}
UNKNOWN_COLOR = "#8a8f98"


def fit_badge(fit: Any, note: str | None = None) -> tuple[str, str]:
    """(text, colour) of a search result's fit verdict: GPU / partial / CPU / won't fit, with the gap in GB."""
    if fit is None:
        return ("unknown", UNKNOWN_COLOR) if not note else ("unknown — " + note.split(".")[0][:60], UNKNOWN_COLOR)
    gap = fit.gap_gb or 0.0
    if fit.verdict == "gpu":
        return f"GPU ✓ ({-gap:.1f} GB to spare)", FIT_COLORS["gpu"]
    if fit.verdict == "offload":
        return f"partial: {gap:.1f} GB in RAM", FIT_COLORS["offload"]
    if fit.verdict == "cpu":
        return "CPU only", FIT_COLORS["cpu"]
    return f"won't fit: {gap:.1f} GB short", FIT_COLORS["no_fit"]


def human_bytes(n: int | float | None) -> str:
    """'812 MB', '4.6 GB', '12 KB', or '–'."""
    if n is None:
        return "–"
    if n >= 2**30:
        return f"{n / 2**30:.1f} GB"
    if n >= 2**20 or n == 0:
        return f"{n / 2**20:,.0f} MB"
    return f"{max(n / 2**10, 1):,.0f} KB"


def human_count(n: int | None) -> str:
    """'135 M', '7.6 B', or '–'."""
    if not n:
        return "–"
    return f"{n / 1e9:.1f} B" if n >= 1e9 else f"{n / 1e6:,.0f} M"


def human_speed(bps: float | None) -> str:
    """'23.4 MB/s', '850 KB/s', or '' when unknown."""
    if not bps or bps <= 0:
        return ""
    if bps >= 2**20:
        return f"{bps / 2**20:.1f} MB/s"
    return f"{bps / 2**10:.0f} KB/s"


def human_eta(seconds: float | None) -> str:
    """'about 40 s left', 'about 3 min left', 'about 1 h 20 min left', or '' when unknown."""
    if seconds is None or seconds < 0:
        return ""
    s = round(seconds)
    if s < 60:
        return f"about {s} s left"
    if s < 3600:
        return f"about {max(1, s // 60)} min left"
    return f"about {s // 3600} h {s % 3600 // 60} min left"


def progress_text(done: int, total: int | None, speed_bps: float | None = None, eta_s: float | None = None) -> str:
    """'412 MB of 1.2 GB (34 %) · 25.3 MB/s · about 40 s left' (parts left out when unknown)."""
    parts = [f"{human_bytes(done)} of {human_bytes(total)} ({100 * done / total:.0f} %)" if total
             else f"{human_bytes(done)}"]
    parts += [p for p in (human_speed(speed_bps), human_eta(eta_s)) if p]
    return " · ".join(parts)
