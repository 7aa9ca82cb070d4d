"""Stage events: a stage a job starts has no parent; a part of it started by progress(stage=...) names it as its
parent, and naming the stage again means the part is over and the stage goes on (e.g. capture inside calibrate)."""

from pathlib import Path

from bitsmith.engine.jobs import JobContext


def _ctx(tmp_path: Path) -> tuple[JobContext, list[dict]]:
    events: list[dict] = []
    return JobContext(events.append, tmp_path, progress_interval_s=0.0), events


def test_parts_of_a_stage_name_it_as_their_parent(tmp_path: Path) -> None:
    ctx, events = _ctx(tmp_path)
    ctx.stage("measure")
    ctx.progress(1, 14, stage="measure-quantize")
    ctx.progress(1, 4, stage="measure-fisher")
    ctx.stage("calibrate")
    ctx.progress(1, 8, stage="capture")
    ctx.progress(8, 8, stage="capture")
    ctx.progress(0, 2, stage="calibrate")
    ctx.progress(2, 2, stage="calibrate")
    ctx.stage("evaluate", total=1)
    stages = [e for e in events if e["event"] == "stage"]
    assert stages == [
        {"event": "stage", "stage": "measure", "total": None},
        {"event": "stage", "stage": "measure-quantize", "total": 14, "parent": "measure"},
        {"event": "stage", "stage": "measure-fisher", "total": 4, "parent": "measure"},
        {"event": "stage", "stage": "calibrate", "total": None},
        {"event": "stage", "stage": "capture", "total": 8, "parent": "calibrate"},
        {"event": "stage", "stage": "calibrate", "total": 2},  # the part is over; calibrate goes on
        {"event": "stage", "stage": "evaluate", "total": 1},
    ]
    progress = [(e["stage"], e["done"], e["total"]) for e in events if e["event"] == "progress"]
    assert progress == [("measure-quantize", 1, 14), ("measure-fisher", 1, 4), ("capture", 1, 8), ("capture", 8, 8),
                        ("calibrate", 0, 2), ("calibrate", 2, 2)]


def test_a_job_that_only_reports_progress_has_top_level_stages(tmp_path: Path) -> None:
    ctx, events = _ctx(tmp_path)
    ctx.progress(1, 10, stage="download")
    ctx.progress(1, 3, stage="verify")
    assert [e for e in events if e["event"] == "stage"] == [
        {"event": "stage", "stage": "download", "total": 10}, {"event": "stage", "stage": "verify", "total": 3}]
