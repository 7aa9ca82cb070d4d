"""Start and follow background jobs: the GUI's (and scripts') side of the job protocol.

No Qt and no torch here. `JobClient().start(kind, params)` launches `python -m bitsmith.engine.worker`,
sends the request, and returns a JobHandle whose reader thread parses the worker's JSON lines into event
dicts. The handle always ends its stream with a `done` event: if the worker dies without one (killed by
a signal, a hard crash), the client adds {"event": "error", "kind": "worker_died", ...} and
{"event": "done", "status": "error", "synthetic": true}, and records the failure in state.json.
`run_inprocess` runs the same job code in this process (the CLI's path).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from bitsmith.engine import jobfiles, paths

Event = dict[str, Any]

_logger = logging.getLogger(__name__)
_END = object()  # queue sentinel after the last event
_STDERR_TAIL_LINES = 40


class JobHandle:
    """A running (or finished) worker process and the events it has sent."""

    def __init__(self, proc: subprocess.Popen[bytes], job_id: str, job_dir: Path) -> None:
        self.proc, self.job_id, self.job_dir = proc, job_id, job_dir
        self.log_path = job_dir / jobfiles.LOG_FILE
        self.status: str | None = None  # "ok" / "error" / "cancelled" once the done event arrived
        self._queue: queue.Queue[Any] = queue.Queue()
        self._stdin_lock = threading.Lock()
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL_LINES)
        self._stderr_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._reader = threading.Thread(target=self._read_events, daemon=True)
        self._stderr_thread.start()
        self._reader.start()

    # reading -----------------------------------------------------------------------------------
    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self._stderr_tail.append(raw.decode("utf-8", "replace").rstrip())

    def _read_events(self) -> None:
        assert self.proc.stdout is not None
        finished = False
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if not isinstance(event, dict) or not isinstance(event.get("event"), str):
                _logger.warning("job %s: skipped a malformed line from the worker: %r", self.job_id, line[:200])
                continue
            if event["event"] == "done":
                finished = True
                self.status = str(event.get("status", "ok"))
            self._queue.put(event)
        code = self.proc.wait()
        if not finished:
            for event in self._died(code):
                self._queue.put(event)
        self._queue.put(_END)

    def _died(self, code: int) -> list[Event]:
        """The events that report a worker which ended without its `done` event."""
        self._stderr_thread.join(timeout=2.0)
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = "unknown signal"
            message = f"the worker process was killed (signal {-code}, {name}) before the job finished"
        else:
            message = f"the worker process exited unexpectedly (exit code {code}) before the job finished"
        tail = [line for line in self._stderr_tail if line.strip()]
        if tail:
            message += f"; its last output: {tail[-1][:300]}"
        hint = f"see the log at {self.log_path}"
        if code == -getattr(signal, "SIGKILL", 9):
            hint += "; if nobody killed it, the machine probably ran out of memory (the system kills the biggest one)"
        error: Event = {
            "event": "error", "kind": "worker_died", "message": message, "hint": hint, "exit_code": code,
        }
        try:
            note = f"client: {message}" + ("\nworker stderr:\n" + "\n".join(tail) if tail else "")
            jobfiles.append_log(self.job_dir, note)
            jobfiles.mark_failed(self.job_dir, {k: v for k, v in error.items() if k != "event"}, code)
        except OSError as exc:
            _logger.warning("job %s: could not record the worker's death: %s", self.job_id, exc)
        self.status = "error"
        return [error, {"event": "done", "status": "error", "synthetic": True}]

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Yield events in order until the final `done`; TimeoutError if none comes within `timeout` s."""
        while True:
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"no event from job {self.job_id} within {timeout} s") from None
            if item is _END:
                self._queue.put(_END)  # later calls end at once too
                return
            yield item

    def poll_events(self) -> list[Event]:
        """Every event that has arrived and not been taken yet, without blocking (for GUI timers)."""
        out: list[Event] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return out
            if item is _END:
                self._queue.put(_END)
                return out
            out.append(item)

    # control -----------------------------------------------------------------------------------
    def send(self, message: Mapping[str, Any]) -> bool:
        """Send a control message (a JSON object) to the worker's stdin; False if the worker is gone."""
        data = (json.dumps(dict(message), ensure_ascii=False) + "\n").encode("utf-8")
        with self._stdin_lock:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
                return True
            except (OSError, ValueError):
                return False

    def cancel(self) -> bool:
        """Ask the job to stop at its next safe point (it keeps its resumable state)."""
        return self.send({"cancel": True})

    def interrupt(self) -> bool:
        """Cancel by signal: SIGINT on POSIX, CTRL_BREAK_EVENT on Windows (sent twice, it forces an exit).

        False when no signal could be sent: on Windows a console event needs a console, and an app started
        by pythonw (no console window) has none; callers then rely on the stdin cancel and, last, `kill`.
        """
        if self.proc.poll() is not None:
            return False
        try:
            self.proc.send_signal(signal.CTRL_BREAK_EVENT if sys.platform == "win32" else signal.SIGINT)
        except (OSError, ValueError):
            return False
        return True

    def kill(self) -> None:
        """Stop the worker at once, without a clean stop (its last checkpoint still allows a resume)."""
        if self.proc.poll() is None:
            self.proc.kill()

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the worker to exit and its events to be read; its exit code, or None on timeout."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._reader.join(timeout=None if timeout is None else max(timeout, 1.0))
        return self.proc.returncode

    @property
    def returncode(self) -> int | None:
        """The worker's exit code (negative: killed by that signal on POSIX), or None while it runs."""
        return self.proc.poll()

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self.proc.pid

    def close(self, grace_s: float = 5.0) -> None:
        """Make sure the worker is gone: cancel, wait up to grace_s, then kill; close the pipes."""
        if self.proc.poll() is None:
            self.cancel()
            if self.wait(grace_s) is None:
                self.kill()
                self.wait(grace_s)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            _close_quietly(stream)

    def __enter__(self) -> JobHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_quietly(stream: IO[bytes] | None) -> None:
    if stream is not None:
        try:
            stream.close()
        except OSError:
            pass


