"""The chat page driven through its widgets; the slow tests stream from the bundled SmolLM2 GGUF in a real worker."""

import json
import sqlite3
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QInputDialog, QMessageBox

from bitsmith.app.chat.models import BUNDLED
from bitsmith.app.chat.widgets import split_markdown
from bitsmith.app.window import MainWindow

LONG_PROMPT = "Write a very long story about a lighthouse keeper and his dog."


@pytest.fixture
def chat(open_window):  # noqa: ANN001, ANN201
    """A factory: a new window on the chat page; returns (window, page)."""

    def make() -> tuple[MainWindow, object]:
        window = open_window("chat")
        return window, window.pages["chat"]

    return make


def _configure(page, max_tokens: int, temperature: float = 0.0) -> None:  # noqa: ANN001
    page.backend_combo.setCurrentIndex(page.backend_combo.findData("llama.cpp"))
    page.temperature.setValue(temperature)
    page.max_tokens.setValue(max_tokens)
    page._save_settings()


def _answer(page):  # noqa: ANN001, ANN202
    msgs = page.store.messages(page.conv.id)
    return msgs[-1]


# ---- fast: no model ----------------------------------------------------------------------------

def test_split_markdown_finds_code_blocks_even_while_streaming() -> None:
    text = "Here:\n```python\ndef f():\n    return 1\n```\nDone."
    segs = split_markdown(text)
    assert [(s.kind, s.lang) for s in segs] == [("text", ""), ("code", "python"), ("text", "")]
    assert segs[1].text == "def f():\n    return 1" and segs[2].text == "Done."
    assert split_markdown("a\n```js\nlet x") == [split_markdown("a")[0], split_markdown("```js\nlet x")[0]]
    assert split_markdown("```js\nlet x")[0].text == "let x"  # an unclosed fence runs to the end
    assert split_markdown("") == []


def test_a_missing_model_is_explained_and_nothing_is_lost(qtbot, chat, home: Path, tmp_path: Path) -> None:
    window, page = chat()
    gone = tmp_path / "gone.gguf"
    page.use_model(str(gone))
    assert page.banner.isVisibleTo(page) and "missing" in page.banner.text()
    assert "Pick another model" in page.banner.text()
    page.input.setPlainText("Hello?")
    page.send()
    assert page.input.toPlainText() == "Hello?"  # the text stays in the box
    assert page.store.messages(page.conv.id) == [] and not page.controller.busy
    assert page.store.conversation(page.conv.id).model == str(gone)
    folder = tmp_path / "folder"
    folder.mkdir()
    page.use_model(str(folder))
    assert "not a model folder" in page.banner.text()
    window.close()


def test_conversations_new_rename_search_delete_export(qtbot, chat, home: Path, tmp_path: Path,  # noqa: ANN001
                                                       monkeypatch) -> None:
    window, page = chat()
    first = page.conv
    page.store.add_message(first.id, "user", "Tell me about tides")
    page.store.add_message(first.id, "assistant", "Tides come from the **moon**.\n```python\nprint('moon')\n```")
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("Tides", True))
    page.rename_current()
    assert page.conv_list.currentItem().text() == "Tides"
    qtbot.keyClick(page, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)  # new chat
    assert page.conv.id != first.id and page.conv_list.count() == 2
    page.search.setText("moon")
    qtbot.waitUntil(lambda: page.conv_list.count() == 1)
    assert page.conv_list.item(0).text() == "Tides"
    page.search.clear()
    qtbot.waitUntil(lambda: page.conv_list.count() == 2)
    page.open_conversation(first.id)
    [_user, answer] = page.view.widgets.values()
    [block] = answer.code_blocks()
    assert block.code() == "print('moon')"
    qtbot.mouseClick(block.copy_button, Qt.MouseButton.LeftButton)
    assert QApplication.clipboard().text() == "print('moon')"
    md = page.export_to(tmp_path / "tides.md", "md").read_text()
    assert md.startswith("# Tides") and "Tides come from the **moon**." in md
    data = json.loads(page.export_to(tmp_path / "tides.json", "json").read_text())
    assert [m["content"] for m in data["messages"]][0] == "Tell me about tides"
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.No)
    page.delete_current()
    assert page.conv_list.count() == 2  # "No" keeps it
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    page.delete_current()
    assert page.conv_list.count() == 1 and page.conv.id != first.id
    window.close()


