"""The job registry and the JobContext API that every job function uses to report and to stop cleanly.

A job is a function `fn(ctx: JobContext, params: dict) -> None` registered with `@job("kind")`. The
worker finds a kind's code through JOB_MODULES (kind → module), importing only that module, so a job
that never touches torch never pays for importing it. Later features add a line to JOB_MODULES and
decorate functions in their own module. Tests (and plug-ins) can name extra modules in the env var
BITSMITH_EXTRA_JOB_MODULES (comma-separated); they are imported only for kinds not found otherwise.
"""

from __future__ import annotations

import importlib
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bitsmith.engine.errors import BadInputError, BitsmithError, CancelledError

Event = dict[str, Any]
JobFn = Callable[["JobContext", dict[str, Any]], None]

# kind → module that registers it. Keep these modules' top-level imports light.
JOB_MODULES: dict[str, str] = {
    "hardware": "bitsmith.engine.builtin_jobs",
    "selftest": "bitsmith.engine.builtin_jobs",
    "download": "bitsmith.engine.builtin_jobs",
    "quantize": "bitsmith.engine.pipeline.quantize",
    "eval": "bitsmith.engine.pipeline.evaluate",
    "finetune": "bitsmith.engine.finetune.job",
    "preview_dataset": "bitsmith.engine.finetune.preview",
    "chat": "bitsmith.engine.runtime.job",
    "export": "bitsmith.engine.export.job",
    "import": "bitsmith.engine.pipeline.importing",
}
EXTRA_MODULES_ENV = "BITSMITH_EXTRA_JOB_MODULES"
LOG_LEVELS = ("debug", "info", "warning", "error")

_REGISTRY: dict[str, JobFn] = {}


class JobLoadError(BitsmithError):
    """The code behind a job kind could not be imported (a broken or incomplete install)."""

    kind = "internal"


def job(kind: str) -> Callable[[JobFn], JobFn]:
    """Decorator registering `fn(ctx, params)` as the code for job `kind`."""

    def register(fn: JobFn) -> JobFn:
        old = _REGISTRY.get(kind)
        if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"job kind {kind!r} is already registered by {old.__module__}.{old.__qualname__}")
        _REGISTRY[kind] = fn
        return fn

    return register


def _extra_modules() -> list[str]:
    return [m.strip() for m in os.environ.get(EXTRA_MODULES_ENV, "").split(",") if m.strip()]


def _import(module: str, kind: str) -> None:
    try:
        importlib.import_module(module)
    except Exception as exc:
        raise JobLoadError(
            f"could not load the code for job kind {kind!r} (module {module}): {type(exc).__name__}: {exc}",
            hint="the installation looks incomplete or broken; reinstall Bitsmith (the job log has details)",
        ) from exc


def known_kinds() -> list[str]:
    """Every job kind this process can run (built-in map, extra modules' kinds, anything registered)."""
    for module in _extra_modules():
        try:
            importlib.import_module(module)
        except Exception:  # listing kinds must not fail because a plug-in is broken
            pass
    return sorted(set(JOB_MODULES) | set(_REGISTRY))


def resolve(kind: str) -> JobFn:
    """The function for job `kind`, importing its module on first use; BadInputError if unknown."""
    if kind not in _REGISTRY and kind in JOB_MODULES:
        _import(JOB_MODULES[kind], kind)
    if kind not in _REGISTRY:
        for module in _extra_modules():
            _import(module, kind)
            if kind in _REGISTRY:
                break
    if kind not in _REGISTRY:
        raise BadInputError(
            f"unknown job kind {kind!r}",
            hint=f"use one of: {', '.join(known_kinds())}",
        )
    return _REGISTRY[kind]


