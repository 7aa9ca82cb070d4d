"""Import GGUF on the Models page: the file dialog, a hard link on the same disk or a copy with progress and cancel
across disks, the library row (imported, with size and source), Chat with it on llama.cpp, Delete that keeps the
original, refusals in plain words; and (slow) a chat that streams from an imported copy of the bundled GGUF."""

import errno
import os
import shutil
import threading
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QMessageBox

import bitsmith.app.import_gguf as ig
import bitsmith.app.move_models as mm
from bitsmith.app.pages.model_format import human_bytes
from bitsmith.app.pages.models import IMPORTED_KIND


def _gguf(path: Path, size: int = 300_000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + os.urandom(size - 4))
    return path


def _pick(monkeypatch: pytest.MonkeyPatch, path: Path | None) -> list[str]:
    """The file dialog answers `path` (None: the user cancels); the dialogs' titles are returned."""
    asked: list[str] = []

    def dialog(parent, title, folder, filters):  # noqa: ANN001, ANN202
        asked.append(title)
        assert "*.gguf" in filters
        return (str(path) if path else "", "")

    monkeypatch.setattr(QFileDialog, "getOpenFileName", dialog)
    return asked


def _import(qtbot, page) -> None:  # noqa: ANN001
    qtbot.mouseClick(page.import_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not page.importing, timeout=30_000)


def _rows(page) -> list[tuple[str, str, str, str]]:  # noqa: ANN001
    t = page.lib_table
    return [tuple(t.item(i, c).text() for c in (0, 1, 2, 5)) for i in range(t.rowCount())]


def test_an_imported_gguf_is_linked_into_the_library_and_opens_in_chat_with_llama_cpp(
        qtbot, open_window, home: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    window = open_window("models")
    page = window.pages["models"]
    source = _gguf(tmp_path / "Downloads" / "my-model.Q4_K_M.gguf")
    asked = _pick(monkeypatch, None)
    _import(qtbot, page)  # the user closes the dialog: nothing happens
    assert asked == ["Import a GGUF model"] and page.library == [] and not page.lib_message.isVisible()

    _pick(monkeypatch, source)
    _import(qtbot, page)
    folder = home / "models" / "my-model.Q4_K_M"
    target = folder / source.name
    assert _rows(page) == [(source.name, IMPORTED_KIND, human_bytes(300_000), str(source))]
    assert target.read_bytes() == source.read_bytes() and (folder / ig.IMPORT_FILE).is_file()
    assert os.stat(target).st_ino == os.stat(source).st_ino  # same disk: a hard link, no second copy
    assert sorted(p.name for p in (home / "models").iterdir()) == [folder.name]  # no staging left behind
    assert page.selected_model()["path"] == target and "Imported my-model.Q4_K_M.gguf" in page.lib_message.text()

    # Chat with it: the chat page takes the file with the llama.cpp backend, and sees nothing wrong with it.
    qtbot.mouseClick(page.chat_button, Qt.MouseButton.LeftButton)
    chat = window.pages["chat"]
    assert window.current_page_name() == "chat" and chat.model_combo.currentData() == str(target)
    assert chat.backend_combo.currentData() == "llama.cpp" and not chat.banner.isVisibleTo(chat)
    assert chat.store.conversation(chat.conv.id).backend == "llama.cpp"

    # The same file again: said, not imported twice. The library keeps working when the original goes away.
    window.show_page("models")
    _import(qtbot, page)
    assert "in your library already" in page.lib_message.text() and len(page.library) == 1
    source.unlink()
    page.refresh_library()
    assert page.library[0]["path"].read_bytes()[:4] == b"GGUF"

    # Delete asks, names the folder the import made, and removes exactly that.
    source = _gguf(tmp_path / "Downloads" / "my-model.Q4_K_M.gguf")
    _pick(monkeypatch, source)
    _import(qtbot, page)  # a new file at the old path: it is imported anew, under a free name
    assert [m["folder"].name for m in page.library] == ["my-model.Q4_K_M", "my-model.Q4_K_M-2"]
    page.lib_table.selectRow(1)
    questions: list[str] = []
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: questions.append(a[2]) or QMessageBox.StandardButton.Yes)
    qtbot.mouseClick(page.delete_button, Qt.MouseButton.LeftButton)
    assert "my-model.Q4_K_M-2" in questions[0] and f"The original file stays where it was: {source}" in questions[0]
    assert not (home / "models" / "my-model.Q4_K_M-2").exists() and source.is_file() and len(page.library) == 1
    window.close()


