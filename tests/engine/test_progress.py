"""Terminal rendering of job events, JSON pass-through, and run_job_cli."""

from __future__ import annotations

import io
import json
import random
import secrets
from pathlib import Path

import pytest

from bitsmith.engine.progress import ProgressRenderer, format_duration, run_job_cli

HERE = Path(__file__).resolve().parent


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def renderer(tty: bool, **kw: object) -> tuple[ProgressRenderer, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    return ProgressRenderer(out=out, err=err, is_tty=tty, width=80, **kw), out, err


@pytest.fixture
def inprocess_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BITSMITH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BITSMITH_EXTRA_JOB_MODULES", "jobs_for_tests")
    monkeypatch.syspath_prepend(str(HERE))
    return tmp_path / "home"


def test_format_duration() -> None:
    assert format_duration(None) == "?"
    assert format_duration(0.4) == "0s"
    assert format_duration(45) == "45s"
    assert format_duration(185) == "3m05s"
    assert format_duration(2 * 3600 + 10 * 60 + 7) == "2h10m"


def test_tty_bar_redraws_in_place_with_eta() -> None:
    r, out, err = renderer(tty=True)
    total = random.randint(10, 40)
    r({"event": "stage", "stage": "calibrate", "total": total})
    r({"event": "progress", "stage": "calibrate", "done": 1, "total": total, "eta_s": 95.0})
    r({"event": "progress", "stage": "calibrate", "done": total // 2, "total": total, "eta_s": 30.0})
    r({"event": "metric", "name": "loss", "value": 0.123456, "split": "train"})
    r({"event": "progress", "stage": "calibrate", "done": total, "total": total, "eta_s": 0.0})
    r({"event": "done", "status": "ok"})
    text = err.getvalue()
    assert text.startswith(f"==> calibrate ({total} steps)\n")
    assert "\r    calibrate [" in text and "ETA 1m35s" in text and "ETA 30s" in text
    assert f"{total}/{total} 100%" in text and text.endswith("\n")
    assert all(len(line) < 80 for chunk in text.split("\r") for line in chunk.split("\n"))
    assert out.getvalue() == "loss (train): 0.1235\n"


def test_plain_output_prints_periodic_lines() -> None:
    clock = FakeClock()
    r, _, err = renderer(tty=False, clock=clock, plain_interval_s=5.0)
    r({"event": "stage", "stage": "search", "total": 100})
    for done in range(1, 101):
        clock.t += 0.25  # 25 s in all → a line at start, every 5 s, and the last
        r({"event": "progress", "stage": "search", "done": done, "total": 100, "eta_s": (100 - done) * 0.25})
    lines = err.getvalue().splitlines()
    assert "\r" not in err.getvalue()
    assert lines[0] == "==> search (100 steps)"
    progress = lines[1:]
    assert 5 <= len(progress) <= 7
    assert progress[0] == "    search   1/100   1%  ETA 25s"
    assert progress[-1] == "    search 100/100 100%"


def test_logs_errors_and_cancel() -> None:
    r, out, err = renderer(tty=False)
    hint = secrets.token_hex(4)
    r({"event": "log", "level": "debug", "message": "hidden"})
    r({"event": "log", "level": "info", "message": "loading"})
    r({"event": "log", "level": "warning", "message": "slow disk"})
    r({"event": "artifact", "kind": "model", "path": "/tmp/m"})
    r({"event": "error", "kind": "out_of_memory", "message": "ran out of memory", "hint": hint})
    r({"event": "done", "status": "error"})
    r({"event": "done", "status": "cancelled", "hint": "start it again to resume"})
    assert err.getvalue().splitlines() == [
        "loading",
        "warning: slow disk",
        "error (out_of_memory): ran out of memory",
        f"  what to do: {hint}",
        "cancelled",
        "  start it again to resume",
    ]
    assert out.getvalue() == "model: /tmp/m\n"
    r2, _, err2 = renderer(tty=False, verbose=True)
    r2({"event": "log", "level": "debug", "message": "shown"})
    assert err2.getvalue() == "debug: shown\n"


def test_tokens_stream_on_stdout_and_end_with_a_newline() -> None:
    r, out, _ = renderer(tty=True)
    words = [secrets.token_hex(2) for _ in range(4)]
    for w in words:
        r({"event": "token", "text": w + " "})
    r({"event": "done", "status": "ok"})
    assert out.getvalue() == "".join(w + " " for w in words) + "\n"


def test_json_mode_passes_events_through() -> None:
    out, err = io.StringIO(), io.StringIO()
    r = ProgressRenderer(json_mode=True, out=out, err=err)
    events = [
        {"event": "stage", "stage": "measure", "total": random.randint(1, 99)},
        {"event": "progress", "stage": "measure", "done": 1, "total": 5, "eta_s": random.random()},
        {"event": "token", "text": "Ünïcode ✓"},
        {"event": "done", "status": "ok"},
    ]
    for e in events:
        r(e)
    assert [json.loads(line) for line in out.getvalue().splitlines()] == events
    assert err.getvalue() == ""


def test_run_job_cli_renders_a_real_job(inprocess_env: Path, capsys: pytest.CaptureFixture) -> None:
    n = random.randint(2, 5)
    assert run_job_cli("count", {"n": n}, json_mode=False) == 0
    captured = capsys.readouterr()
    assert f"==> count ({n} steps)" in captured.err
    assert f"{n}/{n} 100%" in captured.err
    assert "count:" in captured.out  # the artifact line

    assert run_job_cli("count", {"n": n}, json_mode=True) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1] == {"event": "done", "status": "ok"}

    assert run_job_cli("bad", {"steps": 0}, json_mode=False) == 2
    err = capsys.readouterr().err
    assert "error (bad_input): steps must be a positive integer" in err and "what to do:" in err