def test_settings_are_per_conversation(qtbot, chat, home: Path) -> None:
    window, page = chat()
    a = page.conv
    page.system_edit.setPlainText("Answer in French.")
    page.temperature.setValue(0.3)
    page.seed.setValue(42)
    page.new_conversation()
    page.temperature.setValue(1.1)
    page.seed.setValue(-1)
    page.open_conversation(a.id)  # switching saves the other chat's settings first
    assert page.system_edit.toPlainText() == "Answer in French." and page.temperature.value() == pytest.approx(0.3)
    assert page.seed.value() == 42
    stored = page.store.conversation(a.id)
    assert stored.sampling["seed"] == 42 and stored.system == "Answer in French."
    others = [c for c in page.store.conversations() if c.id != a.id]
    assert others[0].sampling["temperature"] == pytest.approx(1.1) and others[0].sampling["seed"] is None
    window.close()


def test_a_second_window_sees_the_other_ones_changes(qtbot, chat, home: Path) -> None:
    from bitsmith.app.chat.store import ChatStore

    window, page = chat()
    other = ChatStore(page.store.path)  # what a second Bitsmith window holds
    conv = other.create("From the other window")
    page.check_external_changes()
    assert [page.conv_list.item(i).text() for i in range(page.conv_list.count())][0] == "From the other window"
    mine = page.conv.id
    other.add_message(mine, "user", "written elsewhere")
    page.check_external_changes()
    assert [w.message.content for w in page.view.widgets.values()] == ["written elsewhere"]
    other.delete(mine)
    page.check_external_changes()
    assert page.conv.id == conv.id
    other.close()
    window.close()


# ---- slow: a real model in a worker ------------------------------------------------------------

@pytest.mark.slow
def test_a_chat_streams_is_stopped_and_survives_closing_the_window(qtbot, chat, home: Path,  # noqa: ANN001
                                                                  bundled_gguf: Path) -> None:
    window, page = chat()
    assert page.conv.model == BUNDLED
    _configure(page, max_tokens=400)
    page.input.setPlainText(LONG_PROMPT)
    page.input.setFocus()
    qtbot.keyClick(page.input, Qt.Key.Key_Return)  # Enter sends
    assert page.controller.busy and page.stop_button.isEnabled() and not page.send_button.isEnabled()
    answer_id = _answer(page).id
    widget = page.view.widgets[answer_id]
    qtbot.waitUntil(lambda: len(widget.message.content) > 20, timeout=120_000)

    # What the window shows is already in the database (another connection sees it).
    db = sqlite3.connect(page.store.path)
    shown = widget.message.content
    stored = db.execute("SELECT content, status FROM messages WHERE id = ?", (answer_id,)).fetchone()
    assert stored[0] == shown and stored[1] == "streaming"
    db.close()

    qtbot.mouseClick(page.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not page.controller.busy, timeout=60_000)
    final = page.store.message(answer_id)
    assert final.status == "stopped" and final.meta["reason"] == "stopped"
    assert 0 < final.meta["completion_tokens"] < 400 and final.content == widget.message.content
    assert final.content.startswith(shown)
    assert "tok/s" in page.speed_label.text() and "stopped" in widget.meta_label.text()
    assert page.conv_list.currentItem().text().startswith("Write a very long story")
    assert page.send_button.isEnabled() and not page.stop_button.isEnabled()
    conv_id = page.conv.id
    window.close()

    window2, page2 = chat()
    assert page2.conv.id == conv_id  # the newest chat opens
    texts = [w.message.content for w in page2.view.widgets.values()]
    assert texts == [LONG_PROMPT, final.content]
    window2.close()


