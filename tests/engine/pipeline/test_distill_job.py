"""`quantize --distill-epochs N`: the teacher is taken before calibration and kept for a resumed run, the
distillation runs after calibration, its report is in the recipe, and the saved folder reloads bit for bit."""

import json
import os
from pathlib import Path

import pytest

from bitsmith.engine.jobclient import JobClient


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "BITSMITH_HOME": str(home), "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
def test_distillation_job_cancel_resume_and_report(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "q"
    params = {"source": str(tiny_model_dir), "bpw": 3.0, "out": str(out), "preset": "demo", "distill_epochs": 1}
    first = JobClient().start("quantize", params, env=_env(tmp_path))
    stages, cancelled = [], False
    for event in first.events():
        if event["event"] == "stage":
            stages.append(event["stage"])
        if event["event"] == "progress" and event["stage"].startswith("calib") and event["done"] >= 1:
            first.cancel()
            cancelled = True
    assert cancelled and first.wait(60) == 3
    assert stages.index("search") < stages.index("teacher") < stages.index("calibrate")
    assert (tmp_path / ".q.partial" / "teacher.safetensors").is_file()

    resumed = JobClient().start("quantize", params, env=_env(tmp_path))
    events = list(resumed.events())
    assert resumed.wait(120) == 0, events[-3:]
    stages = [e["stage"] for e in events if e["event"] == "stage"]
    assert "teacher" not in stages  # the saved teacher was used: the model was no longer full precision
    assert any("teacher distribution saved" in e.get("message", "") for e in events if e["event"] == "log")
    assert stages.index("calibrate") < stages.index("distill") < stages.index("evaluate")
    meta = json.loads((out / "bitsmith.json").read_text())
    report = meta["recipe"]["calibration"]["distill"]
    assert meta["recipe"]["preset"]["distill_epochs"] == 1
    assert report["epochs"] == 1 and report["steps"] >= 1 and isinstance(report["kept"], bool)
    if report["kept"]:
        assert report["val_after"] < report["val_before"]
    assert meta["bpw"]["quantized_linears"] <= 3.0
    result = next(e for e in events if e["event"] == "result")
    ev = JobClient().start("eval", {"model": str(out), "max_tokens": meta["metrics"]["eval_tokens"]},
                           env=_env(tmp_path))
    last = [e for e in ev.events() if e["event"] == "result"]
    assert ev.wait(120) == 0
    assert last and last[-1]["ppl"] == meta["metrics"]["heldout_ppl"] == pytest.approx(result["ppl"])


def test_a_bad_distillation_setting_is_a_clear_error(tmp_path: Path) -> None:
    params = {"source": "nowhere", "bpw": 3.0, "out": str(tmp_path / "q"), "distill_epochs": "many"}
    handle = JobClient().start("quantize", params, env=_env(tmp_path))
    errors = [e for e in handle.events() if e["event"] == "error"]
    assert handle.wait(60) != 0
    assert errors and "distill_epochs" in errors[0]["message"]
