"""The Quantize wizard's advanced options (layout search, loading) as quantize request keys, kept through a resume
after a restart; the run step's stage rows under the engine's real stage sequence (parts of a stage, e.g. capture
inside calibrate, do not end it); and a calibration checkpoint of another run: Start over / Choose another folder.

The request the page sends is captured at the JobClient boundary (FakeClient below): the wizard, JobManager and
QtJob run as in the app, and the events a test feeds reach the page through QtJob's polling, as a worker's would.
"""

import argparse
import json
import os
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QMessageBox

from bitsmith.app.pages.quantize import checkpoint_folder, delete_checkpoint, partial_folder
from bitsmith.app.pages.quantize_options import LOADINGS, MODES


class FakeHandle:
    """What QtJob polls: the events a test feeds, as a worker would send them."""

    def __init__(self, job_id: str) -> None:
        self.job_id, self.returncode, self.queue = job_id, None, []

    def feed(self, *events: dict) -> None:
        self.queue.extend(json.loads(json.dumps(events)))
        if any(e["event"] == "done" for e in events):
            self.returncode = 0

    def poll_events(self) -> list[dict]:
        out, self.queue = self.queue, []
        return out

    def cancel(self) -> bool:
        self.feed({"event": "done", "status": "cancelled"})
        return True

    def interrupt(self) -> bool:
        return True

    def kill(self) -> None:
        self.feed({"event": "done", "status": "error"})

    def send(self, message: dict) -> bool:
        return False

    def close(self, grace_s: float = 5.0) -> None:
        pass


class FakeClient:
    """Records each quantize request (as JSON carries it to the worker) and hands back a FakeHandle; other jobs
    (the hardware probe) run in real workers."""

    def __init__(self) -> None:
        from bitsmith.engine.jobclient import JobClient

        self.requests: list[dict] = []
        self.handles: list[FakeHandle] = []
        self.real = JobClient()

    def start(self, kind: str, params: dict, *, job_id: str | None = None, env: dict | None = None) -> FakeHandle:
        if kind != "quantize":
            return self.real.start(kind, params, job_id=job_id, env=env)
        self.requests.append({"kind": kind, "params": json.loads(json.dumps(params)), "job_id": job_id})
        self.handles.append(FakeHandle(job_id or f"fake-{len(self.requests)}"))
        return self.handles[-1]


@pytest.fixture
def page(qtbot, open_window, home: Path, bundled_gguf):  # noqa: ANN001, ANN201
    window = open_window("quantize")
    page = window.pages["quantize"]
    page.services.jobs.client = FakeClient()
    return page


def _to_budget(qtbot, page) -> None:  # noqa: ANN001
    assert page.step() == 0 and page.bundled_radio.isChecked()
    qtbot.mouseClick(page.next_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.step() == 1, timeout=60_000)
    qtbot.mouseClick(page.next_button, Qt.MouseButton.LeftButton)
    assert page.step() == 2


def _start(qtbot, page) -> dict:  # noqa: ANN001
    """Press Start quantizing; the request the page sent."""
    client = page.services.jobs.client
    n = len(client.requests)
    qtbot.mouseClick(page.next_button, Qt.MouseButton.LeftButton)
    assert page.step() == 3 and len(client.requests) == n + 1 and client.requests[-1]["kind"] == "quantize"
    return client.requests[-1]


def _feed(qtbot, page, *events: dict) -> None:  # noqa: ANN001
    """Events from the running job's worker, delivered through QtJob's polling."""
    handle = page.job.handle
    handle.feed(*events)
    qtbot.waitUntil(lambda: not handle.queue, timeout=5000)


def _stop(qtbot, page) -> None:  # noqa: ANN001
    _feed(qtbot, page, {"event": "done", "status": "cancelled"})
    assert not page.job.running


def _key(qtbot, key: Qt.Key, modifier: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier) -> None:  # noqa: ANN001
    qtbot.keyClick(QApplication.focusWidget(), key, modifier)


def _cli_defaults() -> dict:
    """What `bitsmith quantize` sends for --mode and --stream when they are not given."""
    from bitsmith.engine.commands import quantize

    parser = argparse.ArgumentParser()
    quantize.register(parser.add_subparsers())
    args = parser.parse_args(["quantize", "bundled", "--bpw", "3", "--out", "x"])
    return {"mode": args.mode, "stream": args.stream}


# -- advanced options -------------------------------------------------------------------------------------------------

