"""A model folder deleted behind the app's back: the Models library, the Quantize wizard and the Fine-tune page say
so in plain words and refresh, instead of raising (pytest-qt fails a test on any exception in a slot)."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

_spec = importlib.util.spec_from_file_location("bitsmith_app_fake_models_deleted",
                                               Path(__file__).with_name("fake_models.py"))
fake_models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake_models)

LAYER = "model.layers.0.mlp.down_proj"


def _hf_folder(folder: Path) -> Path:
    """A Hugging Face folder with a small Llama's config and a header-only safetensors file (enough to plan)."""
    folder.mkdir(parents=True)
    for name, data in fake_models.llama_files(2, 256, 512, 4, 4, 1000).items():
        (folder / name).write_bytes(data)
    return folder


def _bitsmith_folder(folder: Path, bpw: float = 2.5) -> Path:
    """A Bitsmith folder as the library and the Fine-tune page read it (config.json and bitsmith.json)."""
    _hf_folder(folder)
    (folder / "bitsmith.json").write_text(json.dumps({"format_version": 1, "layout": {LAYER: "int2_g64"},
                                                      "shapes": {LAYER: [256, 512]},
                                                      "bpw": {"quantized_linears": bpw}, "metrics": {}}))
    return folder


def _names(page) -> list[str]:  # noqa: ANN001
    return [m["name"] for m in page.library]


def _select(page, name: str) -> None:  # noqa: ANN001
    page.lib_table.selectRow(_names(page).index(name))


@pytest.fixture
def no_questions(monkeypatch):  # noqa: ANN001, ANN201
    """Fail if a confirmation is asked for a model that is gone (there is nothing to confirm)."""
    asked: list[str] = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or QMessageBox.StandardButton.No)
    return asked


def test_the_models_library_says_a_deleted_model_is_gone_and_refreshes(qtbot, open_window, home: Path,  # noqa: ANN001
                                                                        no_questions, monkeypatch) -> None:
    models = home / "models"
    _hf_folder(models / "acme--chat")
    _bitsmith_folder(models / "chat-2.50bpw")
    (models / "solo.gguf").write_bytes(b"GGUF" + bytes(1000))
    (models / "other.gguf").write_bytes(b"GGUF" + bytes(1000))
    window = open_window("models")
    page = window.pages["models"]
    assert _names(page) == ["acme/chat", "chat-2.50bpw", "other.gguf", "solo.gguf"]

    # Chat with a folder deleted a moment ago (before the folder watcher noticed): said, refreshed, no chat.
    chat_model = window.page("chat").conv.model
    _select(page, "acme/chat")
    shutil.rmtree(models / "acme--chat")
    qtbot.mouseClick(page.chat_button, Qt.MouseButton.LeftButton)
    assert window.current_page_name() == "models" and window.pages["chat"].conv.model == chat_model
    assert page.lib_message.isVisible() and "acme/chat is no longer in the models folder" in page.lib_message.text()
    assert "moved or deleted outside Bitsmith" in page.lib_message.text()
    assert _names(page) == ["chat-2.50bpw", "other.gguf", "solo.gguf"] and not page.chat_button.isEnabled()

    # Delete and Open folder on a file that is gone: no question, no error, the list follows.
    _select(page, "solo.gguf")
    (models / "solo.gguf").unlink()
    qtbot.mouseClick(page.delete_button, Qt.MouseButton.LeftButton)
    assert no_questions == [] and "solo.gguf is no longer in the models folder" in page.lib_message.text()
    opened: list[str] = []
    monkeypatch.setattr("bitsmith.app.pages.models.QDesktopServices.openUrl", lambda url: opened.append(url))
    _select(page, "other.gguf")
    (models / "other.gguf").unlink()
    qtbot.mouseClick(page.open_button, Qt.MouseButton.LeftButton)
    assert opened == [] and _names(page) == ["chat-2.50bpw"]

    # Deleted while nobody touches the page: the folder watcher refreshes the list by itself.
    shutil.rmtree(models / "chat-2.50bpw")
    qtbot.waitUntil(lambda: page.library == [], timeout=5_000)
    assert page.lib_table.rowCount() == 0 and "No models yet" in page.lib_empty.text()
    # And what appears is listed too (a model copied in by hand).
    (models / "new.gguf").write_bytes(b"GGUF" + bytes(10))
    qtbot.waitUntil(lambda: _names(page) == ["new.gguf"], timeout=5_000)
    window.close()


