"""The job worker as a real process: protocol stream, job folder, errors, cancel/resume, signals."""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bitsmith.engine import jobs
from bitsmith.engine.errors import BadInputError, CancelledError
from bitsmith.engine.jobs import JobContext, JobLoadError

HERE = Path(__file__).resolve().parent
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    """Environment for a worker that can run the test-only job kinds and writes under tmp_path."""
    full = dict(os.environ)
    full["BITSMITH_HOME"] = str(home)
    full["BITSMITH_EXTRA_JOB_MODULES"] = "jobs_for_tests"
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    return full


def start(env: dict[str, str], request: dict | str | None, *args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bitsmith.engine.worker", *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    if request is not None:
        line = request if isinstance(request, str) else json.dumps(request)
        proc.stdin.write(line.encode() + b"\n")
        proc.stdin.flush()
    return proc


def next_event(proc: subprocess.Popen[bytes]) -> dict | None:
    """The next event; every stdout line must be one JSON object (nothing else may reach stdout)."""
    line = proc.stdout.readline()
    if not line:
        return None
    event = json.loads(line)
    assert isinstance(event, dict) and isinstance(event.get("event"), str), line
    return event


def finish(proc: subprocess.Popen[bytes], timeout: float = 20) -> tuple[list[dict], int, str]:
    """Read the remaining events; return them with the exit code and stderr."""
    events = []
    while (event := next_event(proc)) is not None:
        events.append(event)
    rc = proc.wait(timeout=timeout)
    return events, rc, proc.stderr.read().decode()


def read_until_progress(proc: subprocess.Popen[bytes], at_least: int) -> list[dict]:
    seen = []
    while True:
        event = next_event(proc)
        assert event is not None, f"worker ended early: {seen}"
        seen.append(event)
        if event["event"] == "progress" and event["done"] >= at_least:
            return seen


def job_dir_of(events: list[dict]) -> Path:
    first = events[0]
    assert first["event"] == "log" and first["level"] == "debug"
    return Path(first["job_dir"])


def state_of(job_dir: Path) -> dict:
    return json.loads((job_dir / "state.json").read_text())


def test_count_job_streams_ordered_events_and_keeps_a_job_folder(env: dict[str, str], home: Path) -> None:
    n = random.randint(5, 9)
    params = {"n": n, "sleep_s": 0.03}
    events, rc, stderr = finish(start(env, {"kind": "count", "params": params}))
    assert rc == 0, stderr
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "done" and events[-1]["status"] == "ok"
    assert kinds.count("done") == 1 and "error" not in kinds
    assert kinds.index("stage") < kinds.index("progress") < kinds.index("artifact") < kinds.index("done")
    stage = events[kinds.index("stage")]
    assert stage == {"event": "stage", "stage": "count", "total": n}
    progress = [e for e in events if e["event"] == "progress"]
    dones = [e["done"] for e in progress]
    assert dones == sorted(set(dones)) and dones[-1] == n
    assert all(e["total"] == n and e["stage"] == "count" for e in progress)
    assert all(e["eta_s"] is None or e["eta_s"] >= 0 for e in progress)
    assert progress[-1]["eta_s"] == 0.0
    metrics = {e["name"]: e["value"] for e in events if e["event"] == "metric"}
    # start-up stays light: a job that needs no torch never has it imported
    assert metrics["torch_imported_at_start"] is False and metrics["torch_imported"] is False

    job_dir = job_dir_of(events)
    assert job_dir.parent == (home / "jobs").resolve()
    request = json.loads((job_dir / "request.json").read_text())
    assert request == {"kind": "count", "params": params, "job_id": job_dir.name}
    state = state_of(job_dir)
    assert state["status"] == "done" and state["exit_code"] == 0 and state["kind"] == "count"
    assert state["last_event"] == events[-1] and state["finished_at"] and isinstance(state["pid"], int)
    log = (job_dir / "job.log").read_text()
    for event in events:
        assert json.dumps(event, ensure_ascii=False) in log


def test_request_can_come_from_a_file(env: dict[str, str], tmp_path: Path) -> None:
    req = tmp_path / "req.json"
    job_id = f"from-file-{secrets.token_hex(3)}"
    req.write_text(json.dumps({"kind": "count", "params": {"n": 2}, "job_id": job_id}))
    proc = subprocess.run(
        [sys.executable, "-m", "bitsmith.engine.worker", str(req)],
        stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=30,
    )
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0, proc.stderr
    assert events[-1] == {"event": "done", "status": "ok"}
    assert job_dir_of(events).name == job_id


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("", "empty"),
        ('["count"]', "must be a JSON object"),
        ('{"params": {}}', 'no "kind"'),
        ('{"kind": "no-such-kind-%s"}', "unknown job kind"),
        ('{"kind": "count", "params": [1, 2]}', '"params" must be a JSON object'),
        ('{"kind": "count", "job_id": "../escape"}', "not a valid job id"),
    ],
)
def test_invalid_requests_give_bad_input(env: dict[str, str], home: Path, line: str, expected: str) -> None:
    if "%s" in line:
        line = line % secrets.token_hex(3)
    events, rc, stderr = finish(start(env, line))
    assert rc == 2, stderr
    assert [e["event"] for e in events] == ["error", "done"]
    error = events[0]
    assert error["kind"] == "bad_input" and expected in error["message"] and error["hint"]
    assert events[1]["status"] == "error"
    if expected == "unknown job kind":
        assert "count" in error["hint"] and "selftest" in error["hint"]
    assert not (home / "jobs").exists() or not any((home / "jobs").iterdir())