@pytest.mark.slow
def test_regenerate_edit_and_resend_with_a_real_model(qtbot, chat, home: Path, bundled_gguf: Path) -> None:
    window, page = chat()
    _configure(page, max_tokens=12)
    page.input.setPlainText("Name a colour.")
    page.send()
    qtbot.waitUntil(lambda: not page.controller.busy, timeout=120_000)
    first = _answer(page)
    assert first.status == "complete" and first.content and first.meta["completion_tokens"] <= 12
    assert page.status_label.text().startswith("Ready")

    old_ids = set(page.view.widgets)
    page.view.widgets[first.id].regen_button.click()
    qtbot.waitUntil(lambda: not page.controller.busy, timeout=120_000)
    msgs = page.store.messages(page.conv.id)
    assert [m.role for m in msgs] == ["user", "assistant"] and msgs[0].content == "Name a colour."
    # A new answer replaced the old one. (Its text may differ even at temperature 0: llama.cpp's greedy answer
    # to the same prompt changes once its KV cache holds that prompt; the engine's business, not the page's.)
    assert msgs[1].id != first.id and msgs[1].status == "complete" and msgs[1].content
    assert 0 < msgs[1].meta["completion_tokens"] <= 12
    assert not (set(page.view.widgets) & old_ids)

    user_id = msgs[0].id
    page.view.widgets[user_id].edit_button.click()
    assert page.input.toPlainText() == "Name a colour." and page.edit_note.isVisibleTo(page)
    page.input.setPlainText("Name an animal.")
    page.send()
    qtbot.waitUntil(lambda: not page.controller.busy, timeout=120_000)
    msgs = page.store.messages(page.conv.id)
    assert [m.content for m in msgs][0] == "Name an animal." and len(msgs) == 2
    assert msgs[1].status == "complete" and msgs[1].content
    window.close()


@pytest.mark.slow
def test_a_worker_that_dies_mid_answer_keeps_the_text_and_the_next_message_restarts_it(
        qtbot, chat, home: Path, bundled_gguf: Path) -> None:
    window, page = chat()
    _configure(page, max_tokens=400)
    page.input.setPlainText(LONG_PROMPT)
    page.send()
    answer_id = _answer(page).id
    widget = page.view.widgets[answer_id]
    qtbot.waitUntil(lambda: len(widget.message.content) > 10, timeout=120_000)
    page.controller.job.kill()
    qtbot.waitUntil(lambda: not page.controller.busy, timeout=60_000)
    dead = page.store.message(answer_id)
    assert dead.status == "interrupted" and len(dead.content) > 10
    assert page.banner.isVisibleTo(page) and "stopped unexpectedly" in page.banner.text()
    assert "conversation is saved" in page.banner.text()

    page.max_tokens.setValue(5)
    page.input.setPlainText("Thanks. Say bye.")
    page.send()
    qtbot.waitUntil(lambda: not page.controller.busy, timeout=120_000)
    msgs = page.store.messages(page.conv.id)
    assert [m.status for m in msgs] == ["complete", "interrupted", "complete", "complete"]
    assert msgs[1].content == dead.content and msgs[3].content
    window.close()


@pytest.mark.slow
def test_closing_the_window_mid_answer_keeps_the_partial_answer(qtbot, chat, home: Path, bundled_gguf: Path) -> None:
    window, page = chat()
    _configure(page, max_tokens=400)
    page.input.setPlainText(LONG_PROMPT)
    page.send()
    answer_id = _answer(page).id
    widget = page.view.widgets[answer_id]
    qtbot.waitUntil(lambda: len(widget.message.content) > 10, timeout=120_000)
    job = page.controller.job
    window.close()
    assert not job.running or job.handle.returncode is not None  # the worker is gone with the window
    window2, page2 = chat()
    kept = page2.store.message(answer_id)
    assert kept.status == "stopped" and kept.content.startswith(widget.message.content[:10])
    assert [w.message.id for w in page2.view.widgets.values()][-1] == answer_id
    window2.close()


