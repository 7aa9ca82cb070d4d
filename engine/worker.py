"""The background job worker: `python -m bitsmith.engine.worker [REQUEST.json]`.

It reads ONE JSON request — the first line of stdin, or the file given as the only argument:

    {"kind": "count", "params": {"n": 10}, "job_id": "optional-id-to-resume"}

and writes JSON lines to stdout (shared/DESIGN.md §4), one event per line, flushed at once:

    {"event": "stage", "stage": "...", "total": 30}       (a part of a stage adds "parent": that stage's name)
    {"event": "progress", "stage": "...", "done": 12, "total": 30, "eta_s": 95.0}   (eta_s may be null)
    {"event": "metric", "name": "ppl", "value": 23.4, ...}
    {"event": "log", "level": "info", "message": "..."}                 (levels: debug/info/warning/error)
    {"event": "token", "text": "..."}
    {"event": "artifact", "kind": "model", "path": "..."}
    {"event": "error", "kind": "bad_input", "message": "...", "hint": "..."}   (some kinds add fields: see errors.py)
    {"event": "done", "status": "ok" | "error" | "cancelled"}

Every run ends with exactly one `done` event; when it ends badly an `error` event comes right before it.
A cancelled job sends no error: it ends with {"event": "done", "status": "cancelled", ...} and keeps its
resumable state. Nothing else ever reaches stdout: stray output from job code and libraries (Python or C
level), warnings and tracebacks go to the job's log file.

After the request, further lines on stdin are control messages: {"cancel": true} asks the job to stop at
its next check_cancel(); any other JSON object is queued on JobContext.inbox (chat sessions). SIGINT,
SIGTERM (and SIGBREAK / CTRL_BREAK_EVENT on Windows) also cancel; a second one forces an exit at once.

Each job has a folder <jobs dir>/<job_id>/ with request.json, job.log (every event, tracebacks, stray
output) and state.json (status running/done/error/cancelled, timestamps, pid, last event; written
atomically). Running a request with an existing job_id resumes in the same folder.

Exit codes:
    0    the job finished (done/ok)
    1    the job failed (an error event says why: internal, out_of_memory, disk_full, network, ...)
    2    bad input: the request (not JSON, no kind, unknown kind, params not an object) or the job's params
    3    cancelled cleanly; start the same job_id again to resume
    130  forced to stop by a second interrupt (state.json says cancelled, forced)
"""

from __future__ import annotations

import contextlib
import errno
import faulthandler
import io
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from bitsmith.engine import jobfiles, paths
from bitsmith.engine.errors import BadInputError, BitsmithError, CancelledError
from bitsmith.engine.jobs import Event, JobContext, JobFn, JobLoadError, resolve

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_FORCED = 0, 1, 2, 3, 130

_REQUEST_HINT = 'send one JSON object such as {"kind": "selftest", "params": {}} on the first line of stdin'
_STATE_EVERY_S = 1.0
_logger = logging.getLogger("bitsmith.worker")


@dataclass(frozen=True)
class Request:
    """A validated job request."""

    kind: str
    params: dict[str, Any]
    job_id: str | None = None


def parse_request(raw: str | bytes | dict[str, Any]) -> Request:
    """Validate a request (JSON text or an already-parsed dict); BadInputError names what is wrong."""
    if isinstance(raw, (str, bytes)):
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        if not text.strip():
            raise BadInputError("the job request is empty", hint=_REQUEST_HINT)
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise BadInputError(f"the job request is not valid JSON ({exc})", hint=_REQUEST_HINT) from None
    if not isinstance(raw, dict):
        raise BadInputError(f"the job request must be a JSON object, not {type(raw).__name__}", hint=_REQUEST_HINT)
    if "kind" not in raw:
        raise BadInputError('the job request has no "kind"', hint=_REQUEST_HINT)
    kind = raw["kind"]
    if not isinstance(kind, str) or not kind:
        raise BadInputError(f'the job request\'s "kind" must be a non-empty string, not {kind!r}', hint=_REQUEST_HINT)
    params = raw.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise BadInputError(
            f'the job request\'s "params" must be a JSON object, not {type(params).__name__}',
            hint='put the job\'s settings in an object, e.g. "params": {"steps": 10}, or leave it out',
        )
    job_id = raw.get("job_id")
    if job_id is not None:
        jobfiles.check_job_id(job_id)
    return Request(kind, params, job_id)