def test_job_rejecting_its_params_is_bad_input(env: dict[str, str]) -> None:
    events, rc, _ = finish(start(env, {"kind": "bad", "params": {"steps": -3}}))
    assert rc == 2
    error = next(e for e in events if e["event"] == "error")
    assert error["kind"] == "bad_input" and "-3" in error["message"] and "steps" in error["hint"]
    state = state_of(job_dir_of(events))
    assert state["status"] == "error" and state["error"]["kind"] == "bad_input" and state["exit_code"] == 2


def test_crash_is_an_error_event_with_traceback_only_in_the_log(env: dict[str, str]) -> None:
    token = secrets.token_hex(4)
    proc = start(env, {"kind": "crash", "params": {"token": token}})
    events, rc, stderr = finish(proc)
    assert rc == 1
    assert [e["event"] for e in events][-3:] == ["log", "error", "done"]
    error = events[-2]
    assert error["kind"] == "internal"
    assert "RuntimeError" in error["message"] and token in error["message"]
    job_dir = job_dir_of(events)
    assert str(job_dir / "job.log") in error["hint"]
    stream = json.dumps(events)
    assert "Traceback" not in stream and "_deeply_nested_helper_that_fails" not in stream
    assert "Traceback" not in stderr
    log = (job_dir / "job.log").read_text()
    assert "Traceback (most recent call last)" in log and "_deeply_nested_helper_that_fails" in log
    state = state_of(job_dir)
    assert state["status"] == "error" and state["error"]["kind"] == "internal" and state["exit_code"] == 1


def test_stray_output_goes_to_the_log_not_the_protocol(env: dict[str, str]) -> None:
    marker = secrets.token_hex(4)
    events, rc, stderr = finish(start(env, {"kind": "noisy", "params": {"marker": marker}}))
    assert rc == 0, stderr
    assert events[-1] == {"event": "done", "status": "ok"}
    assert marker not in json.dumps(events) and marker not in stderr
    log = (job_dir_of(events) / "job.log").read_text()
    for what in ("python print", "python stderr", "fd1 write", "fd2 write"):
        assert f"{what} {marker}" in log


