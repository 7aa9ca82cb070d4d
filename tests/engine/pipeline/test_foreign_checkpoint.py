"""A calibration checkpoint left by another run: the quantize job stops with the `foreign_checkpoint` error kind and
the checkpoint folder in the error event (so the app can offer to start over), and deletes nothing itself."""

import json
import os
from pathlib import Path

import pytest

from bitsmith.engine.errors import BadInputError, ForeignCheckpointError
from bitsmith.engine.jobclient import JobClient


def test_read_progress_names_the_folder_of_another_runs_checkpoint(tmp_path: Path) -> None:
    from bitsmith.engine.calibrate import checkpoint as ckpt

    ckpt.write_progress(tmp_path, {"version": ckpt.VERSION, "fingerprint": "a" * 32, "blocks_done": 2, "reports": []})
    assert ckpt.read_progress(tmp_path, "a" * 32)["blocks_done"] == 2
    with pytest.raises(ForeignCheckpointError, match="different run") as info:
        ckpt.read_progress(tmp_path, "b" * 32)
    assert isinstance(info.value, BadInputError) and info.value.kind == "foreign_checkpoint"
    assert info.value.details() == {"folder": str(tmp_path)} and "start over" in info.value.hint


def test_a_quantize_job_on_another_runs_checkpoint_emits_foreign_checkpoint(tiny_model_dir: Path,
                                                                             tmp_path: Path) -> None:
    out = tmp_path / "q"
    folder = tmp_path / ".q.partial" / "calibrate"
    folder.mkdir(parents=True)
    progress = {"version": 1, "fingerprint": "0" * 32, "blocks_done": 1, "reports": [{"index": 0}]}
    (folder / "progress.json").write_text(json.dumps(progress))
    (folder / "block_0000.safetensors").write_bytes(b"another run's block")
    params = {"source": str(tiny_model_dir), "bpw": 3.0, "out": str(out), "preset": "demo"}
    handle = JobClient().start("quantize", params, env={**os.environ, "BITSMITH_HOME": str(tmp_path)})
    events = list(handle.events(timeout=600))
    assert handle.wait(60) == 2, events[-3:]  # bad input, like any other BadInputError
    [error] = [e for e in events if e["event"] == "error"]
    assert error["kind"] == "foreign_checkpoint" and Path(error["folder"]) == folder.resolve()
    assert "belongs to a different run" in error["message"] and "delete this one to start over" in error["hint"]
    assert events[-1]["event"] == "done" and events[-1]["status"] == "error"
    # The engine leaves the other run's checkpoint alone; deleting it is the user's call.
    assert json.loads((folder / "progress.json").read_text()) == progress
    assert (folder / "block_0000.safetensors").read_bytes() == b"another run's block" and not out.exists()
    # Stages started by the job have no parent; the measurement's parts name it as theirs.
    stages = [e for e in events if e["event"] == "stage"]
    assert [s["stage"] for s in stages if "parent" not in s] == ["load", "evaluate-fp", "measure", "search",
                                                                   "calibrate"]
    parts = [s for s in stages if "parent" in s]
    assert parts and all(s["parent"] == "measure" and s["stage"].startswith("measure-") for s in parts)