def test_the_defaults_send_what_the_engine_does_by_default(qtbot, page) -> None:  # noqa: ANN001
    from bitsmith.engine.quant.mix import MODES as ENGINE_MODES

    _to_budget(qtbot, page)
    advanced = page.advanced
    assert not advanced.panel.isVisible() and advanced.toggle.text() == "Advanced"
    request = _start(qtbot, page)
    params = request["params"]
    assert {k: params[k] for k in ("mode", "stream")} == _cli_defaults() == {"mode": "layer-mix", "stream": None}
    assert params["mode"] == ENGINE_MODES[0]  # run_quantize's default when the key is missing
    assert set(params) == {"source", "bpw", "out", "preset", "mode", "stream"} and params["source"] == "bundled"


def test_each_choice_puts_the_engines_keys_in_the_request_chosen_by_keyboard(qtbot, page) -> None:  # noqa: ANN001
    _to_budget(qtbot, page)
    advanced = page.advanced
    assert [advanced.mode_combo.itemText(i) for i in range(2)] == ["Per layer (layer-mix)",
                                                                    "Per channel group (channel-mix)"]
    assert [advanced.loading_combo.itemText(i) for i in range(3)] == [
        "Automatic", "Whole model in memory", "Block by block (streamed, less RAM)"]
    tips = [c.itemData(i, Qt.ItemDataRole.ToolTipRole) for c in (advanced.mode_combo, advanced.loading_combo)
            for i in range(c.count())]
    assert len(set(tips)) == 5 and all(t and "\n" not in t for t in tips)  # one line each, on what it trades
    assert (advanced.mode_combo.accessibleName(), advanced.loading_combo.accessibleName()) == ("Layout search",
                                                                                             "Loading")
    form = advanced.panel.layout()
    assert form.labelForField(advanced.mode_combo).text() == "Layout search"
    assert form.labelForField(advanced.loading_combo).text() == "Loading"
    # By keyboard: Tab from Save to reaches the Advanced toggle, Space opens it, Tab reaches both choices.
    page.out_edit.setFocus()
    for _ in range(6):
        _key(qtbot, Qt.Key.Key_Tab)
        if QApplication.focusWidget() is advanced.toggle:
            break
    assert QApplication.focusWidget() is advanced.toggle
    _key(qtbot, Qt.Key.Key_Space)
    assert advanced.panel.isVisible() and advanced.toggle.isChecked()
    _key(qtbot, Qt.Key.Key_Tab)
    assert QApplication.focusWidget() is advanced.mode_combo
    _key(qtbot, Qt.Key.Key_Down)
    assert advanced.mode_combo.currentIndex() == 1
    assert advanced.mode_combo.toolTip() == MODES[1][2]  # the closed combo says what the current choice trades
    _key(qtbot, Qt.Key.Key_Tab)
    assert QApplication.focusWidget() is advanced.loading_combo
    _key(qtbot, Qt.Key.Key_Down)
    _key(qtbot, Qt.Key.Key_Down)
    assert advanced.loading_combo.currentIndex() == 2
    params = _start(qtbot, page)["params"]
    assert (params["mode"], params["stream"]) == ("channel-mix", True)
    _stop(qtbot, page)
    # Every combination, each sent with the engine's exact keys and values (as --mode / --stream / --no-stream).
    for m, (mode, _label, _tip) in enumerate(MODES):
        for i, (stream, _label2, _tip2) in enumerate(LOADINGS):
            qtbot.mouseClick(page.back_button, Qt.MouseButton.LeftButton)
            assert page.step() == 2
            advanced.mode_combo.setCurrentIndex(m)
            advanced.loading_combo.setCurrentIndex(i)
            params = _start(qtbot, page)["params"]
            assert params["mode"] == mode and params["stream"] is stream
            _stop(qtbot, page)
    # Closed, the toggle still says which choices differ from the defaults.
    qtbot.mouseClick(page.back_button, Qt.MouseButton.LeftButton)
    advanced.toggle.setChecked(False)
    assert not advanced.panel.isVisible()
    assert advanced.toggle.text() == "Advanced: Per channel group (channel-mix), Block by block (streamed, less RAM)"
    advanced.mode_combo.setCurrentIndex(0)
    advanced.loading_combo.setCurrentIndex(0)
    assert advanced.toggle.text() == "Advanced"