def _classify(exc: BaseException) -> tuple[str, str, str]:
    """(kind, message, hint) for an exception escaping a job; the hint is filled in by the caller if empty."""
    if isinstance(exc, BitsmithError):
        return exc.kind, str(exc), exc.hint
    name = type(exc).__name__
    if isinstance(exc, MemoryError) or (
        name == "OutOfMemoryError" and type(exc).__module__.startswith("torch")
    ):
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else "out of memory"
        return (
            "out_of_memory",
            f"ran out of memory: {first}",
            "close other programs using the GPU, or choose a smaller model, batch or context length",
        )
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "disk_full", f"the disk is full: {exc}", "free some disk space, then start the job again to resume"
    short = f"{name}: {exc}".strip().splitlines()[0]
    return "internal", short[:300], ""


class _Run:
    """One execution of a job in its folder: the log, the state file and the event fan-out."""

    def __init__(
        self, req: Request, emit: Callable[[Event], None], job_dir: Path, cancel: threading.Event
    ) -> None:
        self.req, self._forward, self.job_dir, self._cancel = req, emit, job_dir, cancel
        self.log_path = job_dir / jobfiles.LOG_FILE
        job_dir.mkdir(parents=True, exist_ok=True)
        self.log: TextIO = open(self.log_path, "a", encoding="utf-8", buffering=1)
        self._lock = threading.RLock()
        self._listener_gone = False
        self._state_written = 0.0
        old = jobfiles.read_state(job_dir) or {}
        stamp = jobfiles.now_iso()
        self.state: dict[str, Any] = {
            "job_id": job_dir.name,
            "kind": req.kind,
            "status": "running",
            "pid": os.getpid(),
            "pid_create_time": _process_create_time(),
            "created_at": old.get("created_at", stamp),
            "started_at": stamp,
            "updated_at": stamp,
            "finished_at": None,
            "exit_code": None,
            "runs": int(old.get("runs", 0)) + 1,
            "log": str(self.log_path),
            "last_event": None,
        }
        jobfiles.write_json_atomic(
            job_dir / jobfiles.REQUEST_FILE,
            {"kind": req.kind, "params": req.params, "job_id": job_dir.name},
        )
        self.write_log(
            f"=== run {self.state['runs']} of job {job_dir.name} ({req.kind}) pid {os.getpid()}"
            + (f", resuming after status {old.get('status')}" if old else "")
        )
        self.write_state()

    def write_log(self, text: str) -> None:
        """Append a timestamped line to job.log."""
        with self._lock:
            self.log.write(f"{jobfiles.now_iso()} {text.rstrip()}\n")
            self.log.flush()

    def write_state(self) -> None:
        """Write state.json atomically."""
        with self._lock:
            self.state["updated_at"] = jobfiles.now_iso()
            jobfiles.write_json_atomic(self.job_dir / jobfiles.STATE_FILE, self.state)
            self._state_written = time.monotonic()

    def emit(self, event: Event) -> None:
        """Log an event, keep it as the state's last event, then pass it to the listener (any thread)."""
        with self._lock:  # one order for log, state and stream, whichever thread emits
            self.write_log(f"event {json.dumps(event, ensure_ascii=False, default=str)}")
            self.state["last_event"] = event
            if event.get("event") in ("stage", "artifact", "error") or (
                time.monotonic() - self._state_written >= _STATE_EVERY_S
            ):
                self.write_state()
            if self._listener_gone:
                return
            try:
                self._forward(event)
            except (BrokenPipeError, ValueError, OSError):
                # Nobody reads our events any more (the parent died): stop at the next safe point.
                self._listener_gone = True
                self.write_log("the listener went away; cancelling the job")
                self._cancel.set()

    def finish(self, status: str, exit_code: int, error: Event | None = None, **extra: Any) -> None:
        """Record the final state, then send the closing `done` event."""
        done: Event = {"event": "done", "status": status, **extra}
        stamp = jobfiles.now_iso()
        state_status = "done" if status == "ok" else status  # state.json: running/done/error/cancelled
        self.state.update(status=state_status, exit_code=exit_code, finished_at=stamp, last_event=done)
        if error is not None:
            self.state["error"] = {k: v for k, v in error.items() if k != "event"}
        else:
            self.state.pop("error", None)
        self.write_state()
        self.emit(done)

    def close(self) -> None:
        """Close the log file."""
        with contextlib.suppress(Exception):
            self.log.close()


class _LogStream(io.TextIOBase):
    """A text stream that appends to the run's log under its lock (stands in for sys.stdout/stderr)."""

    def __init__(self, run: _Run) -> None:
        self._run = run

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._run._lock:
            self._run.log.write(text)
        return len(text)

    def flush(self) -> None:
        with self._run._lock:
            self._run.log.flush()

    def fileno(self) -> int:
        return self._run.log.fileno()

    @property
    def encoding(self) -> str:
        return "utf-8"


