"""Render job events on a terminal (stage headers, a progress bar with ETA, metrics, logs, errors), or
pass them through as JSON lines with --json. `run_job_cli` is what CLI commands call to run a job.

Human output: stage/progress/log/error lines go to stderr; results (metrics, artifacts, streamed tokens)
go to stdout. On a terminal the bar redraws in place with \\r; otherwise it prints a plain line now and
then. JSON mode writes every event, unchanged, as one line on stdout.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

Event = dict[str, Any]


def format_duration(seconds: float | None) -> str:
    """A short human duration: 45s, 3m05s, 2h10m; '?' when unknown."""
    if seconds is None:
        return "?"
    s = max(int(round(seconds)), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class ProgressRenderer:
    """Callable event sink that draws events for a person (or echoes JSON lines in json_mode)."""

    def __init__(
        self,
        *,
        json_mode: bool = False,
        out: TextIO | None = None,
        err: TextIO | None = None,
        is_tty: bool | None = None,
        verbose: bool = False,
        plain_interval_s: float = 5.0,
        width: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.json_mode, self.verbose = json_mode, verbose
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.is_tty = self.err.isatty() if is_tty is None else is_tty
        self.plain_interval_s = plain_interval_s
        self._width = width
        self._clock = clock
        self._bar_len = 0  # characters of the bar currently drawn (tty), 0 if none
        self._last_plain: float | None = None
        self._in_tokens = False
        self._lock = threading.RLock()  # re-entered if a Ctrl-C note lands mid-render

    def __call__(self, event: Event) -> None:
        with self._lock:
            if self.json_mode:
                self.out.write(json.dumps(event, ensure_ascii=False, default=str) + "\n")
                self.out.flush()
                return
            kind = event.get("event")
            if kind != "token" and self._in_tokens:
                self._in_tokens = False
                self._write(self.out, "\n")
            handler = getattr(self, f"_on_{kind}", None)
            if handler is not None:
                handler(event)

    # output helpers ----------------------------------------------------------------------------
    def _clear_bar(self) -> None:
        if self._bar_len:
            self.err.write("\r" + " " * self._bar_len + "\r")
            self.err.flush()
            self._bar_len = 0

    def _write(self, stream: TextIO, text: str) -> None:
        self._clear_bar()
        stream.write(text)
        stream.flush()

    def _line(self, stream: TextIO, text: str) -> None:
        self._write(stream, text + "\n")

    def _columns(self) -> int:
        return self._width or shutil.get_terminal_size((80, 24)).columns

    # events ------------------------------------------------------------------------------------
    def _on_stage(self, event: Event) -> None:
        total = event.get("total")
        self._last_plain = None
        suffix = f" ({total} step{'' if total == 1 else 's'})" if total else ""
        self._line(self.err, f"==> {event.get('stage', '')}{suffix}")

    def _on_progress(self, event: Event) -> None:
        done, total = event.get("done", 0), event.get("total")
        eta = event.get("eta_s")
        stage = event.get("stage") or ""
        if total:
            frac = min(max(done / total, 0.0), 1.0)
            counts = f"{done:>{len(str(total))}}/{total} {frac * 100:3.0f}%"
        else:
            frac, counts = None, str(done)
        tail = f"{counts}  ETA {format_duration(eta)}" if eta is not None and frac != 1.0 else counts
        if not self.is_tty:
            now = self._clock()
            last = self._last_plain
            if frac == 1.0 or last is None or now - last >= self.plain_interval_s:
                self._last_plain = now
                self._line(self.err, f"    {stage} {tail}".rstrip() if stage else f"    {tail}")
            return
        head = f"    {stage} " if stage else "    "
        room = self._columns() - 1 - len(head) - len(tail) - 4
        bar = ""
        if frac is not None and room >= 10:
            room = min(room, 40)
            filled = int(round(frac * room))
            bar = "[" + "#" * filled + "-" * (room - filled) + "]  "
        text = (head + bar + tail)[: self._columns() - 1]
        pad = max(self._bar_len - len(text), 0)
        self.err.write("\r" + text + " " * pad)
        self.err.flush()
        self._bar_len = len(text)
        if frac == 1.0:
            self.err.write("\n")
            self.err.flush()
            self._bar_len = 0

    def _on_metric(self, event: Event) -> None:
        extras = {k: v for k, v in event.items() if k not in ("event", "name", "value")}
        where = f" ({', '.join(_fmt_value(v) for v in extras.values())})" if extras else ""
        self._line(self.out, f"{event.get('name')}{where}: {_fmt_value(event.get('value'))}")

    def _on_result(self, event: Event) -> None:
        fields = ", ".join(f"{k} {_fmt_value(v)}" for k, v in event.items() if k != "event")
        self._line(self.out, f"result: {fields}")

    def _on_log(self, event: Event) -> None:
        level, message = event.get("level", "info"), str(event.get("message", ""))
        if level == "debug" and not self.verbose:
            return
        prefix = {"warning": "warning: ", "error": "error: ", "debug": "debug: "}.get(level, "")
        self._line(self.err, f"{prefix}{message}")

    def _on_token(self, event: Event) -> None:
        self._in_tokens = True
        self._write(self.out, str(event.get("text", "")))

    def _on_artifact(self, event: Event) -> None:
        self._line(self.out, f"{event.get('kind', 'output')}: {event.get('path', '')}")

    def _on_error(self, event: Event) -> None:
        self._line(self.err, f"error ({event.get('kind', 'internal')}): {event.get('message', '')}")
        if event.get("hint"):
            self._line(self.err, f"  what to do: {event['hint']}")

    def _on_done(self, event: Event) -> None:
        status = event.get("status", "ok")
        if status == "cancelled":
            self._line(self.err, "cancelled" + (" (forced)" if event.get("forced") else ""))
            if event.get("hint"):
                self._line(self.err, f"  {event['hint']}")
        else:
            self._clear_bar()


def run_job_cli(
    kind: str,
    params: Mapping[str, Any] | None,
    json_mode: bool = False,
    *,
    job_id: str | None = None,
    verbose: bool = False,
    result_last: bool = False,
) -> int:
    """Run a job in this process, rendering its events; returns the worker's exit code.

    The first Ctrl-C asks the job to stop at its next checkpoint; a second one interrupts at once.
    With `result_last` and json_mode, the job's `result` event (without its "event" key) is printed
    again as the very last line, so scripts can read the outcome with `tail -n 1`.
    """
    from bitsmith.engine.jobclient import run_inprocess

    shown = ProgressRenderer(json_mode=json_mode, verbose=verbose)
    results: list[Event] = []

    def renderer(event: Event) -> None:
        if event.get("event") == "result":
            results.append(event)
        shown(event)

    cancel = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():

        def on_sigint(signum: int, frame: object) -> None:
            if cancel.is_set():
                raise KeyboardInterrupt
            cancel.set()
            if not json_mode:
                try:
                    renderer({"event": "log", "level": "warning",
                              "message": "cancelling at the next checkpoint (press Ctrl-C again to stop at once)"})
                except RuntimeError:  # the stream was mid-write; the note is not worth a crash
                    pass

        previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        code = run_inprocess(kind, params, renderer, job_id=job_id, cancel_event=cancel)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if result_last and json_mode and results:
        final = {k: v for k, v in results[-1].items() if k != "event"}
        sys.stdout.write(json.dumps(final, ensure_ascii=False, default=str) + "\n")
        sys.stdout.flush()
    return code