@pytest.mark.parametrize("how", ["stdin", pytest.param("sigint", marks=posix_only)])
def test_cancel_mid_job_then_resume_from_checkpoint(env: dict[str, str], how: str) -> None:
    n, job_id = 60, f"resume-{how}-{secrets.token_hex(3)}"
    proc = start(env, {"kind": "count", "params": {"n": n, "sleep_s": 0.05}, "job_id": job_id})
    before = read_until_progress(proc, at_least=random.randint(2, 4))
    if how == "stdin":
        proc.stdin.write(b'{"cancel": true}\n')
        proc.stdin.flush()
    else:
        proc.send_signal(signal.SIGINT)
    after, rc, stderr = finish(proc)
    assert rc == 3, stderr
    done = after[-1]
    assert done["event"] == "done" and done["status"] == "cancelled" and done["hint"]
    assert all(e["event"] != "error" for e in before + after)
    job_dir = job_dir_of(before)
    state = state_of(job_dir)
    assert state["status"] == "cancelled" and state["exit_code"] == 3
    stopped_at = json.loads((job_dir / "count.ckpt.json").read_text())["done"]
    assert 2 <= stopped_at < n

    events, rc, stderr = finish(start(env, {"kind": "count", "params": {"n": n}, "job_id": job_id}))
    assert rc == 0, stderr
    metrics = {e["name"]: e["value"] for e in events if e["event"] == "metric"}
    assert metrics["resumed_from"] == stopped_at
    progress = [e["done"] for e in events if e["event"] == "progress"]
    assert progress[0] > stopped_at and progress[-1] == n
    executed = [int(x) for x in (job_dir / "executed.txt").read_text().split()]
    assert executed == list(range(n))  # every step ran exactly once across the two runs
    state = state_of(job_dir)
    assert state["status"] == "done" and state["runs"] == 2


@posix_only
def test_second_sigint_forces_exit(env: dict[str, str]) -> None:
    proc = start(env, {"kind": "count", "params": {"n": 400, "sleep_s": 0.05, "honour_cancel": False}})
    seen = read_until_progress(proc, at_least=2)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert proc.poll() is None  # the job ignores cancel, so the first signal alone does not stop it
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    events, rc, _ = finish(proc)
    assert rc == 130 and time.monotonic() - t0 < 5
    assert events and events[-1] == {"event": "done", "status": "cancelled", "forced": True}
    state = state_of(job_dir_of(seen))
    assert state["status"] == "cancelled" and state.get("forced") is True


def test_same_job_id_cannot_run_twice_at_once(env: dict[str, str]) -> None:
    job_id = f"busy-{secrets.token_hex(3)}"
    first = start(env, {"kind": "count", "params": {"n": 100, "sleep_s": 0.05}, "job_id": job_id})
    read_until_progress(first, at_least=1)
    events, rc, _ = finish(start(env, {"kind": "count", "params": {"n": 1}, "job_id": job_id}))
    assert rc == 2 and events[0]["kind"] == "bad_input" and "already running" in events[0]["message"]
    first.stdin.write(b'{"cancel": true}\n')
    first.stdin.flush()
    _, rc, _ = finish(first)
    assert rc == 3


def test_worker_stops_when_nobody_reads_its_events(env: dict[str, str]) -> None:
    job_id = f"orphan-{secrets.token_hex(3)}"
    proc = start(env, {"kind": "count", "params": {"n": 400, "sleep_s": 0.05}, "job_id": job_id})
    seen = read_until_progress(proc, at_least=1)
    proc.stdout.close()  # the parent "dies": the next event hits a broken pipe
    assert proc.wait(timeout=20) == 3
    state = state_of(job_dir_of(seen))
    assert state["status"] == "cancelled"
    assert "listener went away" in (job_dir_of(seen) / "job.log").read_text()


