"""`bitsmith jobs`: list job folders, show one job's state and log, or run a job kind from the terminal."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `bitsmith jobs [list|show|run]`."""
    parser = subparsers.add_parser("jobs", help="list, inspect or run background jobs")
    parser.set_defaults(func=_list, json=False, limit=20)
    sub = parser.add_subparsers(dest="jobs_command", metavar="ACTION")

    p = sub.add_parser("list", help="list jobs, newest first (the default)")
    p.add_argument("--json", action="store_true", help="print each job's state as a JSON line")
    p.add_argument("--limit", type=int, default=20, help="show at most this many jobs (0: all)")
    p.set_defaults(func=_list)

    p = sub.add_parser("show", help="print a job's state and the end of its log")
    p.add_argument("job_id")
    p.add_argument("--lines", type=int, default=40, help="how many log lines to show")
    p.set_defaults(func=_show)

    p = sub.add_parser("run", help="run a job kind here, with a progress bar (e.g. `bitsmith jobs run selftest`)")
    p.add_argument("kind")
    p.add_argument("--params", default="{}", help="the job's parameters as a JSON object")
    p.add_argument("--job-id", help="reuse this job's folder (resumes a cancelled job)")
    p.add_argument("--json", action="store_true", help="print events as JSON lines instead of a progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="also show debug messages")
    p.set_defaults(func=_run)


def _summary(state: dict[str, Any]) -> str:
    """One short phrase about where a job is: its error, or its last event."""
    error = state.get("error")
    if state.get("status") == "error" and isinstance(error, dict):
        return f"{error.get('kind', 'error')}: {error.get('message', '')}"[:80]
    event = state.get("last_event")
    if not isinstance(event, dict):
        return ""
    kind = event.get("event")
    if kind == "progress":
        return f"{event.get('stage', '')} {event.get('done')}/{event.get('total') or '?'}".strip()
    if kind == "stage":
        return f"stage {event.get('stage', '')}"
    if kind in ("error", "log"):
        return str(event.get("message", ""))[:60]
    if kind == "done":
        return f"done ({event.get('status', 'ok')})"
    return str(kind)


def _mtime(job_dir: Path) -> float:
    for path in (job_dir / "state.json", job_dir):
        try:
            return path.stat().st_mtime
        except OSError:
            pass
    return 0.0


def _rows(limit: int) -> list[tuple[Path, dict[str, Any]]]:
    from bitsmith.engine import jobfiles, paths

    root = paths.jobs_dir()
    if not root.is_dir():
        return []
    dirs = sorted((d for d in root.iterdir() if d.is_dir()), key=_mtime, reverse=True)
    rows = []
    for d in dirs[: limit or None]:
        state = jobfiles.read_state(d) or {"job_id": d.name, "status": "unknown"}
        if state.get("status") == "running" and not jobfiles.worker_alive(state):
            state["status"] = "died"  # the worker vanished without recording an end
        rows.append((d, state))
    return rows


def _list(args: argparse.Namespace) -> int:
    rows = _rows(args.limit)
    if args.json:
        for d, state in rows:
            print(json.dumps({**state, "job_dir": str(d)}, ensure_ascii=False))
        return 0
    if not rows:
        from bitsmith.engine import paths

        print(f"no jobs yet (they live in {paths.jobs_dir()})", file=sys.stderr)
        return 0
    table = [("JOB ID", "KIND", "STATUS", "STARTED", "LAST")]
    for d, state in rows:
        table.append((
            d.name, str(state.get("kind", "?")), str(state.get("status", "?")),
            str(state.get("started_at") or ""), _summary(state),
        ))
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
    return 0


def _show(args: argparse.Namespace) -> int:
    from bitsmith.engine import jobfiles, paths
    from bitsmith.engine.errors import BadInputError

    job_dir = paths.jobs_dir() / jobfiles.check_job_id(args.job_id)
    if not job_dir.is_dir():
        raise BadInputError(f"there is no job {args.job_id!r} in {job_dir.parent}", hint="`bitsmith jobs` lists them")
    state = jobfiles.read_state(job_dir) or {}
    print(json.dumps(state, indent=2, ensure_ascii=False))
    log = job_dir / jobfiles.LOG_FILE
    if log.is_file() and args.lines > 0:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        print(f"--- last {min(args.lines, len(lines))} lines of {log}")
        print("\n".join(lines[-args.lines:]))
    return 0


def _run(args: argparse.Namespace) -> int:
    from bitsmith.engine.errors import BadInputError
    from bitsmith.engine.progress import run_job_cli

    try:
        params = json.loads(args.params)
    except ValueError as exc:
        raise BadInputError(f"--params is not valid JSON ({exc})", hint='e.g. --params \'{"n": 10}\'') from None
    if not isinstance(params, dict):
        raise BadInputError("--params must be a JSON object", hint='e.g. --params \'{"n": 10}\'')
    return run_job_cli(args.kind, params, json_mode=args.json, job_id=args.job_id, verbose=args.verbose)