def test_a_resumed_job_after_a_restart_keeps_its_layout_search_and_loading(qtbot, open_window, page,  # noqa: ANN001
                                                                           home: Path) -> None:
    from bitsmith.engine import jobfiles
    from bitsmith.engine.jobclient import JobClient

    _to_budget(qtbot, page)
    page.advanced.toggle.setChecked(True)
    page.advanced.mode_combo.setCurrentIndex(1)
    page.advanced.loading_combo.setCurrentIndex(1)
    sent = _start(qtbot, page)["params"]
    assert (sent["mode"], sent["stream"]) == ("channel-mix", False)
    _stop(qtbot, page)
    # The real worker persists the request (request.json) the wizard reads back after a restart. Here it stops at
    # once (the output folder holds something else) and an earlier run's unfinished work is beside it.
    out = Path(sent["out"])
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("not a model")
    handle = JobClient().start("quantize", sent, env={**os.environ, "BITSMITH_HOME": str(home)})
    assert handle.wait(300) == 2
    (partial_folder(out) / "calibrate").mkdir(parents=True)
    assert jobfiles.read_json(home / "jobs" / handle.job_id / "request.json")["params"] == sent

    window2 = open_window("quantize")
    page2 = window2.pages["quantize"]
    page2.services.jobs.client = client = FakeClient()
    assert page2.step() == 0 and page2.resume_box.isVisible()
    assert (page2.advanced.mode_combo.currentIndex(), page2.advanced.loading_combo.currentIndex()) == (0, 0)
    qtbot.mouseClick(page2.resume_unfinished_button, Qt.MouseButton.LeftButton)
    [request] = client.requests
    assert request["params"] == sent and request["job_id"] == handle.job_id
    # Going back to the budget step shows the resumed job's choices, so a new start keeps them too.
    _feed(qtbot, page2, {"event": "done", "status": "cancelled"})
    qtbot.mouseClick(page2.back_button, Qt.MouseButton.LeftButton)
    assert page2.step() == 2
    assert page2.advanced.params() == {"mode": "channel-mix", "stream": False}
    window2.close()


# -- stages -----------------------------------------------------------------------------------------------------------

# Recorded from a real run: `bitsmith quantize <tiny Llama> --bpw 3.0 --preset demo --json` (the stage and progress
# events, in order). Calibration first captures the first block's inputs ("capture", a part of "calibrate"), then
# reports "calibrate" again with its block count.
RECORDED = [
    {"event": "stage", "stage": "load", "total": 1},
    {"event": "progress", "stage": "load", "done": 1, "total": 1, "eta_s": 0.0},
    {"event": "stage", "stage": "evaluate-fp", "total": 1},
    {"event": "progress", "stage": "evaluate-fp", "done": 1, "total": 1, "eta_s": 0.0},
    {"event": "stage", "stage": "measure", "total": None},
    {"event": "stage", "stage": "measure-quantize", "total": 14, "parent": "measure"},
    {"event": "progress", "stage": "measure-quantize", "done": 1, "total": 14, "eta_s": 0.0},
    {"event": "progress", "stage": "measure-quantize", "done": 14, "total": 14, "eta_s": 0.0},
    {"event": "stage", "stage": "measure-fisher", "total": 4, "parent": "measure"},
    {"event": "progress", "stage": "measure-fisher", "done": 1, "total": 4, "eta_s": 0.0},
    {"event": "progress", "stage": "measure-fisher", "done": 4, "total": 4, "eta_s": 0.0},
    {"event": "stage", "stage": "search", "total": 1},
    {"event": "progress", "stage": "search", "done": 1, "total": 1, "eta_s": 0.0},
    {"event": "stage", "stage": "calibrate", "total": None},
    {"event": "stage", "stage": "capture", "total": 8, "parent": "calibrate"},
    {"event": "progress", "stage": "capture", "done": 1, "total": 8, "eta_s": 0.0},
    {"event": "progress", "stage": "capture", "done": 8, "total": 8, "eta_s": 0.0},
    {"event": "stage", "stage": "calibrate", "total": 2},
    {"event": "progress", "stage": "calibrate", "done": 0, "total": 2, "eta_s": None},
    {"event": "progress", "stage": "calibrate", "done": 1, "total": 2, "eta_s": 10.5},
    {"event": "progress", "stage": "calibrate", "done": 2, "total": 2, "eta_s": 0.0},
    {"event": "stage", "stage": "evaluate", "total": 1},
    {"event": "progress", "stage": "evaluate", "done": 1, "total": 1, "eta_s": 0.0},
    {"event": "stage", "stage": "save", "total": 1},
    {"event": "progress", "stage": "save", "done": 1, "total": 1, "eta_s": 0.0},
]