def test_unwritable_home_is_reported(env: dict[str, str], tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    env = dict(env, BITSMITH_HOME=str(blocker))
    events, rc, stderr = finish(start(env, {"kind": "count", "params": {"n": 1}}))
    assert rc == 1, stderr
    assert events[0]["event"] == "error" and "cannot create the job folder" in events[0]["message"]
    assert "BITSMITH_HOME" in events[0]["hint"] and events[-1]["status"] == "error"


# ---- JobContext and the registry, in-process ----------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_progress_eta_comes_from_the_observed_rate(tmp_path: Path) -> None:
    events: list[dict] = []
    clock = FakeClock()
    ctx = JobContext(events.append, tmp_path, clock=clock, progress_interval_s=0.0)
    total, resumed = random.randint(20, 50), random.randint(0, 5)
    step_s = random.uniform(0.5, 3.0)
    ctx.stage("calibrate", total=total, done=resumed)
    for done in range(resumed + 1, total + 1):
        clock.t += step_s
        ctx.progress(done)
    progress = [e for e in events if e["event"] == "progress"]
    assert len(progress) == total - resumed
    for e in progress:
        assert e["eta_s"] == pytest.approx(round((total - e["done"]) * step_s, 1), abs=0.11)
    assert progress[-1]["eta_s"] == 0.0


def test_progress_is_throttled_but_keeps_the_last_update(tmp_path: Path) -> None:
    events: list[dict] = []
    clock = FakeClock()
    ctx = JobContext(events.append, tmp_path, clock=clock, progress_interval_s=1.0)
    ctx.stage("s", total=10)
    for done in range(1, 11):
        clock.t += 0.3
        ctx.progress(done)
    dones = [e["done"] for e in events if e["event"] == "progress"]
    assert dones[0] == 1 and dones[-1] == 10 and len(dones) < 10
    assert dones == sorted(dones)


def test_check_cancel_and_value_conversion(tmp_path: Path) -> None:
    events: list[dict] = []
    ctx = JobContext(events.append, tmp_path)
    ctx.check_cancel()  # nothing requested: no-op
    assert not ctx.cancelled
    ctx.request_cancel()
    assert ctx.cancelled
    with pytest.raises(CancelledError) as info:
        ctx.check_cancel()
    assert info.value.hint

    class Scalar:  # stands in for a numpy/torch scalar
        def __init__(self, v: float) -> None:
            self.v = v

        def item(self) -> float:
            return self.v

    value = random.random()
    ctx.metric("loss", Scalar(value), split=tmp_path)
    ctx.log("hello", level="shouting")
    assert events[0] == {"event": "metric", "name": "loss", "value": value, "split": str(tmp_path)}
    assert events[1] == {"event": "log", "level": "info", "message": "hello"}
    json.dumps(events)


def test_registry_unknown_kind_duplicates_and_broken_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    kind = f"test-kind-{secrets.token_hex(3)}"

    @jobs.job(kind)
    def first(ctx: JobContext, params: dict) -> None:
        pass

    assert jobs.resolve(kind) is first
    assert kind in jobs.known_kinds()
    with pytest.raises(ValueError, match="already registered"):

        @jobs.job(kind)
        def second(ctx: JobContext, params: dict) -> None:
            pass

    monkeypatch.delenv(jobs.EXTRA_MODULES_ENV, raising=False)
    with pytest.raises(BadInputError) as info:
        jobs.resolve("definitely-not-a-kind")
    assert "selftest" in info.value.hint and "hardware" in info.value.hint
    monkeypatch.setenv(jobs.EXTRA_MODULES_ENV, "no_such_module_" + secrets.token_hex(3))
    with pytest.raises(JobLoadError, match="could not load"):
        jobs.resolve("definitely-not-a-kind")


@pytest.mark.slow
def test_selftest_job_runs_a_real_matmul(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bitsmith.engine.jobclient import run_inprocess

    monkeypatch.setenv("BITSMITH_HOME", str(tmp_path))
    events: list[dict] = []
    rc = run_inprocess("selftest", {"seed": random.randint(0, 1000)}, events.append)
    assert rc == 0, events
    logs = " ".join(e["message"] for e in events if e["event"] == "log")
    assert "torch " in logs and "python " in logs
    errs = [e for e in events if e["event"] == "metric" and e["name"] == "matmul_max_abs_err"]
    assert errs and all(0 <= e["value"] < 1e-3 for e in errs)
    assert events[-1] == {"event": "done", "status": "ok"}


def test_hardware_job_saves_the_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hardware = pytest.importorskip("bitsmith.engine.hardware")
    from bitsmith.engine.jobclient import run_inprocess

    monkeypatch.setenv("BITSMITH_HOME", str(tmp_path))
    events: list[dict] = []
    rc = run_inprocess("hardware", {}, events.append)
    assert rc == 0, events
    artifact = next(e for e in events if e["event"] == "artifact")
    saved = json.loads(Path(artifact["path"]).read_text())
    assert saved == artifact["profile"]
    assert set(saved) == set(hardware.detect().to_dict())
