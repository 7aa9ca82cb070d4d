"""The Settings page through its widgets: values land in services.settings, the chat page and the jobs read them,
the models folder is checked, and the token is never written to the settings file."""

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

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
