"""JobClient/JobHandle against real worker processes, and run_inprocess."""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import signal
import stat
import sys
import threading
from pathlib import Path

import pytest

from bitsmith.engine.jobclient import JobClient, JobHandle, run_inprocess

HERE = Path(__file__).resolve().parent
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX only")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    """Extra environment for workers: a private BITSMITH_HOME and the test-only job kinds."""
    return {
        "BITSMITH_HOME": str(home),
        "BITSMITH_EXTRA_JOB_MODULES": "jobs_for_tests",
        "PYTHONPATH": os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p),
    }


@pytest.fixture
def inprocess_env(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BITSMITH_HOME", str(home))
    monkeypatch.setenv("BITSMITH_EXTRA_JOB_MODULES", "jobs_for_tests")
    monkeypatch.syspath_prepend(str(HERE))
    return home


def until_progress(handle: JobHandle, at_least: int) -> list[dict]:
    seen = []
    for event in handle.events(timeout=20):
        seen.append(event)
        if event["event"] == "progress" and event["done"] >= at_least:
            return seen
    raise AssertionError(f"job ended before progress {at_least}: {seen}")


def test_start_streams_events_and_waits(env: dict[str, str], home: Path) -> None:
    n = random.randint(3, 7)
    with JobClient().start("count", {"n": n}, env=env) as handle:
        events = list(handle.events(timeout=20))
        assert handle.wait(20) == 0 and handle.returncode == 0
    assert events[-1] == {"event": "done", "status": "ok"} and handle.status == "ok"
    assert [e["done"] for e in events if e["event"] == "progress"][-1] == n
    assert handle.job_dir == (home / "jobs" / handle.job_id).resolve()
    assert events[0]["job_dir"] == str(handle.job_dir)
    state = json.loads((handle.job_dir / "state.json").read_text())
    assert state["status"] == "done" and state["pid"] == handle.pid
    assert list(handle.events(timeout=1)) == []  # the stream stays ended


@pytest.mark.parametrize("how", ["stdin", pytest.param("signal", marks=posix_only)])
def test_cancel_mid_job(env: dict[str, str], how: str) -> None:
    handle = JobClient().start("count", {"n": 80, "sleep_s": 0.05}, env=env)
    until_progress(handle, at_least=2)
    if how == "stdin":
        assert handle.cancel()
    else:
        assert handle.interrupt()
    rest = list(handle.events(timeout=20))
    assert handle.wait(20) == 3
    assert rest[-1]["event"] == "done" and rest[-1]["status"] == "cancelled"
    assert not any(e["event"] == "error" for e in rest)
    assert json.loads((handle.job_dir / "state.json").read_text())["status"] == "cancelled"
    handle.close()


def test_interrupt_without_a_console_falls_back_to_stdin_cancel_and_kill(env: dict[str, str], monkeypatch) -> None:
    # Windows: an app started by pythonw has no console, so CTRL_BREAK_EVENT cannot be sent (OSError)
    handle = JobClient().start("count", {"n": 500, "sleep_s": 0.05}, env=env)
    until_progress(handle, at_least=1)

    def no_console(sig: int) -> None:
        raise OSError(6, "The handle is invalid")

    monkeypatch.setattr(handle.proc, "send_signal", no_console)
    assert handle.interrupt() is False  # said, not raised: the caller's timer goes on to kill
    assert handle.cancel()
    assert list(handle.events(timeout=20))[-1]["status"] == "cancelled"
    assert handle.wait(20) == 3
    handle.close()


@posix_only
def test_sigkilled_worker_is_reported_as_worker_died(env: dict[str, str]) -> None:
    handle = JobClient().start("count", {"n": 500, "sleep_s": 0.05}, env=env)
    until_progress(handle, at_least=1)
    os.kill(handle.pid, signal.SIGKILL)
    rest = list(handle.events(timeout=20))
    assert handle.wait(20) == -signal.SIGKILL
    error, done = rest[-2], rest[-1]
    assert error["event"] == "error" and error["kind"] == "worker_died"
    assert "killed (signal 9, SIGKILL)" in error["message"]
    assert str(handle.log_path) in error["hint"]
    assert done == {"event": "done", "status": "error", "synthetic": True} and handle.status == "error"
    state = json.loads((handle.job_dir / "state.json").read_text())
    assert state["status"] == "error" and state["error"]["kind"] == "worker_died"
    assert "client: the worker process was killed" in handle.log_path.read_text()


def test_worker_exiting_without_done_is_worker_died(env: dict[str, str]) -> None:
    code = random.randint(3, 9)
    handle = JobClient().start("exit", {"code": code}, env=env)
    events = list(handle.events(timeout=20))
    assert handle.wait(20) == code
    assert events[-2]["kind"] == "worker_died" and f"exit code {code}" in events[-2]["message"]
    assert events[-1]["status"] == "error"


def test_inbox_messages_reach_the_job(env: dict[str, str]) -> None:
    words = [secrets.token_hex(2) for _ in range(3)]
    handle = JobClient().start("echo", env=env)
    for word in words:
        assert handle.send({"text": word})
    handle.send({"stop": True})
    events = list(handle.events(timeout=20))
    assert [e["text"] for e in events if e["event"] == "token"] == words
    assert events[-1]["status"] == "ok" and handle.wait(20) == 0


def test_bad_input_from_the_client(env: dict[str, str]) -> None:
    handle = JobClient().start("no-such-kind", {}, env=env)
    events = list(handle.events(timeout=20))
    assert handle.wait(20) == 2
    assert events[0]["kind"] == "bad_input" and "unknown job kind" in events[0]["message"]


@posix_only
def test_malformed_lines_are_skipped(tmp_path: Path, env: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    message = secrets.token_hex(4)
    fake = tmp_path / "fake-python"
    fake.write_text(
        "#!/bin/sh\n"
        "read request\n"
        "echo 'this is not json'\n"
        f"echo '{{\"event\": \"log\", \"level\": \"info\", \"message\": \"{message}\"}}'\n"
        "echo '[1, 2, 3]'\n"
        "echo '{\"no_event_key\": 1}'\n"
        "echo '{\"event\": \"done\", \"status\": \"ok\"}'\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    with caplog.at_level(logging.WARNING, logger="bitsmith.engine.jobclient"):
        handle = JobClient(python=str(fake)).start("count", env=env)
        events = list(handle.events(timeout=20))
        assert handle.wait(20) == 0
    assert events == [
        {"event": "log", "level": "info", "message": message},
        {"event": "done", "status": "ok"},
    ]
    assert sum("malformed" in r.message for r in caplog.records) == 3


def test_poll_events_does_not_block(env: dict[str, str]) -> None:
    handle = JobClient().start("count", {"n": 3}, env=env)
    assert handle.wait(20) == 0
    events = handle.poll_events()
    assert events[-1] == {"event": "done", "status": "ok"}
    assert handle.poll_events() == []


def test_run_inprocess_runs_the_same_job_code(inprocess_env: Path, capsys: pytest.CaptureFixture) -> None:
    events: list[dict] = []
    n = random.randint(2, 6)
    assert run_inprocess("count", {"n": n}, events.append) == 0
    assert events[-1] == {"event": "done", "status": "ok"}
    assert [e["done"] for e in events if e["event"] == "progress"][-1] == n
    job_dir = Path(events[0]["job_dir"])
    assert job_dir.parent == (inprocess_env / "jobs").resolve()
    assert json.loads((job_dir / "state.json").read_text())["status"] == "done"

    marker = secrets.token_hex(4)
    events.clear()
    assert run_inprocess("crash", {"token": marker}, events.append) == 1
    assert events[-2]["kind"] == "internal" and marker in events[-2]["message"]
    assert "Traceback" in (Path(events[0]["job_dir"]) / "job.log").read_text()
    assert "Traceback" not in capsys.readouterr().out


def test_run_inprocess_cancel_then_resume(inprocess_env: Path) -> None:
    events: list[dict] = []
    cancel = threading.Event()
    job_id = f"inproc-{secrets.token_hex(3)}"
    n = random.randint(5, 12)

    def on_event(event: dict) -> None:
        events.append(event)
        if event["event"] == "progress":
            cancel.set()

    rc = run_inprocess("count", {"n": n}, on_event, job_id=job_id, cancel_event=cancel)
    assert rc == 3 and events[-1]["status"] == "cancelled"
    stopped_at = [e["done"] for e in events if e["event"] == "progress"][-1]
    assert stopped_at < n
    events.clear()
    assert run_inprocess("count", {"n": n}, events.append, job_id=job_id) == 0
    resumed = next(e["value"] for e in events if e.get("name") == "resumed_from")
    assert resumed == stopped_at
    assert [e["done"] for e in events if e["event"] == "progress"][-1] == n
