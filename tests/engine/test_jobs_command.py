"""`bitsmith jobs`: run a job, list job folders, show one; stale 'running' states show as died."""

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

from bitsmith.engine.cli import main
from bitsmith.engine.jobfiles import write_json_atomic

HERE = Path(__file__).resolve().parent


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BITSMITH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BITSMITH_EXTRA_JOB_MODULES", "jobs_for_tests")
    monkeypatch.syspath_prepend(str(HERE))
    return tmp_path / "home"


def test_run_list_show(home: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["jobs"]) == 0
    assert "no jobs yet" in capsys.readouterr().err

    ids = [f"cmd-{i}-{secrets.token_hex(2)}" for i in range(2)]
    n = random.randint(2, 5)
    assert main(["jobs", "run", "count", "--params", json.dumps({"n": n}), "--job-id", ids[0]]) == 0
    assert main(["jobs", "run", "crash", "--job-id", ids[1], "--json"]) == 1
    capsys.readouterr()

    # a state left "running" by a worker that no longer exists
    ghost = home / "jobs" / "ghost-job"
    write_json_atomic(ghost / "state.json", {"job_id": "ghost-job", "kind": "count", "status": "running",
                                             "pid": 2**22 + random.randint(1, 1000), "pid_create_time": 1.0})

    assert main(["jobs", "list", "--json"]) == 0
    states = {s["job_id"]: s for s in map(json.loads, capsys.readouterr().out.splitlines())}
    assert states[ids[0]]["status"] == "done" and states[ids[1]]["status"] == "error"
    assert states["ghost-job"]["status"] == "died"

    assert main(["jobs"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("JOB ID") and ids[0] in table
    assert "internal: RuntimeError: crashed on purpose" in table

    assert main(["jobs", "show", ids[1], "--lines", "100"]) == 0
    shown = capsys.readouterr().out
    assert '"status": "error"' in shown and "Traceback" in shown


def test_bad_arguments_are_clear(home: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["jobs", "run", "count", "--params", "{oops"]) == 2
    assert "--params is not valid JSON" in capsys.readouterr().err
    assert main(["jobs", "show", "no-such-job"]) == 2
    assert "there is no job" in capsys.readouterr().err
    assert main(["jobs", "run", "no-such-kind"]) == 2
    assert "unknown job kind" in capsys.readouterr().err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_in_the_cli_cancels_then_forces(tmp_path: Path) -> None:
    env = dict(os.environ, BITSMITH_HOME=str(tmp_path / "home"), BITSMITH_EXTRA_JOB_MODULES="jobs_for_tests",
               PYTHONPATH=os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p))
    results = {}
    for honour in (True, False):
        params = json.dumps({"n": 400, "sleep_s": 0.05, "honour_cancel": honour})
        proc = subprocess.Popen(
            [sys.executable, "-m", "bitsmith.engine", "jobs", "run", "count", "--params", params, "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
        )
        while '"progress"' not in proc.stdout.readline():
            pass
        proc.send_signal(signal.SIGINT)
        if not honour:
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        results[honour] = (proc.returncode, out.splitlines()[-1] if out.strip() else "", err)
    rc, last, err = results[True]
    assert rc == 3 and json.loads(last)["status"] == "cancelled", err
    rc, last, err = results[False]
    assert rc == 130 and "interrupted" in err
    assert json.loads(last) == {"event": "done", "status": "cancelled", "forced": True}