class _LogHandler(logging.Handler):
    """Routes Python logging records into the current run's log."""

    def emit(self, record: logging.LogRecord) -> None:
        run = _current
        if run is not None:
            with contextlib.suppress(Exception):
                run.write_log(self.format(record))


_current: _Run | None = None  # the run in progress, for the signal handler and the logging handler


def _process_create_time() -> float | None:
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:
        return None


def _already_running(job_dir: Path) -> int | None:
    """The pid of a live worker (other than this process) already running this job folder, if any."""
    state = jobfiles.read_state(job_dir)
    if jobfiles.worker_alive(state) and state and state["pid"] != os.getpid():
        return int(state["pid"])
    return None


@contextlib.contextmanager
def _isolate_output(mode: str, run: _Run) -> Iterator[None]:
    """Send stray output to the log: Python-level (in-process) or also the OS-level fds 1 and 2 (worker)."""
    if mode == "fd":
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(run.log.fileno(), 1)
        os.dup2(run.log.fileno(), 2)
        sys.stdout = sys.stderr = _LogStream(run)
        faulthandler.enable(file=2)
        handler = _LogHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
        try:
            yield
        finally:  # fds 1 and 2 stay on the log file until the process exits
            root.removeHandler(handler)
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    elif mode == "python":
        with contextlib.redirect_stdout(_LogStream(run)):
            yield
    else:
        yield


def execute(
    request: str | bytes | dict[str, Any],
    emit: Callable[[Event], None],
    *,
    cancel_event: threading.Event | None = None,
    inbox: queue.Queue[Event] | None = None,
    isolate_output: str = "python",
) -> int:
    """Run one job request, sending its events to `emit`; returns the exit code (see module docstring).

    Used by the worker process and, in-process, by the CLI. isolate_output: "fd" (worker: stray output
    of any kind goes to job.log), "python" (in-process: print() goes to job.log) or "none".
    """
    global _current
    cancel_event = cancel_event or threading.Event()
    load_error: JobLoadError | None = None
    try:
        req = parse_request(request)
        try:
            fn: JobFn | None = resolve(req.kind)
        except JobLoadError as exc:  # reported inside the job folder, with its traceback in the log
            fn, load_error = None, exc
        job_id = req.job_id or jobfiles.new_job_id(req.kind)
        job_dir = paths.jobs_dir() / job_id
        pid = _already_running(job_dir)
        if pid is not None:
            raise BadInputError(
                f"job {job_id} is already running (worker pid {pid})",
                hint="wait for it to finish, cancel it, or start a new job without this job_id",
            )
    except BadInputError as exc:
        emit({"event": "error", "kind": exc.kind, "message": str(exc), "hint": exc.hint})
        emit({"event": "done", "status": "error"})
        return EXIT_BAD_INPUT

    try:
        run = _Run(req, emit, job_dir, cancel_event)
    except OSError as exc:
        kind, message, hint = _classify(exc)
        if kind == "internal":
            message = f"cannot create the job folder {job_dir}: {exc}"
            hint = f"check that {paths.HOME_ENV} (or your user data folder) points to a writable place"
        emit({"event": "error", "kind": kind, "message": message, "hint": hint})
        emit({"event": "done", "status": "error"})
        return EXIT_FAILED
    _current = run
    ctx = JobContext(run.emit, job_dir, job_id=job_id, kind=req.kind, cancel_event=cancel_event, inbox=inbox)
    try:
        run.emit({
            "event": "log", "level": "debug", "message": f"job {job_id} ({req.kind}) in {job_dir}",
            "job_id": job_id, "job_dir": str(job_dir),
        })
        with _isolate_output(isolate_output, run):
            try:
                if load_error is not None:
                    raise load_error
                assert fn is not None
                fn(ctx, req.params)
            except CancelledError as exc:
                run.write_log(f"cancelled ({exc}); resumable state kept in {job_dir}")
                run.finish("cancelled", EXIT_CANCELLED, message=str(exc), hint=exc.hint)
                return EXIT_CANCELLED
            except KeyboardInterrupt:  # in-process only: a second Ctrl-C
                run.write_log("interrupted (KeyboardInterrupt)\n" + traceback.format_exc())
                run.finish("cancelled", EXIT_FORCED, forced=True)
                raise
            except BaseException as exc:  # every failure becomes an error event
                run.write_log("job failed:\n" + traceback.format_exc())
                kind, message, hint = _classify(exc)
                if not hint:
                    hint = f"this looks like a bug in Bitsmith; the full traceback is in {run.log_path}"
                details = exc.details() if isinstance(exc, BitsmithError) else {}
                error = {**details, "event": "error", "kind": kind, "message": message, "hint": hint}
                run.emit(error)
                code = EXIT_BAD_INPUT if isinstance(exc, BadInputError) or kind == "bad_input" else EXIT_FAILED
                run.finish("error", code, error)
                return code
            run.finish("ok", EXIT_OK)
            return EXIT_OK
    finally:
        _current = None
        run.close()