def test_a_folder_deleted_while_the_library_is_read_is_left_out_not_shown_as_damaged(home: Path,  # noqa: ANN001
                                                                                     monkeypatch) -> None:
    from bitsmith.app.pages.models import scan_library
    from bitsmith.engine import model_summary

    models = home / "models"
    going = _bitsmith_folder(models / "going-2.50bpw")
    _hf_folder(models / "acme--stays")
    real = model_summary.summarize

    def vanish(folder, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        if Path(folder) == going:
            shutil.rmtree(going)  # another program deletes it right now
        return real(folder, *a, **k)

    monkeypatch.setattr(model_summary, "summarize", vanish)
    assert [m["name"] for m in scan_library(models)] == ["acme/stays"]


def _to_step(qtbot, page, folder: Path, step: int) -> None:  # noqa: ANN001
    """Choose `folder` on the first step and go on to `step` (1 hardware, 2 budget)."""
    page.go(0)
    page.local_radio.setChecked(True)
    page.local_edit.setText(str(folder))
    qtbot.mouseClick(page.next_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.step() == 1, timeout=60_000)
    if step == 2:
        qtbot.mouseClick(page.next_button, Qt.MouseButton.LeftButton)
    assert page.step() == step and page.source == str(folder)


def test_the_quantize_wizard_notices_its_model_is_gone(qtbot, open_window, home: Path, tmp_path: Path,  # noqa: ANN001
                                                       gpu_profile) -> None:
    window = open_window("quantize")
    page = window.pages["quantize"]
    page.services.hardware.profile = gpu_profile()
    folder = _hf_folder(tmp_path / "my-llama")

    # Deleted on the budget step, then "Start quantizing": back to the first step with the reason; no job.
    _to_step(qtbot, page, folder, 2)
    assert page.next_button.text() == "Start quantizing"
    shutil.rmtree(folder)
    qtbot.mouseClick(page.next_button, Qt.MouseButton.LeftButton)
    assert page.step() == 0 and page.job is None and page.services.jobs.jobs == []
    assert f"The model {folder} is no longer there" in page.model_status.text()
    assert "moved or deleted outside Bitsmith" in page.model_status.text() and page.source is None
    # Next on the first step checks the path again, as before.
    qtbot.mouseClick(page.next_button, Qt.MouseButton.LeftButton)
    assert page.step() == 0 and "does not exist" in page.model_status.text()

    # Deleted on the hardware step, then Next.
    _hf_folder(folder)
    _to_step(qtbot, page, folder, 1)
    shutil.rmtree(folder)
    qtbot.mouseClick(page.next_button, Qt.MouseButton.LeftButton)
    assert page.step() == 0 and "is no longer there" in page.model_status.text()

    # Deleted while another page was shown: coming back says so at once.
    _hf_folder(folder)
    _to_step(qtbot, page, folder, 2)
    window.show_page("models")
    shutil.rmtree(folder)
    window.show_page("quantize")
    assert page.step() == 0 and "is no longer there" in page.model_status.text()
    # Moving the budget slider after the folder went: the same, not a planner error.
    _hf_folder(folder)
    _to_step(qtbot, page, folder, 2)
    shutil.rmtree(folder)
    page.slider.setValue(page.slider.value() + 10)
    assert page.step() == 0 and "is no longer there" in page.model_status.text()
    window.close()


def test_the_quantize_results_notice_the_new_model_is_gone(qtbot, open_window, home: Path, monkeypatch) -> None:  # noqa: ANN001
    window = open_window("quantize")
    page = window.pages["quantize"]
    out = _bitsmith_folder(home / "models" / "my-llama-2.50bpw")
    page.source = "bundled"
    page.result = {"out": str(out), "bpw": 2.5, "ppl_fp": 20.0, "ppl": 24.0, "seconds": 3}
    page.show_results()
    assert page.step() == 4 and page.chat_button.isEnabled()
    shutil.rmtree(out)
    opened: list[object] = []
    monkeypatch.setattr("bitsmith.app.pages.quantize.QDesktopServices.openUrl", lambda url: opened.append(url))
    qtbot.mouseClick(page.open_button, Qt.MouseButton.LeftButton)
    assert opened == [] and f"The quantized model {out} is no longer there" in page.results_note.text()
    for b in (page.chat_button, page.finetune_button, page.export_button, page.open_button):
        assert not b.isEnabled()
    page.chat_with_it()
    page.export_gguf()
    assert window.current_page_name() == "quantize" and page.export_job is None
    window.close()


def test_the_finetune_page_notices_its_model_is_gone(qtbot, open_window, home: Path, tmp_path: Path,  # noqa: ANN001
                                                     gpu_profile) -> None:
    models = home / "models"
    keep = _bitsmith_folder(models / "keep-2.50bpw")
    gone = _bitsmith_folder(models / "gone-3.00bpw", bpw=3.0)
    window = open_window("finetune")
    page = window.pages["finetune"]
    page.services.hardware.profile = gpu_profile()
    assert [page.model_combo.itemData(i)[0] for i in range(page.model_combo.count())] == [str(gone), str(keep)]
    page.model_combo.setCurrentIndex(0)
    data = tmp_path / "chats.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n")
    page.data_edit.setText(str(data))

    # Deleted, then Start: said in plain words, the list refreshed, no job.
    shutil.rmtree(gone)
    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    assert page.job is None and page.services.jobs.jobs == []
    assert "The model gone-3.00bpw is no longer in the models folder" in page.status.text()
    assert [page.model_combo.itemData(i)[0] for i in range(page.model_combo.count())] == [str(keep)]
    assert page.estimate_label.text().startswith("Needs about")  # the estimate is for the model left

    # The last one deleted while another page was shown: the page says there is none when it comes back.
    window.show_page("models")
    shutil.rmtree(keep)
    window.show_page("finetune")
    assert page.model_combo.currentData() is None and "No quantized models yet" in page.model_combo.currentText()
    assert not page.start_button.isEnabled()
    # A change of sequence length (estimate) with a model deleted meanwhile: refreshed, not an error text.
    page.model_combo.clear()
    page.model_combo.addItem("stale entry", (str(gone), 3.0))
    page.seq_spin.setValue(1024)
    assert "No estimate" not in page.estimate_label.text() and "no longer in the models folder" in page.status.text()
    window.close()
