"""Keyboard reach: every page by Ctrl+1 … Ctrl+6 with the keyboard landing on the page's main widget, and the main
actions of Models, Quantize and Chat reachable with Tab in a sensible order and started by keys alone."""

import importlib.util
import socket
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QFileDialog

from bitsmith.app.window import PAGES

_spec = importlib.util.spec_from_file_location("bitsmith_app_fake_models_keyboard",
                                               Path(__file__).with_name("fake_models.py"))
fake_models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake_models)


@pytest.fixture
def online(monkeypatch):  # noqa: ANN001, ANN201
    """Hub access on (the search field is enabled), with a Hub that has nothing: these tests are about keys."""
    import huggingface_hub.constants as hf_constants

    from bitsmith.engine import hub

    monkeypatch.setattr(hub, "search_models", lambda *a, **k: [])

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)


def _key(qtbot, key: Qt.Key, modifier: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier) -> None:  # noqa: ANN001
    """Press a key where the keyboard focus is, as a user would."""
    qtbot.keyClick(QApplication.focusWidget() or QApplication.activeWindow(), key, modifier)


def _tabs(qtbot, start, n: int) -> list:  # noqa: ANN001
    """`start` and the next `n` widgets that Tab moves the focus to."""
    start.setFocus()
    assert QApplication.focusWidget() is start, f"{start} cannot take the focus"
    seen = [start]
    for _ in range(n):
        _key(qtbot, Qt.Key.Key_Tab)
        seen.append(QApplication.focusWidget())
    return seen


def _cycle(qtbot, start, limit: int = 80) -> list:  # noqa: ANN001
    """The whole Tab chain from `start` until the focus comes back to it."""
    seen = _tabs(qtbot, start, 0)
    for _ in range(limit):
        _key(qtbot, Qt.Key.Key_Tab)
        if QApplication.focusWidget() is start:
            return seen
        seen.append(QApplication.focusWidget())
    raise AssertionError("Tab never came back to where it started")


def _order(chain: list, widgets: list) -> list:
    """The widgets of `widgets` in the order Tab reaches them."""
    return [w for w in chain if w in widgets]


def test_every_page_is_reached_by_its_shortcut_and_the_keyboard_lands_on_its_main_widget(
        qtbot, open_window, home: Path, online) -> None:  # noqa: ANN001
    window = open_window()
    expected = {"models": "search_edit", "quantize": "bundled_radio", "finetune": "model_combo", "chat": "input",
                "jobs": "table", "settings": "models_edit"}
    assert [name for name, _label in PAGES] == list(expected)
    for _round in range(2):  # the first time builds each page, the second finds it built
        for i, (name, label) in enumerate(PAGES):
            _key(qtbot, Qt.Key(Qt.Key.Key_1 + i), Qt.KeyboardModifier.ControlModifier)
            page = window.pages[name]
            assert window.current_page_name() == name and window.stack.currentWidget() is page
            assert QApplication.focusWidget() is getattr(page, expected[name]), (name, QApplication.focusWidget())
            assert window.sidebar.item(i).toolTip() == f"{label} (Ctrl+{i + 1})"
    # The Go menu lists each page with its shortcut, so they can be found without knowing them.
    go = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Go")
    assert [(a.text(), a.shortcut().toString()) for a in go.actions()] == [
        (f"Go to {label}", f"Ctrl+{i + 1}") for i, (_n, label) in enumerate(PAGES)]
    window.close()


def test_models_page_search_filters_and_library_by_keyboard(qtbot, open_window, home: Path, online,  # noqa: ANN001
                                                            monkeypatch) -> None:
    models = home / "models"
    models.mkdir(parents=True)
    (models / "a.gguf").write_bytes(b"GGUF" + bytes(100))
    window = open_window("chat")
    _key(qtbot, Qt.Key.Key_1, Qt.KeyboardModifier.ControlModifier)
    page = window.pages["models"]
    # From the search field, Tab walks the search row in reading order, then into the results.
    chain = _tabs(qtbot, page.search_edit, 6)
    assert chain == [page.search_edit, page.sort_combo, page.size_combo, page.family_combo, page.licence_combo,
                     page.budget_spin, page.hub_table]
    page.lib_table.setFocus()  # Ctrl+F comes back to the search field from anywhere on the page
    _key(qtbot, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    assert QApplication.focusWidget() is page.search_edit
    # The library: Import (Ctrl+I) and Refresh are buttons in the chain before the list; Enter on a row chats.
    chain = _tabs(qtbot, page.import_button, 2)
    assert chain == [page.import_button, page.refresh_button, page.lib_table]
    asked: list[str] = []
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (asked.append(a[1]), ("", ""))[1])
    _key(qtbot, Qt.Key.Key_I, Qt.KeyboardModifier.ControlModifier)
    assert asked == ["Import a GGUF model"]
    page.lib_table.setFocus()
    page.lib_table.selectRow(0)
    _key(qtbot, Qt.Key.Key_Return)
    assert window.current_page_name() == "chat" and window.pages["chat"].model_combo.currentData() == str(
        models / "a.gguf")
    window.close()