def _plain(value: Any) -> Any:
    """A JSON-friendly version of a metric value (numpy/torch scalars → Python numbers, paths → str)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        try:
            return _plain(value.item())
        except (TypeError, ValueError, RuntimeError):
            pass
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


class JobContext:
    """What a running job sees: event helpers, its folder for resumable state, and cancellation."""

    def __init__(
        self,
        emit: Callable[[Event], None],
        job_dir: Path,
        *,
        job_id: str = "",
        kind: str = "",
        cancel_event: threading.Event | None = None,
        inbox: queue.Queue[Event] | None = None,
        clock: Callable[[], float] = time.monotonic,
        progress_interval_s: float = 0.1,
    ) -> None:
        self._emit = emit
        self.job_dir = Path(job_dir)
        self.job_id = job_id
        self.kind = kind
        self._cancel = cancel_event or threading.Event()
        # Messages other than cancel that arrive on the worker's stdin (e.g. a chat session's turns).
        self.inbox: queue.Queue[Event] = inbox if inbox is not None else queue.Queue()
        self._clock = clock
        self.progress_interval_s = progress_interval_s
        self._stage: str | None = None
        self._top: str | None = None  # the stage last started with stage(): parent of the parts progress() starts
        self._stage_total: int | None = None
        self._t0 = 0.0
        self._done0 = 0
        self._last_progress_t: float | None = None

    # cancellation -------------------------------------------------------------------------------
    @property
    def cancelled(self) -> bool:
        """True once the user asked to stop; long loops should call check_cancel() at safe points."""
        return self._cancel.is_set()

    @property
    def cancel_event(self) -> threading.Event:
        """The event set on cancel, for library calls that take one (e.g. downloads)."""
        return self._cancel

    def request_cancel(self) -> None:
        """Ask the job to stop at its next check_cancel() (used by the worker on stdin/signals)."""
        self._cancel.set()

    def check_cancel(self) -> None:
        """Raise CancelledError if a cancel was requested; call it where stopping loses no work."""
        if self._cancel.is_set():
            raise CancelledError(
                "cancelled by the user",
                hint="start the same job again (same job id) to resume from its last checkpoint",
            )

    # events -------------------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        """Send a raw protocol event; prefer the helpers below."""
        self._emit(event)

    def stage(self, name: str, total: int | None = None, done: int = 0) -> None:
        """Start a named stage of `total` steps; `done` > 0 when resuming part-way (keeps the ETA honest)."""
        self._top = name
        self._start(name, total, done)

    def _start(self, name: str, total: int | None, done: int = 0, parent: str | None = None) -> None:
        self._stage, self._stage_total = name, total
        self._t0, self._done0 = self._clock(), done
        self._last_progress_t = None
        event: Event = {"event": "stage", "stage": name, "total": total}
        if parent is not None:
            event["parent"] = parent
        self._emit(event)

    def progress(self, done: int, total: int | None = None, stage: str | None = None) -> None:
        """Report `done` of `total` steps in the current stage; the ETA comes from the rate so far.

        A `stage` other than the one stage() started is a part of it (e.g. "capture" inside "calibrate"): its
        stage event names that stage as its "parent", so a reader knows the parent is still running. Naming the
        parent again says the part is over and the parent goes on. Updates closer together than
        progress_interval_s are dropped, except the first and the last.
        """
        if stage is not None and stage != self._stage:
            self._start(stage, total, parent=self._top if self._top not in (None, stage) else None)
        if self._stage is None:  # progress without a stage: time from the first report
            self._stage, self._t0, self._done0 = "", self._clock(), done
        if total is None:
            total = self._stage_total
        now = self._clock()
        final = total is not None and done >= total
        if (
            not final
            and self._last_progress_t is not None
            and now - self._last_progress_t < self.progress_interval_s
        ):
            return
        self._last_progress_t = now
        eta: float | None = None
        elapsed, advanced = now - self._t0, done - self._done0
        if total is not None and advanced > 0 and elapsed > 0:
            eta = round(max(total - done, 0) * elapsed / advanced, 1)
        self._emit({"event": "progress", "stage": self._stage, "done": done, "total": total, "eta_s": eta})

    def metric(self, name: str, value: Any, **fields: Any) -> None:
        """Report a measured number (e.g. name="ppl", split="heldout")."""
        self._emit({"event": "metric", "name": name, "value": _plain(value), **_plain(fields)})

    def log(self, message: str, level: str = "info", **fields: Any) -> None:
        """A human-readable line for the log view (level: debug, info, warning, error)."""
        level = level if level in LOG_LEVELS else "info"
        self._emit({"event": "log", "level": level, "message": str(message), **_plain(fields)})

    def artifact(self, kind: str, path: str | Path, **fields: Any) -> None:
        """Announce a produced file or folder (a model, a report, a plot)."""
        self._emit({"event": "artifact", "kind": kind, "path": str(path), **_plain(fields)})

    def token(self, text: str) -> None:
        """Stream a piece of generated text (chat sessions)."""
        self._emit({"event": "token", "text": text})