class JobClient:
    """Starts worker processes with this interpreter (`python -m bitsmith.engine.worker`)."""

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable

    def start(
        self,
        kind: str,
        params: Mapping[str, Any] | None = None,
        job_id: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> JobHandle:
        """Launch a worker for job `kind`; `env` adds to (or overrides) this process's environment.

        Pass an existing job_id to resume that job in its folder.
        """
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env["PYTHONIOENCODING"] = "utf-8"
        job_id = jobfiles.check_job_id(job_id) if job_id is not None else jobfiles.new_job_id(kind)
        job_dir = paths.jobs_dir(full_env) / job_id
        # Serialise first: params that are not JSON must fail here, not leave a worker waiting.
        request = {"kind": kind, "params": dict(params or {}), "job_id": job_id}
        json.dumps(request)
        kwargs: dict[str, Any] = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # so CTRL_BREAK reaches only it
        else:
            kwargs["start_new_session"] = True  # a Ctrl-C in our terminal is ours to forward, not its
        proc = subprocess.Popen(
            [self.python, "-m", "bitsmith.engine.worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=full_env, **kwargs,
        )
        handle = JobHandle(proc, job_id, job_dir)
        handle.send(request)
        return handle


def run_inprocess(
    kind: str,
    params: Mapping[str, Any] | None,
    on_event: Callable[[Event], None],
    *,
    job_id: str | None = None,
    cancel_event: threading.Event | None = None,
) -> int:
    """Run job `kind` in this process, calling on_event for each event; returns the worker's exit code."""
    from bitsmith.engine.worker import execute

    request: dict[str, Any] = {"kind": kind, "params": dict(params or {})}
    if job_id is not None:
        request["job_id"] = job_id
    return execute(request, on_event, cancel_event=cancel_event, isolate_output="python")