def test_the_switcher_runs_a_library_folder_on_the_native_backend_streams_and_stops(  # noqa: ANN001
        qtbot, chat, home: Path, tiny_models: Path, bundled_gguf: Path) -> None:
    import shutil

    folder = home / "models" / "tiny-3bpw"
    shutil.copytree(tiny_models / "q", folder)  # a quantized Bitsmith folder (a tiny random Llama: fast on a CPU)
    gguf = home / "models" / "smol.gguf"
    gguf.symlink_to(bundled_gguf)
    window, page = chat()
    combo = page.model_combo
    combo.showPopup()  # opening the list re-reads the models folder
    combo.hidePopup()
    index, gguf_index = combo.findData(str(folder)), combo.findData(str(gguf))
    assert index > 0 and combo.itemText(index).startswith("tiny-3bpw (Bitsmith · ")
    assert gguf_index > 0 and combo.itemText(gguf_index) == "smol.gguf (GGUF)"
    # The GGUF goes to llama.cpp; the folder cannot, so choosing it takes the backend back to one that can run it.
    page.backend_combo.setCurrentIndex(page.backend_combo.findData("llama.cpp"))
    combo.setCurrentIndex(index)
    combo.activated.emit(index)
    assert page.conv.model == str(folder) and page.backend_combo.currentData() == "auto"
    assert page.settings.get("chat/recent_models")[0] == str(folder)
    native = page.backend_combo.findData("native")
    page.backend_combo.setCurrentIndex(native)
    page.backend_combo.activated.emit(native)
    assert page.store.conversation(page.conv.id).backend == "native"
    page.temperature.setValue(0.0)
    page.max_tokens.setValue(4000)  # greedy never ends this model's answers: only Stop does
    page._save_settings()

    page.input.setPlainText("Tell me about the sea.")
    page.input.setFocus()
    qtbot.keyClick(page.input, Qt.Key.Key_Return)
    assert page.controller.busy and page.controller.job.params["backend"] == "native"
    assert page.controller.job.params["model"] == str(folder)
    assert page.controller.job.params["n_ctx"] == 2048  # the Settings page's 4096, capped at the model's own limit
    answer_id = _answer(page).id
    widget = page.view.widgets[answer_id]
    qtbot.waitUntil(lambda: len(widget.message.content) > 30 or not page.controller.busy, timeout=180_000)
    assert page.controller.busy, _answer(page).meta
    info = page.controller.model_info
    assert info["backend"] == "native" and info["quantized"] is True and info["device"] == "cpu"
    streamed = widget.message.content
    assert page.store.message(answer_id).content == streamed  # written as it streams
    qtbot.mouseClick(page.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not page.controller.busy, timeout=60_000)
    final = page.store.message(answer_id)
    assert final.status == "stopped" and final.meta["reason"] == "stopped"
    assert 0 < final.meta["completion_tokens"] < 4000 and final.content.startswith(streamed)
    assert final.content == widget.message.content and "stopped" in widget.meta_label.text()
    assert "tok/s" in page.speed_label.text() and page.send_button.isEnabled()
    assert page.controller.job is not None and page.controller.job.running  # the model stays loaded for the next turn
    window.close()


# ---- a full disk -------------------------------------------------------------------------------

def _full_disk(*_a, **_k):  # noqa: ANN202 - what ChatStore raises when SQLite cannot write
    from bitsmith.app.chat.store import StoreError

    raise StoreError("could not save to the conversation database: database or disk is full",
                     "free some disk space or close the other Bitsmith window, then try again")


def test_a_full_disk_when_sending_says_so_and_starts_nothing(qtbot, chat, home: Path, monkeypatch) -> None:  # noqa: ANN001
    window, page = chat()
    conv_id = page.conv.id
    monkeypatch.setattr(page.store, "add_message", _full_disk)
    page.input.setPlainText("hello")
    qtbot.mouseClick(page.send_button, Qt.MouseButton.LeftButton)
    assert not page.controller.busy and page.controller.job is None  # no worker started for nothing
    assert "was not sent" in page.banner.text() and "disk is full" in page.banner.text()
    assert "free some disk space" in page.banner.text() and page.input.toPlainText() == "hello"  # text kept
    monkeypatch.setattr(page.store, "create", _full_disk)
    page.new_conversation()
    assert page.conv.id == conv_id and "No new chat was started" in page.banner.text()
    window.close()


@pytest.mark.slow
def test_a_disk_that_fills_mid_answer_stops_it_and_frees_the_send_button(qtbot, chat, home: Path,  # noqa: ANN001
                                                                        bundled_gguf: Path, monkeypatch) -> None:
    window, page = chat()
    _configure(page, max_tokens=300)
    real_append, calls = page.store.append_text, []

    def fills_up(message_id: int, text: str) -> None:
        calls.append(text)
        if len(calls) > 5:
            _full_disk()
        real_append(message_id, text)

    monkeypatch.setattr(page.store, "append_text", fills_up)
    page.input.setPlainText(LONG_PROMPT)
    qtbot.mouseClick(page.send_button, Qt.MouseButton.LeftButton)
    answer_id = _answer(page).id
    qtbot.waitUntil(lambda: not page.controller.busy, timeout=120_000)
    assert "stopped because it could not be saved" in page.banner.text()
    assert page.send_button.isEnabled() and not page.stop_button.isEnabled()
    saved = page.store.message(answer_id)  # the last write that worked: five tokens, marked as failed
    assert saved.content == "".join(calls[:5]) and saved.status == "error"
    window.close()
