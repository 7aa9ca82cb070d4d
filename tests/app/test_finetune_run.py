"""The Fine-tune page driven through its widgets against real `finetune` workers on a tiny quantized model: a Q-SFT
run that streams its loss, is cancelled (its checkpoint kept), resumed from that checkpoint (the steps go on) and
lands in the Models library, from where it opens in Chat; and a short LoRA run."""

import json
import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from bitsmith.app.pages.finetune import checkpoint_of

STEPS = 12


def _setup(home: Path, tiny_models: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The tiny quantized model in the library and a small instruction dataset."""
    model = home / "models" / "tiny-3bpw"
    shutil.copytree(tiny_models / "q", model)
    data = tmp_path / "sea.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Tell me sea fact {i}.", "input": "",
                                        "output": f"Sea fact {i}: the water is salty and the waves follow the wind."})
                            + "\n" for i in range(40)), encoding="utf-8")
    return model, data


def _choose_data(qtbot, page, data: Path) -> None:  # noqa: ANN001
    """Type the dataset path, as a user would, and wait for the preview worker's answer."""
    page.data_edit.setFocus()
    qtbot.keyClicks(page.data_edit, str(data))
    with qtbot.waitSignal(page.preview_box.updated, timeout=120_000):
        qtbot.keyClick(page.data_edit, Qt.Key.Key_Return)  # editingFinished
    preview = page.preview_box.preview
    assert preview is not None and preview["documents"] == 40 and preview["examples"]
    assert page.preview_box.template_note.text() == "Formatted with tiny-3bpw's own chat template."


def _click(qtbot, button) -> None:  # noqa: ANN001
    assert button.isVisible() and button.isEnabled(), button.text()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


@pytest.mark.slow  # ~16 s on two idle cores, ~45 s on busy ones
@pytest.mark.timeout(900)
def test_a_qsft_run_is_cancelled_resumed_from_its_checkpoint_and_opens_in_chat(  # noqa: ANN001
        qtbot, open_window, home: Path, tiny_models: Path, tmp_path: Path) -> None:
    model, data = _setup(home, tiny_models, tmp_path)
    window = open_window("finetune")
    page = window.pages["finetune"]
    assert page.model_combo.currentData()[0] == str(model)
    assert page.method_combo.currentData() == "qsft"
    _choose_data(qtbot, page, data)
    page.steps_spin.setValue(STEPS)
    page.seq_spin.setValue(64)
    out = model.with_name("tiny-3bpw-qsft")
    assert page.out_label.text() == f"Saves to {out}" and page.start_button.text() == "Start fine-tuning"
    assert not page.fresh_button.isVisible()

    _click(qtbot, page.start_button)
    first = page.job
    assert first.params["out"] == str(out) and first.params["steps"] == STEPS and "fresh" not in first.params
    qtbot.waitUntil(lambda: len(page.loss_chart.points) >= 2 or not first.running, timeout=180_000)
    assert first.running, page.log_view.toPlainText()[-2000:]
    with qtbot.waitSignal(first.finished, timeout=120_000) as done:
        _click(qtbot, page.cancel_button)
    assert done.args[0]["status"] == "cancelled"
    ckpt = checkpoint_of(out)
    assert ckpt is not None and 2 <= ckpt["step"] < STEPS, ckpt
    k = ckpt["step"]
    assert (out.with_name(f".{out.name}.partial") / "checkpoint" / "state.safetensors").is_file() and not out.exists()
    assert page.status.text().startswith(f"Cancelled after step {k}: the checkpoint is kept")
    assert [s for s, _ in page.loss_chart.points] == list(range(1, k + 1))
    # The page offers to resume that run, and to start over.
    assert page.start_button.text() == "Resume fine-tuning" and page.fresh_button.isVisible()
    assert f"stopped after step {k} of {STEPS}" in page.out_label.text()

    trained = [tuple(p) for p in ckpt["history"]["train"]]
    live: list[int] = []
    page.steps_spin.setValue(STEPS + 5)  # changed by mistake: Resume goes on with the settings the run began with
    _click(qtbot, page.start_button)
    second = page.job
    assert second is not first and second.params == first.params  # the same request: the engine resumes it
    assert page.steps_spin.value() == STEPS
    assert page.loss_chart.points == trained  # the curve so far is shown again, not cleared
    second.event.connect(lambda ev: ev.get("name") == "train_loss" and live.append(ev["step"]))
    with qtbot.waitSignal(second.finished, timeout=600_000) as done:
        pass
    log = page.log_view.toPlainText()
    assert done.args[0]["status"] == "ok", log[-3000:]
    assert f"resuming from the checkpoint at step {k}" in log
    assert live == list(range(k + 1, STEPS + 1))  # the step count continues, it does not restart
    assert [s for s, _ in page.loss_chart.points] == list(range(1, STEPS + 1))
    assert page.result["steps"] == STEPS and page.result["out"] == str(out)
    assert (out / "bitsmith.json").is_file() and not out.with_name(f".{out.name}.partial").exists()
    assert page.status.text().startswith("Finished: tiny-3bpw-qsft is in your library")
    # A second run would not write over the finished one.
    assert page.out_label.text() == f"Saves to {model.with_name('tiny-3bpw-qsft-2')}"
    assert page.start_button.text() == "Start fine-tuning" and not page.fresh_button.isVisible()

    # The Models library lists the tuned model; Chat with it opens it on the Chat page (native backend).
    window.show_page("models")
    models = window.pages["models"]
    [row] = [m for m in models.library if m["path"] == out]
    assert row["kind"] == "Bitsmith" and row["bpw"] == pytest.approx(page.result["bpw"])
    assert row["ppl"] is None and row["source"] == "fine-tuned from tiny-3bpw"  # no perplexity from before tuning
    window.show_page("finetune")
    _click(qtbot, page.chat_button)
    assert window.current_page_name() == "chat"
    chat = window.pages["chat"]
    assert chat.model_combo.currentData() == str(out) and chat.backend_combo.currentData() in ("auto", "native")
    assert chat.store.conversation(chat.conv.id).model == str(out)


@pytest.mark.timeout(600)  # ~10 s on two idle cores, ~25 s on busy ones
def test_a_short_lora_run_lands_in_the_library(qtbot, open_window, home: Path, tiny_models: Path,  # noqa: ANN001
                                               tmp_path: Path) -> None:
    model, data = _setup(home, tiny_models, tmp_path)
    window = open_window("finetune")
    page = window.pages["finetune"]
    page.method_combo.setCurrentIndex(page.method_combo.findData("lora"))
    assert page.lr_spin.value() == 5e-4
    _choose_data(qtbot, page, data)
    page.steps_spin.setValue(3)
    page.seq_spin.setValue(64)
    out = model.with_name("tiny-3bpw-lora")
    assert page.out_label.text() == f"Saves to {out}"
    _click(qtbot, page.start_button)
    job = page.job
    assert job.params["method"] == "lora"
    with qtbot.waitSignal(job.finished, timeout=600_000) as done:
        pass
    assert done.args[0]["status"] == "ok", page.log_view.toPlainText()[-3000:]
    assert [s for s, _ in page.loss_chart.points] == [1, 2, 3]
    assert page.result["method"] == "lora" and (out / "bitsmith.json").is_file()
    assert page.chat_button.isEnabled()
    window.show_page("models")
    assert any(m["path"] == out and m["kind"] == "Bitsmith" for m in window.pages["models"].library)
