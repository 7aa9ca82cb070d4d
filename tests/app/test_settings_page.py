"""The Settings page through its widgets: values land in services.settings, the chat page and the jobs read them,
the models folder is checked, choosing another one offers to move the models (move, keep, cancel; refused while a
job runs or inside the old folder; progress, cancel, a failure that keeps the old folder), and the token is never
written to the settings file."""

import errno
import os
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QMessageBox

import bitsmith.app.move_models as mm
import bitsmith.app.pages.settings as settings_module
from bitsmith.app.pages.settings import SettingsPage
from bitsmith.app.services import Services, Settings


class MemoryKeyring:
    """Stands in for the OS keyring service (the real `keyring` package is not installed on the test machine)."""

    def __init__(self) -> None:
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, user: str) -> str | None:
        return self.store.get((service, user))

    def set_password(self, service: str, user: str, secret: str) -> None:
        self.store[(service, user)] = secret

    def delete_password(self, service: str, user: str) -> None:
        self.store.pop((service, user))


def _page(qtbot, services: Services | None = None) -> SettingsPage:  # noqa: ANN001
    page = SettingsPage(services or Services())
    qtbot.addWidget(page)
    page.show()
    return page


def test_values_are_saved_and_read_by_the_chat_page_and_jobs(qtbot, home: Path, tmp_path: Path) -> None:
    page = _page(qtbot)
    s = page.services.settings
    page.budget_spin.setValue(3.0)
    page.ctx_spin.setValue(8192)
    page.top_k.setValue(20)
    page.min_p.setValue(0.1)
    page.rep.setValue(1.2)
    assert Settings().get("quantize/default_bpw") == 3.0 and Settings().get("chat/n_ctx") == 8192
    assert s.get("chat/sampling_defaults") == {"top_k": 20, "min_p": 0.1, "repetition_penalty": 1.2}

    from bitsmith.app.pages.chat import ChatPage

    chat = ChatPage(page.services)
    qtbot.addWidget(chat)
    sampling = chat.current_sampling()
    assert sampling["top_k"] == 20 and sampling["min_p"] == 0.1 and sampling["repetition_penalty"] == 1.2
    assert chat.controller.n_ctx == 8192

    page.theme_combo.setCurrentIndex(page.theme_combo.findData("dark"))
    assert s.get("theme") == "dark" and QApplication.instance().property("bitsmith_dark") is True
    page.theme_combo.setCurrentIndex(page.theme_combo.findData("light"))

    target = tmp_path / "elsewhere" / "models"
    page.models_edit.setText(str(target))
    page.models_edit.setFocus()
    qtbot.keyClick(page.models_edit, Qt.Key.Key_Return)
    assert target.is_dir() and page.services.models_dir() == target.resolve()
    assert page.services.jobs.env["BITSMITH_MODELS_DIR"] == str(target.resolve())
    assert Services().jobs.env["BITSMITH_MODELS_DIR"] == str(target.resolve())  # survives a restart
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    page.set_models_dir(str(blocker / "sub"))
    assert "Cannot use" in page.models_note.text() and page.services.models_dir() == target.resolve()
    page.set_models_dir("")
    assert page.services.models_dir() == home.resolve() / "models"


def test_without_a_keyring_the_page_says_the_token_is_not_stored(qtbot, home: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(settings_module, "keyring_backend", lambda: None)
    page = _page(qtbot)
    assert "cannot store the token" in page.token_status.text() and not page.save_token_button.isEnabled()


def test_a_token_goes_to_the_keyring_and_never_to_the_settings_file(qtbot, home: Path, monkeypatch) -> None:  # noqa: ANN001
    ring = MemoryKeyring()
    monkeypatch.setattr(settings_module, "keyring_backend", lambda: ring)
    page = _page(qtbot)
    assert "No token stored" in page.token_status.text()
    qtbot.keyClicks(page.token_edit, "hf_secret_token_123")
    qtbot.mouseClick(page.save_token_button, Qt.MouseButton.LeftButton)
    assert ring.store == {("Bitsmith", "huggingface-token"): "hf_secret_token_123"}
    assert page.token_edit.text() == "" and "stored in the system keyring" in page.token_status.text()
    page.budget_spin.setValue(2.75)  # force a settings write
    assert "hf_secret" not in (home / "settings.json").read_text()
    qtbot.mouseClick(page.forget_token_button, Qt.MouseButton.LeftButton)
    assert ring.store == {} and "No token stored" in page.token_status.text()


# -- moving the models folder ------------------------------------------------------------------------

def _library(root: Path) -> Path:
    """A models folder with three models (HF folder, Bitsmith folder, .gguf) and an unfinished download."""
    hf = root / "acme--tiny"
    hf.mkdir(parents=True)
    (hf / "config.json").write_text("{}")
    (hf / "model.safetensors").write_bytes(os.urandom(200_000))
    q = root / "smol-2.50bpw"
    q.mkdir()
    (q / "bitsmith.json").write_text("{}")
    (q / "model.safetensors").write_bytes(os.urandom(300_000))
    (root / "solo.Q4_1.gguf").write_bytes(b"GGUF" + os.urandom(100_000))
    (root / ".acme--big.partial").mkdir()
    (root / ".acme--big.lock").write_text("")
    return root


NAMES = ["acme--tiny", "smol-2.50bpw", "solo.Q4_1.gguf"]


def _answer(monkeypatch: pytest.MonkeyPatch, answer: str) -> list[tuple[str, str]]:
    """Answer the move question with `answer`; the questions asked (text, details) are returned."""
    asked: list[tuple[str, str]] = []

    def ask(parent, title, text, details, choices, default, escape):  # noqa: ANN001, ANN202
        assert choices == ["Move", "Keep them there", "Cancel"] and default == "Move" and escape == "Cancel"
        asked.append((text, details))
        return answer

    monkeypatch.setattr(settings_module, "ask_choice", ask)
    return asked


def _warnings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    shown: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda parent, title, text, *a: shown.append(text))
    return shown