def _upto(stage: str, last: bool = False) -> list[dict]:
    """RECORDED up to the first (or the last) stage event of `stage`, included."""
    idx = [i for i, e in enumerate(RECORDED) if e["event"] == "stage" and e["stage"] == stage]
    return RECORDED[: (idx[-1] if last else idx[0]) + 1]


def test_a_stage_is_done_only_when_the_engine_moves_on_not_while_its_parts_run(qtbot, page) -> None:  # noqa: ANN001
    _to_budget(qtbot, page)
    _start(qtbot, page)
    rows = page.stage_rows

    def done() -> set[str]:
        return {name for name, row in rows.items() if row.done}

    fed = 0

    def feed_to(events: list[dict]) -> None:
        nonlocal fed
        _feed(qtbot, page, *events[fed:])
        fed = len(events)

    feed_to(_upto("measure-fisher"))
    assert done() == {"load", "evaluate-fp", "measure-quantize"}  # measure goes on while its parts run
    assert rows["measure-fisher"].parent_stage == "measure" and rows["measure-fisher"].name.text() == "fisher"
    feed_to(_upto("search"))
    assert done() == {"load", "evaluate-fp", "measure", "measure-quantize", "measure-fisher"}
    feed_to(_upto("capture"))
    feed_to(RECORDED[: RECORDED.index({"event": "progress", "stage": "capture", "done": 8, "total": 8,
                                       "eta_s": 0.0}) + 1])
    assert "calibrate" not in done() and "capture" not in done()  # capturing: calibration has not even begun
    assert rows["capture"].parent_stage == "calibrate" and rows["capture"].bar.format() == "8/8"
    assert page.run_status.text() == "Stage: calibrate (capture)"
    feed_to(_upto("calibrate", last=True))
    assert "capture" in done() and "calibrate" not in done()
    assert rows["calibrate"].bar.maximum() == 2 and rows["calibrate"].bar.value() == 0
    feed_to(_upto("evaluate"))
    assert "calibrate" in done() and "evaluate" not in done()
    feed_to(RECORDED)
    assert "save" not in done()
    _feed(qtbot, page, {"event": "done", "status": "cancelled"})
    assert "save" not in done()  # stopped: the last stage is not called done
    # Rows in the order the engine started them, each part right under its stage.
    order = [page.stages_box.itemAt(i).widget() for i in range(page.stages_box.count())]
    assert [r.name.text() for r in order] == ["load", "evaluate-fp", "measure", "quantize", "fisher", "search",
                                              "calibrate", "capture", "evaluate", "save"]


def test_a_finished_run_marks_every_stage_and_part_done(qtbot, page) -> None:  # noqa: ANN001
    _to_budget(qtbot, page)
    _start(qtbot, page)
    _feed(qtbot, page, *RECORDED, {"event": "done", "status": "ok"})
    assert all(row.done for row in page.stage_rows.values()) and len(page.stage_rows) == 10


# -- a checkpoint of another run --------------------------------------------------------------------------------------

def _foreign(page, folder: Path | None = None) -> dict:  # noqa: ANN001
    """The engine's error for the output's checkpoint (engine/calibrate/checkpoint.py read_progress)."""
    folder = folder or checkpoint_folder(page.params["out"])
    return {"event": "error", "kind": "foreign_checkpoint", "folder": str(folder),
            "message": f"the calibration checkpoint in {folder} belongs to a different run (another model, layout, "
                       "calibration data or settings)",
            "hint": "use a new checkpoint folder, or delete this one to start over"}


