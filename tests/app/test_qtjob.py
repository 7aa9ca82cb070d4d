"""QtJob and the services against real worker processes: events as signals, cancel, a worker that dies."""

from pathlib import Path

import pytest

from bitsmith.app.qtjob import QtJob
from bitsmith.app.services import HardwareMonitor, JobManager, Services, Settings

HERE = Path(__file__).resolve().parent
SLEEP_ENV = {"PYTHONPATH": str(HERE), "BITSMITH_EXTRA_JOB_MODULES": "app_test_jobs"}


def _collect(job: QtJob) -> list[dict]:
    seen: list[dict] = []
    job.event.connect(seen.append)
    return seen


def test_the_hardware_job_runs_in_a_worker_and_reports_a_profile(qtbot, home: Path) -> None:
    job = QtJob("hardware", {})
    seen = _collect(job)
    with qtbot.waitSignal(job.finished, timeout=60_000) as done:
        job.start()
    assert done.args[0]["status"] == "ok" and job.status == "ok" and not job.running
    [artifact] = [e for e in seen if e["event"] == "artifact"]
    profile = artifact["profile"]
    assert profile["ram_total_bytes"] > 0 and profile["cpu"]["logical_cores"] >= 1
    assert (home / "jobs" / job.job_id / "hardware.json").is_file()  # the job ran under BITSMITH_HOME
    qtbot.waitUntil(lambda: job.handle.returncode == 0, timeout=10_000)


def test_cancel_stops_a_running_job_cleanly(qtbot, home: Path) -> None:
    job = QtJob("app-test-sleep", {"seconds": 60}, env=SLEEP_ENV)
    seen = _collect(job)
    job.start()
    qtbot.waitUntil(lambda: any(e["event"] == "progress" for e in seen), timeout=60_000)
    assert job.running
    with qtbot.waitSignal(job.finished, timeout=30_000) as done:
        job.cancel()
    assert done.args[0]["status"] == "cancelled"


def test_a_worker_that_dies_ends_with_a_plain_error(qtbot, home: Path) -> None:
    job = QtJob("app-test-sleep", {"seconds": 60}, env=SLEEP_ENV)
    seen = _collect(job)
    job.start()
    qtbot.waitUntil(lambda: any(e["event"] == "progress" for e in seen), timeout=60_000)
    with qtbot.waitSignal(job.finished, timeout=30_000) as done:
        job.kill()
    assert done.args[0]["status"] == "error" and done.args[0]["synthetic"] is True
    [error] = job.errors
    assert error["kind"] == "worker_died" and "killed" in error["message"] and "log" in error["hint"]


def test_an_unknown_kind_is_an_error_event_not_an_exception(qtbot, home: Path) -> None:
    job = QtJob("no-such-kind", {})
    with qtbot.waitSignal(job.finished, timeout=60_000) as done:
        job.start()
    assert done.args[0]["status"] == "error"
    assert job.errors[0]["kind"] == "bad_input" and "unknown job kind" in job.errors[0]["message"]


def test_a_worker_that_cannot_launch_reports_through_the_signals(qtbot, home: Path, tmp_path: Path) -> None:
    from bitsmith.engine.jobclient import JobClient

    job = QtJob("hardware", {}, client=JobClient(python=str(tmp_path / "no-python")))
    with qtbot.waitSignal(job.finished, timeout=10_000) as done:
        job.start()
    assert done.args[0]["status"] == "error" and "could not start a worker" in job.errors[0]["message"]


def test_the_job_manager_counts_running_jobs(qtbot, home: Path) -> None:
    jobs = JobManager(SLEEP_ENV)
    counts: list[int] = []
    jobs.jobs_changed.connect(counts.append)
    a = jobs.start("app-test-sleep", {"seconds": 60})
    jobs.start("hardware", {}, track=False)
    assert jobs.running_count() == 1
    with qtbot.waitSignal(a.finished, timeout=60_000):
        a.cancel()
    assert counts == [1, 0] and jobs.running_count() == 0
    jobs.shutdown()


def test_the_hardware_monitor_emits_the_profile_and_ram(qtbot, home: Path) -> None:
    monitor = HardwareMonitor(JobManager())
    rams: list[tuple] = []
    monitor.ram_changed.connect(lambda a, t: rams.append((a, t)))
    with qtbot.waitSignal(monitor.profile_changed, timeout=60_000) as got:
        monitor.start()
    assert got.args[0]["cpu"]["arch"] and monitor.profile == got.args[0]
    assert rams and 0 < rams[0][0] <= rams[0][1]  # (byte counts above 2**31 pass through the signal intact)
    monitor.stop()


def test_settings_are_saved_atomically_and_survive_a_restart(home: Path) -> None:
    s = Settings()
    assert s.path == home.resolve() / "settings.json"
    s.set("chat/n_ctx", 2048)
    s.set("window/page", "chat")
    s.set("window/page", None)
    assert Settings().all() == {"chat/n_ctx": 2048}
    with pytest.raises(TypeError):
        s.set("bad", object())
    assert Services().settings.get("chat/n_ctx") == 2048