def _content(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_moving_the_models_folder_moves_the_models_and_the_library_follows(qtbot, home: Path, tmp_path: Path,
                                                                         monkeypatch) -> None:  # noqa: ANN001
    from bitsmith.app.pages.models import ModelsPage

    old = _library(home / "models")
    before = {n: _content(old / n) for n in NAMES[:2]}
    services = Services()
    models = ModelsPage(services)
    qtbot.addWidget(models)
    assert sorted(m["path"].parent for m in models.library) == [old] * 3
    page = _page(qtbot, services)
    asked = _answer(monkeypatch, "Move")
    new = tmp_path / "disk2" / "models"
    page.set_models_dir(str(new))
    assert asked[0][0] == "Move your 3 models (586 KB) to the new folder?"
    assert f"From: {old}" in asked[0][1] and "1 unfinished download" in asked[0][1]
    qtbot.waitUntil(lambda: not page.moving, timeout=10_000)
    assert services.models_dir() == new.resolve() and page.models_edit.text() == str(new.resolve())
    assert services.jobs.env["BITSMITH_MODELS_DIR"] == str(new.resolve())
    assert sorted(p.name for p in new.iterdir()) == NAMES
    assert {n: _content(new / n) for n in NAMES[:2]} == before
    assert sorted(p.name for p in old.iterdir()) == [".acme--big.lock", ".acme--big.partial"]
    assert "Moved to" in page.models_note.text() and not page.move_bar.isVisible()
    assert page.models_edit.isEnabled()
    # the Models page re-reads the folder when the setting changes, and so does its Refresh
    assert sorted(m["path"].parent for m in models.library) == [new.resolve()] * 3
    assert str(new.resolve()) in models.folder_label.text()
    models.refresh_library()
    assert sorted(m["name"] for m in models.library) == ["acme/tiny", "smol-2.50bpw", "solo.Q4_1.gguf"]


def test_cancel_leaves_the_setting_and_keep_switches_without_moving(qtbot, home: Path, tmp_path: Path,
                                                                   monkeypatch) -> None:  # noqa: ANN001
    old = _library(home / "models")
    page = _page(qtbot)
    _answer(monkeypatch, "Cancel")
    new = tmp_path / "new-models"
    page.models_edit.setText(str(new))
    page.set_models_dir(str(new))
    assert page.services.settings.get("models_dir") is None and page.models_edit.text() == str(old)
    assert not new.exists()  # the folder made only to test it was removed again
    _answer(monkeypatch, "Keep them there")
    page.set_models_dir(str(new))
    assert page.services.models_dir() == new.resolve() and not page.moving
    assert sorted(p.name for p in old.iterdir())[2:] == NAMES and list(new.iterdir()) == []
    assert f"stay in {old}" in page.models_note.text()


def test_a_folder_inside_the_old_one_or_around_it_is_refused(qtbot, home: Path, monkeypatch) -> None:  # noqa: ANN001
    old = _library(home / "models")
    page = _page(qtbot)
    _answer(monkeypatch, "Move")
    shown = _warnings(monkeypatch)
    page.set_models_dir(str(old / "sub"))
    assert "inside the current models folder" in shown[-1] and not (old / "sub").exists()
    page.set_models_dir(str(home))
    assert f"the current models folder {old} is inside {home}" in shown[-1]
    assert page.services.settings.get("models_dir") is None and sorted(p.name for p in old.iterdir())[2:] == NAMES


def test_a_running_job_blocks_the_move_and_is_named(qtbot, home: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    old = _library(home / "models")
    page = _page(qtbot)
    asked = _answer(monkeypatch, "Move")
    shown = _warnings(monkeypatch)
    page.services.jobs.jobs.append(SimpleNamespace(kind="quantize", running=True,
                                                   params={"source": "HuggingFaceTB/SmolLM2-135M"}))
    page.services.jobs.jobs.append(SimpleNamespace(kind="download", running=False, params={"model": "acme/x"}))
    page.set_models_dir(str(tmp_path / "new"))
    assert asked == [] and "a quantization of HuggingFaceTB/SmolLM2-135M" in shown[-1]
    assert "Wait for it to finish or cancel it on the Jobs page" in shown[-1] and "download" not in shown[-1]
    assert page.services.settings.get("models_dir") is None and sorted(p.name for p in old.iterdir())[2:] == NAMES


def test_a_failure_mid_copy_keeps_the_old_folder_and_says_what_moved(qtbot, home: Path, tmp_path: Path,
                                                                     monkeypatch) -> None:  # noqa: ANN001
    old = _library(home / "models")
    smol = _content(old / "smol-2.50bpw")
    page = _page(qtbot)
    _answer(monkeypatch, "Move")
    shown = _warnings(monkeypatch)

    def cross_device(src, dst):  # noqa: ANN001, ANN202
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    real_copy = shutil.copyfileobj

    def full_disk(fsrc, fdst, length=0):  # noqa: ANN001, ANN202
        if Path(fsrc.name).parent.name == "smol-2.50bpw" and Path(fsrc.name).name == "model.safetensors":
            fdst.write(fsrc.read(5000))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(fsrc, fdst, length)

    monkeypatch.setattr(mm.os, "rename", cross_device)
    monkeypatch.setattr(mm.shutil, "copyfileobj", full_disk)
    new = tmp_path / "usb" / "models"
    page.set_models_dir(str(new))
    qtbot.waitUntil(lambda: not page.moving, timeout=10_000)
    assert page.services.settings.get("models_dir") is None and page.models_edit.text() == str(old)
    assert sorted(p.name for p in new.iterdir()) == ["acme--tiny"]  # no partial copy of smol
    assert _content(old / "smol-2.50bpw") == smol and (old / "solo.Q4_1.gguf").is_file()
    text = shown[-1]
    assert "Moved to" in text and "acme--tiny" in text and "the disk of the new folder is full" in text
    assert "Not moved, still in" in text and "solo.Q4_1.gguf" in text and f"still uses {old}" in text
    assert text == page.models_note.text()


def test_cancel_during_the_move_shows_progress_and_keeps_everything(qtbot, home: Path, tmp_path: Path,
                                                                    monkeypatch) -> None:  # noqa: ANN001
    old = _library(home / "models")
    page = _page(qtbot)
    _answer(monkeypatch, "Move")
    shown = _warnings(monkeypatch)
    entered, gate = threading.Event(), threading.Event()
    real_copy = shutil.copyfileobj

    def slow_copy(fsrc, fdst, length=0):  # noqa: ANN001, ANN202
        entered.set()
        gate.wait(10)
        return real_copy(fsrc, fdst, length)

    def cross_device(src, dst):  # noqa: ANN001, ANN202
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(mm.os, "rename", cross_device)
    monkeypatch.setattr(mm.shutil, "copyfileobj", slow_copy)
    new = tmp_path / "usb" / "models"
    page.set_models_dir(str(new))
    try:
        qtbot.waitUntil(entered.is_set, timeout=10_000)
        assert page.moving and page.move_bar.isVisible() and not page.models_edit.isEnabled()
        assert "of 3 items" in page.move_label.text() and page.services.settings.get("models_dir") is None
        page.set_models_dir(str(tmp_path / "elsewhere"))  # ignored while moving
        assert not (tmp_path / "elsewhere").exists()
        qtbot.mouseClick(page.move_cancel, Qt.MouseButton.LeftButton)
        assert page.move_label.text() == "Cancelling…"
    finally:
        gate.set()
    qtbot.waitUntil(lambda: not page.moving, timeout=10_000)
    assert page.services.settings.get("models_dir") is None and "You cancelled" in shown[-1]
    assert list(new.iterdir()) == [] and sorted(p.name for p in old.iterdir())[2:] == NAMES


def test_the_move_question_returns_the_button_the_user_clicks(qtbot, home: Path) -> None:  # noqa: ANN001
    from PySide6.QtCore import QTimer

    page = _page(qtbot)
    seen = {}

    def click(label: str) -> None:
        box = QApplication.activeModalWidget()
        seen["text"], seen["buttons"] = box.text(), sorted(b.text() for b in box.buttons())
        next(b for b in box.buttons() if b.text() == label).click()

    for label in ("Keep them there", "Cancel", "Move"):
        QTimer.singleShot(0, lambda label=label: click(label))
        assert settings_module.ask_choice(page, "Move your models?", "Move your 3 models?", "details",
                                          ["Move", "Keep them there", "Cancel"], "Move", "Cancel") == label
    assert seen == {"text": "Move your 3 models?", "buttons": ["Cancel", "Keep them there", "Move"]}