def test_quantize_wizard_next_back_and_start_by_keyboard(qtbot, open_window, home: Path, tmp_path: Path,  # noqa: ANN001
                                                         gpu_profile) -> None:
    folder = tmp_path / "my-llama"
    folder.mkdir()
    for name, data in fake_models.llama_files(2, 256, 512, 4, 4, 1000).items():
        (folder / name).write_bytes(data)
    window = open_window("chat")
    _key(qtbot, Qt.Key.Key_2, Qt.KeyboardModifier.ControlModifier)
    page = window.pages["quantize"]
    page.services.hardware.profile = gpu_profile()
    # Step 1: the model choice, then Next (Back is hidden on the first step, so it is not a Tab stop).
    chain = _tabs(qtbot, page.bundled_radio, 5)
    assert chain == [page.bundled_radio, page.local_edit, chain[2], chain[3], page.hub_edit, page.next_button]
    _key(qtbot, Qt.Key.Key_Down)  # arrows move between the radio buttons
    _tabs(qtbot, page.local_edit, 0)
    qtbot.keyClicks(page.local_edit, str(folder))
    assert page.local_radio.isChecked()
    page.next_button.setFocus()
    _key(qtbot, Qt.Key.Key_Space)  # a focused button is pressed with Space
    qtbot.waitUntil(lambda: page.step() == 1, timeout=60_000)
    # Step 2: Back comes before Next in the chain; Ctrl+Enter goes on from anywhere on the page.
    order = [page.gpu_spin, page.ram_spin, page.back_button, page.next_button]
    assert _order(_cycle(qtbot, page.gpu_spin), order) == order and page.next_button.text() == "Next"
    _key(qtbot, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert page.step() == 2 and page.next_button.text() == "Start quantizing"
    # Step 3: the budget's controls in reading order, then Back, then Start.
    order = [page.slider, page.bpw_spin, page.preset_buttons[2.5], page.preset_combo, page.out_edit,
             page.back_button, page.next_button]
    assert _order(_cycle(qtbot, page.slider), order) == order
    _key(qtbot, Qt.Key.Key_Right)  # the slider moves with the arrows
    assert page.bpw() == pytest.approx(page.slider.value() / 100) and page.slider.hasFocus()
    _key(qtbot, Qt.Key.Key_Left, Qt.KeyboardModifier.AltModifier)  # Alt+Left: back
    assert page.step() == 1
    _key(qtbot, Qt.Key.Key_Enter, Qt.KeyboardModifier.ControlModifier)
    assert page.step() == 2 and page.job is None  # nothing starts until Start itself is pressed
    window.close()


def test_chat_input_send_and_stop_by_keyboard(qtbot, open_window, home: Path) -> None:  # noqa: ANN001
    window = open_window("models")
    _key(qtbot, Qt.Key.Key_4, Qt.KeyboardModifier.ControlModifier)
    page = window.pages["chat"]
    assert QApplication.focusWidget() is page.input
    page.input.setPlainText("Hello")
    # Tab leaves the message box (no tab character typed into it) for Send; Stop is skipped while nothing runs.
    chain = _tabs(qtbot, page.input, 2)
    assert chain[:2] == [page.input, page.send_button] and chain[2] is not page.stop_button
    assert page.input.toPlainText() == "Hello"
    page.controller.busy_changed.emit(True)  # an answer is being written: Stop takes Send's place
    chain = _tabs(qtbot, page.input, 1)
    assert chain == [page.input, page.stop_button]
    page.controller.busy_changed.emit(False)
    # Shift+Tab goes back the same way; Ctrl+L returns to the message box from anywhere on the page.
    page.send_button.setFocus()
    _key(qtbot, Qt.Key.Key_Backtab, Qt.KeyboardModifier.ShiftModifier)
    assert QApplication.focusWidget() is page.input
    page.search.setFocus()
    _key(qtbot, Qt.Key.Key_L, Qt.KeyboardModifier.ControlModifier)
    assert QApplication.focusWidget() is page.input
    window.close()