# ---- the worker process ---------------------------------------------------------------------------


class _LineReader:
    """Reads lines straight from a file descriptor (no Python io locks, so a daemon thread may block here)."""

    def __init__(self, fd: int) -> None:
        self.fd, self._buf, self._eof = fd, b"", False

    def readline(self) -> bytes | None:
        """The next line without its newline, or None at end of input."""
        while b"\n" not in self._buf and not self._eof:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                self._eof = True
            self._buf += chunk
        if not self._buf:
            return None
        line, sep, rest = self._buf.partition(b"\n")
        self._buf = rest
        return line


class _ProtocolWriter:
    """Writes events as JSON lines to the real stdout, one flushed line at a time, from any thread."""

    def __init__(self, stream: TextIO) -> None:
        self._stream, self._lock = stream, threading.Lock()

    def __call__(self, event: Event) -> None:
        line = json.dumps(event, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()

    def write_if_free(self, event: Event) -> None:
        """Write unless another write is in progress (safe to call from a signal handler)."""
        if self._lock.acquire(blocking=False):
            try:
                self._stream.write(json.dumps(event, default=str) + "\n")
                self._stream.flush()
            except Exception:
                pass
            finally:
                self._lock.release()


def _read_control(reader: _LineReader, cancel: threading.Event, inbox: queue.Queue[Event]) -> None:
    """Background thread: turn control lines on stdin into a cancel request or inbox messages."""
    while (line := reader.readline()) is not None:
        if not line.strip():
            continue
        try:
            msg = json.loads(line.decode("utf-8", "replace"))
        except ValueError:
            _logger.warning("ignored a control line that is not JSON: %r", line[:200])
            continue
        if not isinstance(msg, dict):
            _logger.warning("ignored a control line that is not a JSON object: %r", line[:200])
        elif msg.get("cancel"):
            _logger.warning("cancel requested on stdin")
            cancel.set()
        else:
            inbox.put(msg)


def _install_signals(cancel: threading.Event, writer: _ProtocolWriter) -> None:
    """First SIGINT/SIGTERM/SIGBREAK: cancel at the next safe point. Second: record and exit at once."""
    count = 0

    def handler(signum: int, frame: object) -> None:
        nonlocal count
        count += 1
        cancel.set()
        if count < 2:
            return
        run = _current
        if run is not None:
            with contextlib.suppress(Exception):
                stamp = jobfiles.now_iso()
                run.state.update(status="cancelled", exit_code=EXIT_FORCED, finished_at=stamp, forced=True)
                run.write_state()
        writer.write_if_free({"event": "done", "status": "cancelled", "forced": True})
        os._exit(EXIT_FORCED)

    names = ["SIGINT", "SIGTERM", "SIGBREAK"]  # SIGBREAK exists on Windows only
    for name in names:
        sig = getattr(signal, name, None)
        if sig is not None:
            with contextlib.suppress(OSError, ValueError):
                signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    """Worker entry point: read the request, run it with events on stdout, return the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    # The protocol owns a private copy of the real stdout; fd 1 itself is later pointed at the log.
    proto = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", newline="\n")
    writer = _ProtocolWriter(proto)
    cancel, inbox = threading.Event(), queue.Queue()
    _install_signals(cancel, writer)

    reader: _LineReader | None = None
    with contextlib.suppress(AttributeError, OSError, ValueError):
        reader = _LineReader(sys.stdin.fileno())
    if argv:
        try:
            raw: str | bytes = Path(argv[0]).read_bytes()
        except OSError as exc:
            writer({
                "event": "error", "kind": "bad_input", "message": f"cannot read the request file: {exc}",
                "hint": "pass the path of an existing JSON file, or send the request on stdin",
            })
            writer({"event": "done", "status": "error"})
            return EXIT_BAD_INPUT
    else:
        raw = (reader.readline() if reader else None) or b""
    if reader is not None:
        threading.Thread(target=_read_control, args=(reader, cancel, inbox), daemon=True).start()
    try:
        return execute(raw, writer, cancel_event=cancel, inbox=inbox, isolate_output="fd")
    finally:
        with contextlib.suppress(Exception):
            proto.flush()


if __name__ == "__main__":
    raise SystemExit(main())