def test_across_disks_the_file_is_copied_with_progress_and_a_cancel_leaves_nothing(
        qtbot, open_window, home: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    window = open_window("models")
    page = window.pages["models"]
    source = _gguf(tmp_path / "usb" / "big.gguf", size=3 * mm.COPY_CHUNK + 1234)

    def no_link(src, dst):  # noqa: ANN001, ANN202
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(ig.os, "link", no_link)
    entered, gate = threading.Event(), threading.Event()
    real_copy = shutil.copyfileobj

    def slow_copy(fsrc, fdst, length=0):  # noqa: ANN001, ANN202
        fdst.write(fsrc.read(length))  # one chunk, then wait for the test
        entered.set()
        gate.wait(10)
        return real_copy(fsrc, fdst, length)

    monkeypatch.setattr(mm.shutil, "copyfileobj", slow_copy)
    _pick(monkeypatch, source)
    qtbot.mouseClick(page.import_button, Qt.MouseButton.LeftButton)
    try:
        qtbot.waitUntil(entered.is_set, timeout=10_000)
        qtbot.waitUntil(lambda: page.import_bar.value() > 0, timeout=10_000)
        assert page.importing and page.import_bar.isVisible() and not page.import_button.isEnabled()
        assert page.import_bar.value() == int(1000 * mm.COPY_CHUNK / source.stat().st_size)
        assert page.library == []  # nothing half-copied shows in the library
        qtbot.mouseClick(page.import_cancel, Qt.MouseButton.LeftButton)
    finally:
        gate.set()
    qtbot.waitUntil(lambda: not page.importing, timeout=10_000)
    assert "cancelled; nothing was added" in page.lib_message.text() and page.library == []
    assert list((home / "models").iterdir()) == [] and source.is_file()

    monkeypatch.setattr(mm.shutil, "copyfileobj", real_copy)
    seen: list[int] = []
    page.import_bar.valueChanged.connect(seen.append)
    _import(qtbot, page)
    target = home / "models" / "big" / "big.gguf"
    assert target.read_bytes() == source.read_bytes() and os.stat(target).st_ino != os.stat(source).st_ino
    assert seen[-1] == 1000 and seen == sorted(seen) and page.library[0]["kind"] == IMPORTED_KIND
    assert '"method": "copy"' in (target.parent / ig.IMPORT_FILE).read_text()
    window.close()


def test_what_cannot_be_imported_is_refused_in_plain_words(qtbot, open_window, home: Path, tmp_path: Path,  # noqa: ANN001
                                                           monkeypatch) -> None:
    window = open_window("models")
    page = window.pages["models"]
    text = tmp_path / "notes.gguf"
    text.write_text("these are my notes, not a model")
    _pick(monkeypatch, text)
    _import(qtbot, page)
    assert "Cannot import notes.gguf: notes.gguf is not a GGUF model" in page.lib_message.text()
    inside = _gguf(home / "models" / "already.gguf")
    _pick(monkeypatch, inside)
    _import(qtbot, page)
    assert "is in the models folder already" in page.lib_message.text()
    assert [m["name"] for m in page.library] == ["already.gguf"]

    def full(*_a, **_k):  # noqa: ANN002, ANN003, ANN202
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ig, "copy_file", full)
    monkeypatch.setattr(ig.os, "link", lambda *a: (_ for _ in ()).throw(OSError(errno.EXDEV, "cross-device")))
    _pick(monkeypatch, _gguf(tmp_path / "x.gguf"))
    _import(qtbot, page)
    assert "the models folder's disk is full" in page.lib_message.text() and "Traceback" not in page.lib_message.text()
    assert sorted(p.name for p in (home / "models").iterdir()) == ["already.gguf"]
    window.close()


@pytest.mark.slow
def test_a_chat_streams_from_an_imported_gguf_on_llama_cpp(qtbot, open_window, home: Path,  # noqa: ANN001
                                                           bundled_gguf: Path, monkeypatch) -> None:
    window = open_window("models")
    page = window.pages["models"]
    _pick(monkeypatch, bundled_gguf)
    _import(qtbot, page)
    [entry] = page.library
    assert entry["kind"] == IMPORTED_KIND and entry["size"] == bundled_gguf.stat().st_size
    page.lib_table.selectRow(0)
    page.lib_table.setFocus()
    qtbot.keyClick(page.lib_table, Qt.Key.Key_Return)  # Enter on the row: Chat with it
    chat = window.pages["chat"]
    assert window.current_page_name() == "chat" and chat.model_combo.currentData() == str(entry["path"])
    chat.temperature.setValue(0.0)
    chat.max_tokens.setValue(8)
    chat.input.setPlainText("Name a colour.")
    chat.send()
    qtbot.waitUntil(lambda: not chat.controller.busy, timeout=180_000)
    answer = chat.store.messages(chat.conv.id)[-1]
    assert answer.role == "assistant" and answer.status == "complete" and answer.content
    assert answer.meta["backend"] == "llama.cpp" and chat.controller.job.params["backend"] == "llama.cpp"
    assert chat.controller.job.params["model"] == str(entry["path"])
    window.close()
