"""A worker job as a QObject: the engine's JobHandle (bitsmith.engine.jobclient) polled from a QTimer.

The handle's reader thread queues the worker's JSON-line events; a timer on the GUI thread takes them
and emits `event(dict)` for each and `finished(dict)` once with the final `done` event (a worker that dies
gets a synthetic `worker_died` error and done from the client, so `finished` always comes). Signals are
therefore always emitted on the GUI thread. No torch: the job runs in another process.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from bitsmith.engine.jobclient import JobClient, JobHandle

POLL_MS = 25  # fast enough that streamed tokens look continuous
_REAP_POLL_MS = 100
_EXIT_GRACE_S = 10.0  # after `done`, how long the worker may take to exit before it is killed
_CANCEL_GRACE_S = 8.0  # after a cancel request, how long before a signal, then a kill


class QtJob(QObject):
    """One worker process running job `kind` (see the module docstring)."""

    event = Signal(dict)
    finished = Signal(dict)

    def __init__(self, kind: str, params: Mapping[str, Any] | None = None, *, client: JobClient | None = None,
                 env: Mapping[str, str] | None = None, job_id: str | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.kind = kind
        self.params = dict(params or {})
        self._client = client or JobClient()
        self._env = dict(env or {})
        self._job_id = job_id
        self.handle: JobHandle | None = None
        self.done_event: dict[str, Any] | None = None
        self.errors: list[dict[str, Any]] = []
        self.started_at: float | None = None
        self._cancel_at: float | None = None
        self._done_at: float | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)

    # -- state ------------------------------------------------------------------------------------
    @property
    def job_id(self) -> str | None:
        """The job's id (its folder name under the jobs folder), once started."""
        return self.handle.job_id if self.handle else self._job_id

    @property
    def running(self) -> bool:
        """True from start() until the final done event has been emitted."""
        return self.started_at is not None and self.done_event is None

    @property
    def status(self) -> str | None:
        """ok / error / cancelled once finished, else None."""
        return None if self.done_event is None else str(self.done_event.get("status", "ok"))

    # -- control ----------------------------------------------------------------------------------
    def start(self) -> QtJob:
        """Launch the worker; a launch failure is reported through the same error/finished signals."""
        if self.started_at is not None:
            raise RuntimeError("a QtJob starts only once")
        self.started_at = time.monotonic()
        try:
            self.handle = self._client.start(self.kind, self.params, job_id=self._job_id, env=self._env or None)
        except (OSError, ValueError, TypeError) as exc:
            # Emitted on the next loop turn so callers connected after start() still hear it.
            QTimer.singleShot(0, lambda err=exc: self._launch_failed(err))
            return self
        self._timer.start()
        return self

    def _launch_failed(self, exc: BaseException) -> None:
        error = {"event": "error", "kind": "internal", "message": f"could not start a worker process: {exc}",
                 "hint": "check that Bitsmith is installed completely (reinstall it if this persists)"}
        self._deliver(error)
        self._deliver({"event": "done", "status": "error", "synthetic": True})

    def send(self, message: Mapping[str, Any]) -> bool:
        """Send a control message to the worker (e.g. a chat turn); False if it is gone."""
        return self.handle.send(message) if self.handle and self.running else False

    def cancel(self) -> None:
        """Ask for a clean stop; a signal follows after a grace period, then a kill."""
        if not self.running or self.handle is None:
            return
        if self._cancel_at is None:
            self._cancel_at = time.monotonic()
            self.handle.cancel()

    def kill(self) -> None:
        """Stop the worker at once (its `finished` still follows, as worker_died)."""
        if self.handle is not None:
            self.handle.kill()

    def close(self, grace_s: float = 3.0) -> None:
        """Make sure the worker is gone (used when the window closes); blocks up to about 2 x grace_s."""
        self._timer.stop()
        if self.handle is not None:
            self.handle.close(grace_s)

    # -- polling ----------------------------------------------------------------------------------
    def _deliver(self, ev: dict[str, Any]) -> None:
        if self.done_event is not None:
            return
        if ev.get("event") == "error":
            self.errors.append(ev)
        if ev.get("event") == "done":
            self.done_event = ev
            self._done_at = time.monotonic()
            self.finished.emit(ev)
            return
        self.event.emit(ev)

    def _poll(self) -> None:
        handle = self.handle
        if handle is None:
            return
        for ev in handle.poll_events():
            self._deliver(ev)
        now = time.monotonic()
        if self.done_event is None:
            if self._cancel_at is not None:
                waited = now - self._cancel_at
                if waited > 2 * _CANCEL_GRACE_S:
                    handle.kill()
                elif waited > _CANCEL_GRACE_S:
                    handle.interrupt()
            return
        # Finished: reap the process without blocking the GUI, then stop polling.
        self._timer.setInterval(_REAP_POLL_MS)
        if handle.returncode is None and self._done_at is not None and now - self._done_at > _EXIT_GRACE_S:
            handle.kill()
        if handle.returncode is not None:
            self._timer.stop()
            handle.close(0.5)
