"""Job kinds used only by the worker/client/progress tests (loaded via BITSMITH_EXTRA_JOB_MODULES)."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from bitsmith.engine.errors import BadInputError
from bitsmith.engine.jobfiles import read_json, write_json_atomic
from bitsmith.engine.jobs import JobContext, job


@job("count")
def count_job(ctx: JobContext, params: dict[str, Any]) -> None:
    """Count to n, one step per sleep_s, checkpointing after each step so a cancelled run resumes."""
    n, sleep_s = int(params.get("n", 10)), float(params.get("sleep_s", 0.0))
    honour_cancel = bool(params.get("honour_cancel", True))
    ckpt_path = ctx.job_dir / "count.ckpt.json"
    start = int((read_json(ckpt_path) or {}).get("done", 0))
    ctx.metric("torch_imported_at_start", "torch" in sys.modules)
    ctx.metric("resumed_from", start)
    ctx.stage("count", total=n, done=start)
    for i in range(start, n):
        if honour_cancel:
            ctx.check_cancel()
        time.sleep(sleep_s)
        with open(ctx.job_dir / "executed.txt", "a", encoding="utf-8") as f:
            f.write(f"{i}\n")
        write_json_atomic(ckpt_path, {"done": i + 1})
        ctx.progress(i + 1)
    ctx.metric("torch_imported", "torch" in sys.modules)
    ctx.artifact("count", ckpt_path)


@job("crash")
def crash_job(ctx: JobContext, params: dict[str, Any]) -> None:
    """Emit one event, then fail with an unexpected exception deep in a helper."""
    ctx.log("about to crash")
    _deeply_nested_helper_that_fails(str(params.get("token", "boom")))


def _deeply_nested_helper_that_fails(token: str) -> None:
    raise RuntimeError(f"crashed on purpose: {token}")


@job("bad")
def bad_job(ctx: JobContext, params: dict[str, Any]) -> None:
    """Reject its params the way a real job rejects bad input."""
    raise BadInputError(f"steps must be a positive integer, got {params.get('steps')!r}",
                        hint="pass params like {\"steps\": 10}")


@job("noisy")
def noisy_job(ctx: JobContext, params: dict[str, Any]) -> None:
    """Write stray text to stdout/stderr at the Python and OS level, as chatty libraries do."""
    marker = str(params.get("marker", "stray"))
    print(f"python print {marker}")
    sys.stderr.write(f"python stderr {marker}\n")
    os.write(1, f"fd1 write {marker}\n".encode())
    os.write(2, f"fd2 write {marker}\n".encode())
    ctx.log("still talking the protocol")


@job("exit")
def exit_job(ctx: JobContext, params: dict[str, Any]) -> None:
    """Kill the worker process from inside without any final event (like a segfault would)."""
    ctx.log("exiting hard")
    sys.stdout.flush()
    os._exit(int(params.get("code", 5)))


@job("echo")
def echo_job(ctx: JobContext, params: dict[str, Any]) -> None:
    """Answer each inbox message with a token until a message says stop (a chat session's shape)."""
    while True:
        ctx.check_cancel()
        msg = ctx.inbox.get(timeout=10)
        if msg.get("stop"):
            return
        ctx.token(str(msg.get("text", "")))