def _other_runs_files(out: Path) -> dict[Path, bytes]:
    """An earlier run's unfinished work of `out`, and a neighbour that must never be touched."""
    folder = checkpoint_folder(out)
    folder.mkdir(parents=True)
    files = {folder / "progress.json": b'{"fingerprint": "another run"}', folder / "block_0000.safetensors": b"x",
             partial_folder(out) / "layout.json": b"{}", out.parent / "neighbour" / "model.safetensors": b"keep"}
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def test_start_over_deletes_only_the_checkpoint_after_asking_and_runs_again(qtbot, page, monkeypatch) -> None:  # noqa: ANN001
    _to_budget(qtbot, page)
    out = Path(page.out_edit.text())
    files = _other_runs_files(out)
    first = _start(qtbot, page)
    _feed(qtbot, page, _foreign(page), {"event": "done", "status": "error"})
    assert page.start_over_button.isVisible() and page.other_folder_button.isVisible()
    assert not page.resume_button.isVisible()  # "Try again" would meet the same checkpoint
    assert page.run_title.text() == "The output folder holds another quantization's unfinished work"
    assert "different quantization" in page.run_status.text() and str(checkpoint_folder(out)) in page.run_status.text()
    assert page.focus_target() is page.start_over_button
    asked: list[str] = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or QMessageBox.StandardButton.No)
    qtbot.mouseClick(page.start_over_button, Qt.MouseButton.LeftButton)
    assert str(checkpoint_folder(out)) in asked[0] and "nothing else is deleted" in asked[0]
    assert all(path.read_bytes() == data for path, data in files.items())  # No: nothing deleted, nothing started
    assert len(page.services.jobs.client.requests) == 1 and page.start_over_button.isVisible()
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    qtbot.mouseClick(page.start_over_button, Qt.MouseButton.LeftButton)
    assert not checkpoint_folder(out).exists()
    kept = {p for p in files if checkpoint_folder(out) not in p.parents}
    assert kept and all(p.read_bytes() == files[p] for p in kept)  # the layout and the neighbour stay
    again = page.services.jobs.client.requests[-1]
    assert again["params"] == first["params"] and again["job_id"] == page.job.job_id == "fake-1"  # same job folder
    assert page.job.running and page.step() == 3 and not page.start_over_button.isVisible()
    assert page.run_status.text().startswith("Starting over")


def test_choose_another_folder_keeps_the_checkpoint_and_suggests_an_unused_output(qtbot, page) -> None:  # noqa: ANN001
    _to_budget(qtbot, page)
    out = Path(page.out_edit.text())
    files = _other_runs_files(out)
    partial_folder(out.with_name(out.name + "-2")).mkdir()  # taken too: unfinished work of its own
    first = _start(qtbot, page)["params"]
    _feed(qtbot, page, _foreign(page), {"event": "done", "status": "error"})
    qtbot.mouseClick(page.other_folder_button, Qt.MouseButton.LeftButton)
    new = out.with_name(out.name + "-3")
    assert page.step() == 2 and page.out_edit.text() == str(new)
    assert page.out_edit.hasFocus() and page.out_edit.selectedText() == str(new)  # typing replaces it
    assert page.out_note.isVisible() and page.out_note.text().startswith(f"{out} keeps the other quantization's")
    params = _start(qtbot, page)["params"]
    assert params == {**first, "out": str(new)} and not page.out_note.isVisible()
    assert all(path.read_bytes() == data for path, data in files.items())


def test_start_over_is_not_offered_for_a_folder_that_is_not_this_outputs_checkpoint(qtbot, page, home: Path) -> None:  # noqa: ANN001
    _to_budget(qtbot, page)
    _start(qtbot, page)
    elsewhere = home / "elsewhere"
    elsewhere.mkdir()
    _feed(qtbot, page, _foreign(page, elsewhere), {"event": "done", "status": "error"})
    assert not page.start_over_button.isVisible() and page.other_folder_button.isVisible()
    with pytest.raises(ValueError):
        delete_checkpoint(page.params["out"], str(elsewhere))
    assert elsewhere.is_dir()


def test_delete_checkpoint_refuses_a_link(tmp_path: Path) -> None:
    out = tmp_path / "m"
    target = tmp_path / "precious"
    target.mkdir()
    (target / "f").write_text("keep")
    partial_folder(out).mkdir()
    checkpoint_folder(out).symlink_to(target, target_is_directory=True)
    with pytest.raises(ValueError, match="link"):
        delete_checkpoint(out)
    assert (target / "f").read_text() == "keep"
    checkpoint_folder(out).unlink()
    assert delete_checkpoint(out) == checkpoint_folder(out)  # nothing there: nothing to do


def test_each_effort_preset_says_what_it_does(qtbot, open_window) -> None:  # noqa: ANN001
    from PySide6.QtCore import Qt

    page = open_window("quantize").pages["quantize"]
    tips = {page.preset_combo.itemData(i): page.preset_combo.itemData(i, Qt.ItemDataRole.ToolTipRole)
            for i in range(page.preset_combo.count())}
    assert set(tips) == {"demo", "default", "best"} and all(tips.values())
    from bitsmith.engine.pipeline.presets import get_preset

    assert all(("distillation" in tip) == (get_preset(name).distill_epochs > 0) for name, tip in tips.items())
