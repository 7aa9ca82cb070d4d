"""The Quantize wizard after an app restart: a real quantize of a tiny Hugging Face folder is interrupted by closing the
window (the app stops the worker), and the next window's wizard offers the unfinished job and resumes it from its
calibration checkpoint (the engine's per-block checkpoints next to the output)."""

import json
import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from bitsmith.app.pages.quantize import calibration_progress, partial_folder, unfinished_quantize
from bitsmith.engine import jobfiles


def _click(qtbot, button) -> None:  # noqa: ANN001
    assert button.isVisible() and button.isEnabled(), button.text()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_a_quantize_cut_off_by_closing_the_window_resumes_from_its_checkpoint_in_the_next_one(  # noqa: ANN001
        qtbot, open_window, home: Path, tiny_models: Path) -> None:
    source = home / "tiny-hf"
    shutil.copytree(tiny_models / "hf", source)
    window = open_window("quantize")
    page = window.pages["quantize"]
    assert page.step() == 0 and not page.resume_box.isVisible()  # nothing unfinished yet
    page.local_radio.setChecked(True)
    qtbot.keyClicks(page.local_edit, str(source))
    _click(qtbot, page.next_button)
    qtbot.waitUntil(lambda: page.step() == 1, timeout=60_000)
    _click(qtbot, page.next_button)
    assert page.step() == 2
    page.preset_combo.setCurrentIndex(page.preset_combo.findData("demo"))
    _click(qtbot, page.preset_buttons[3.0])
    out = Path(page.out_edit.text())
    assert out == home.resolve() / "models" / "tiny-hf-3.00bpw"
    _click(qtbot, page.next_button)  # Start quantizing
    job = page.job
    assert page.step() == 3 and job.running and job.params["source"] == str(source)

    def calibrated() -> int:  # blocks done, as the run step shows them ("1/4")
        row = page.stage_rows.get("calibrate")
        return row.bar.value() if row is not None and row.bar.maximum() == 4 else 0

    qtbot.waitUntil(lambda: calibrated() >= 1 or not job.running, timeout=600_000)
    assert job.running, page.log_view.toPlainText()[-3000:]
    window.close()  # the app stops the worker: a clean cancel at the next check, the finished blocks kept
    assert job.done_event is not None or job.handle.returncode is not None
    state = jobfiles.read_state(home / "jobs" / job.job_id)
    assert state["status"] in ("cancelled", "error"), state
    done, blocks = calibration_progress(out)
    assert blocks == 4 and 1 <= done < 4, (done, blocks)
    assert partial_folder(out).is_dir() and not out.exists()

    # A new window opens where the last one was; the wizard offers the unfinished job.
    window2 = open_window()
    assert window2.current_page_name() == "quantize"
    page2 = window2.pages["quantize"]
    assert page2.step() == 0 and page2.resume_box.isVisible()
    text = page2.resume_text.text()
    assert text.startswith(f"Quantizing tiny-hf to 3.00 bpw into {out}")
    assert f"{done} of 4 blocks are calibrated and kept" in text
    assert page2.focus_target() is page2.resume_unfinished_button
    _click(qtbot, page2.resume_unfinished_button)
    resumed = page2.job
    assert page2.step() == 3 and resumed.params == job.params and resumed.job_id == job.job_id
    assert page2.run_status.text() == f"Resuming: {done} of 4 blocks were already calibrated…"
    assert not page2.resume_box.isVisible()
    qtbot.waitUntil(lambda: page2.step() == 4 or not resumed.running, timeout=900_000)
    assert page2.step() == 4, page2.log_view.toPlainText()[-3000:]
    meta = json.loads((out / "bitsmith.json").read_text())
    calibration = meta["recipe"]["calibration"]
    assert calibration["resumed_blocks"] == done  # continued from the checkpoint, not from the start
    assert [b.get("resumed", False) for b in calibration["blocks"]] == [True] * done + [False] * (4 - done)
    assert not partial_folder(out).exists()
    assert page2.size_before.text().endswith("(16-bit)") and page2.ppl_after.text() != "–"
    assert jobfiles.read_state(home / "jobs" / job.job_id)["status"] == "done"
    # Finished: nothing is offered any more.
    assert unfinished_quantize(home / "jobs") is None
    page2.go(0)
    assert not page2.resume_box.isVisible()


