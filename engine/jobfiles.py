"""A job's folder on disk: request.json, job.log, state.json, plus whatever the job keeps to resume.

Shared by the worker (writes), the client (repairs state when a worker dies) and `bitsmith jobs`
(reads). Standard library only, so the GUI can import it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bitsmith.engine.errors import BadInputError

REQUEST_FILE = "request.json"
LOG_FILE = "job.log"
STATE_FILE = "state.json"

# Final statuses; "running" is the only other one.
STATUSES = ("running", "done", "error", "cancelled")

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$")


def now_iso() -> str:
    """The current UTC time as an ISO 8601 string (second resolution), for state files and logs."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_job_id(kind: str) -> str:
    """A fresh job id that sorts by start time and is safe as a folder name on every platform."""
    safe_kind = re.sub(r"[^A-Za-z0-9_-]", "-", kind)[:40] or "job"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"{stamp}-{safe_kind}-{secrets.token_hex(3)}"


def check_job_id(job_id: object) -> str:
    """Return job_id if it is usable as a folder name, else raise BadInputError saying what is allowed."""
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id) or ".." in job_id:
        raise BadInputError(
            f"job_id {job_id!r} is not a valid job id",
            hint="use 1-120 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return job_id


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write text to path via a temporary file and os.replace, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to path atomically (see write_text_atomic)."""
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object stored at path, or None if it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_state(job_dir: Path) -> dict[str, Any] | None:
    """A job's state.json as a dict, or None if the job never got that far."""
    return read_json(job_dir / STATE_FILE)


def worker_alive(state: dict[str, Any] | None) -> bool:
    """True if state.json says "running" and its worker process still exists (not a reused pid)."""
    if not state or state.get("status") != "running" or not isinstance(state.get("pid"), int):
        return False
    try:
        import psutil  # lazy: only needed when looking at running jobs

        proc = psutil.Process(state["pid"])
        created = state.get("pid_create_time")
        return created is None or abs(proc.create_time() - float(created)) <= 1.0
    except Exception:  # no such process, no permission, psutil missing
        return False


def mark_failed(job_dir: Path, error: dict[str, Any], exit_code: int | None) -> None:
    """Record in state.json that a job ended with `error`, unless it already reached a final status."""
    state = read_state(job_dir) or {}
    if state.get("status") not in (None, "running"):
        return
    stamp = now_iso()
    state.update(status="error", error=error, exit_code=exit_code, updated_at=stamp, finished_at=stamp)
    write_json_atomic(job_dir / STATE_FILE, state)


def append_log(job_dir: Path, text: str) -> None:
    """Append a line to the job's log from outside the worker (e.g. the client noting the worker died)."""
    job_dir.mkdir(parents=True, exist_ok=True)
    with open(job_dir / LOG_FILE, "a", encoding="utf-8") as f:
        f.write(f"{now_iso()} {text.rstrip()}\n")