def _job(home: Path, job_id: str, status: str, out: Path, started: str, source: str = "bundled") -> None:
    """A quantize job's folder as the worker leaves it."""
    folder = home / "jobs" / job_id
    folder.mkdir(parents=True)
    request = {"kind": "quantize", "params": {"source": source, "bpw": 2.5, "out": str(out), "preset": "demo"}}
    (folder / "request.json").write_text(json.dumps(request))
    (folder / "state.json").write_text(json.dumps({"kind": "quantize", "status": status, "started_at": started,
                                                   "updated_at": started}))


def _partial(out: Path, blocks_done: int | None) -> None:
    partial = partial_folder(out)
    (partial / "calibrate").mkdir(parents=True)
    layout = {f"model.layers.{i}.mlp.down_proj": "int2_g64" for i in range(30)}
    (partial / "layout.json").write_text(json.dumps(layout))
    if blocks_done is not None:
        (partial / "calibrate" / "progress.json").write_text(json.dumps({"blocks_done": blocks_done}))


def test_only_an_unfinished_job_with_files_to_resume_is_offered_and_not_now_hides_it(qtbot, open_window,  # noqa: ANN001
                                                                                    home: Path) -> None:
    models = home / "models"
    done_out, gone_out, open_out = models / "a-2.50bpw", models / "b-2.50bpw", models / "c-2.50bpw"
    _job(home, "j1", "cancelled", done_out, "2026-01-01T10:00:00Z")  # finished later by j2
    _partial(done_out, 3)
    _job(home, "j2", "done", done_out, "2026-01-01T11:00:00Z")
    (done_out / "bitsmith.json").parent.mkdir(parents=True)
    (done_out / "bitsmith.json").write_text("{}")
    _job(home, "j3", "error", gone_out, "2026-01-01T12:00:00Z")  # failed before it wrote anything
    _job(home, "j4", "cancelled", open_out, "2026-01-01T09:00:00Z")
    _partial(open_out, 12)
    found = unfinished_quantize(home / "jobs")
    assert found["id"] == "j4" and (found["blocks_done"], found["blocks"]) == (12, 30)

    window = open_window("quantize")
    page = window.pages["quantize"]
    assert page.step() == 0 and page.resume_box.isVisible()
    assert page.resume_text.text() == (f"Quantizing SmolLM2-135M-Instruct to 2.50 bpw into {open_out} was stopped on "
                                       "2026-01-01 09:00:00 UTC: 12 of 30 blocks are calibrated and kept. Resume "
                                       "continues from there.")
    _click(qtbot, page.dismiss_button)  # "Not now": hidden, and not offered again; its files stay
    assert not page.resume_box.isVisible() and partial_folder(open_out).is_dir()
    assert page.services.settings.get("quantize/dismissed_resume") == ["j4"]
    page.on_shown()
    assert not page.resume_box.isVisible()
    # A model that was deleted since is said in plain words instead of starting a job that cannot work.
    _job(home, "j5", "error", models / "d-2.50bpw", "2026-01-02T09:00:00Z", source=str(home / "gone-model"))
    _partial(models / "d-2.50bpw", None)
    page.on_shown()
    assert page.resume_box.isVisible() and "its measurement and layout are kept" in page.resume_text.text()
    assert "did not finish (Bitsmith was closed or the worker stopped)" in page.resume_text.text()
    _click(qtbot, page.resume_unfinished_button)
    assert page.job is None and page.step() == 0
    assert page.model_status.text().startswith(f"The model {home / 'gone-model'} of the unfinished quantization is "
                                               "no longer there")
