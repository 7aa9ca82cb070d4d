"""The Settings page: models folder, default budget, theme, chat context and sampling defaults, Hugging Face
token. Every change is saved at once in services.settings (the other pages read it from there); the token goes
to the OS keyring when the `keyring` package and a backend exist, and is never written to settings or logs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from bitsmith.engine import paths

from ..theme import THEMES, apply_theme

KEYRING_SERVICE = "Bitsmith"
KEYRING_USER = "huggingface-token"
SAMPLING_DEFAULTS = {"top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1}  # llama.cpp's chat defaults


def keyring_backend() -> Any:
    """The keyring module when it can store secrets here, else None."""
    try:
        import keyring
        from keyring.backends import fail
    except Exception:  # noqa: BLE001 - not installed or broken: the page says the token is not stored
        return None
    try:
        if isinstance(keyring.get_keyring(), fail.Keyring):
            return None
    except Exception:  # noqa: BLE001
        return None
    return keyring


class SettingsPage(QWidget):
    """A form over services.settings (see the module docstring)."""

    def __init__(self, services: Any) -> None:
        super().__init__()
        self.services = services
        s = services.settings
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        body = QWidget()
        v = QVBoxLayout(body)
        v.setContentsMargins(18, 14, 18, 12)
        title = QLabel("Settings")
        title.setStyleSheet("font-size: 17px; font-weight: 600;")
        v.addWidget(title)

        storage = QGroupBox("Storage")
        f = QFormLayout(storage)
        row = QHBoxLayout()
        self.models_edit = QLineEdit(str(services.models_dir()))
        self.models_edit.editingFinished.connect(lambda: self.set_models_dir(self.models_edit.text()))
        browse = QPushButton("Choose…")
        browse.clicked.connect(self._browse_models)
        reset = QPushButton("Default")
        reset.clicked.connect(lambda: self.set_models_dir(""))
        row.addWidget(self.models_edit, 1)
        row.addWidget(browse)
        row.addWidget(reset)
        f.addRow("Models folder", row)
        self.models_note = QLabel("New downloads and quantized models go here; existing ones stay where they are.")
        self.models_note.setObjectName("muted")
        self.models_note.setWordWrap(True)
        f.addRow("", self.models_note)
        data = QLabel(str(services.data_dir))
        data.setObjectName("muted")
        f.addRow("Data folder", data)
        v.addWidget(storage)

        look = QGroupBox("Quantize and appearance")
        f = QFormLayout(look)
        self.budget_spin = QDoubleSpinBox()
        self.budget_spin.setRange(2.2, 4.25)
        self.budget_spin.setDecimals(2)
        self.budget_spin.setSingleStep(0.05)
        self.budget_spin.setSuffix(" bits per weight")
        self.budget_spin.setValue(float(s.get("quantize/default_bpw", 2.5) or 2.5))
        self.budget_spin.valueChanged.connect(lambda v_: s.set("quantize/default_bpw", round(v_, 2)))
        f.addRow("Default budget", self.budget_spin)
        self.theme_combo = QComboBox()
        for t in THEMES:
            self.theme_combo.addItem({"system": "Follow the system"}.get(t, t.capitalize()), t)
        self.theme_combo.setCurrentIndex(max(self.theme_combo.findData(s.get("theme", "system")), 0))
        self.theme_combo.currentIndexChanged.connect(self._theme_changed)
        f.addRow("Theme", self.theme_combo)
        v.addWidget(look)

        chat = QGroupBox("Chat defaults")
        f = QFormLayout(chat)
        self.ctx_spin = QSpinBox()
        self.ctx_spin.setRange(512, 131072)
        self.ctx_spin.setSingleStep(1024)
        self.ctx_spin.setSuffix(" tokens")
        self.ctx_spin.setValue(int(s.get("chat/n_ctx", 4096) or 4096))
        self.ctx_spin.valueChanged.connect(lambda v_: s.set("chat/n_ctx", int(v_)))
        f.addRow("Context size", self.ctx_spin)
        sampling = {**SAMPLING_DEFAULTS, **(s.get("chat/sampling_defaults") or {})}
        self.top_k = QSpinBox()
        self.top_k.setRange(0, 1000)
        self.top_k.setValue(int(sampling["top_k"]))
        self.top_k.setToolTip("0 switches the filter off")
        self.min_p = QDoubleSpinBox()
        self.min_p.setRange(0.0, 1.0)
        self.min_p.setDecimals(3)
        self.min_p.setSingleStep(0.01)
        self.min_p.setValue(float(sampling["min_p"]))
        self.min_p.setToolTip("0 switches the filter off")
        self.rep = QDoubleSpinBox()
        self.rep.setRange(1.0, 2.0)
        self.rep.setDecimals(2)
        self.rep.setSingleStep(0.05)
        self.rep.setValue(float(sampling["repetition_penalty"]))
        self.rep.setToolTip("1.0 switches the penalty off")
        for w in (self.top_k, self.min_p, self.rep):
            w.valueChanged.connect(self._save_sampling)
        f.addRow("Top-k", self.top_k)
        f.addRow("Min-p", self.min_p)
        f.addRow("Repetition penalty", self.rep)
        note = QLabel("Context size applies from the next start of a chat model; sampling applies to the next answer.")
        note.setObjectName("muted")
        note.setWordWrap(True)
        f.addRow("", note)
        v.addWidget(chat)

        hub = QGroupBox("Hugging Face")
        f = QFormLayout(hub)
        row = QHBoxLayout()
        self.token_edit = QLineEdit()
        self.token_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.token_edit.setPlaceholderText("hf_… (needed for gated models such as Llama)")
        self.save_token_button = QPushButton("Save token")
        self.save_token_button.clicked.connect(self.save_token)
        self.forget_token_button = QPushButton("Forget")
        self.forget_token_button.clicked.connect(self.forget_token)
        row.addWidget(self.token_edit, 1)
        row.addWidget(self.save_token_button)
        row.addWidget(self.forget_token_button)
        f.addRow("Access token", row)
        self.token_status = QLabel("")
        self.token_status.setWordWrap(True)
        self.token_status.setObjectName("muted")
        f.addRow("", self.token_status)
        tele = QLabel("Telemetry: none. Bitsmith sends nothing anywhere; it only contacts the Hub when you search "
                      "or download.")
        tele.setObjectName("muted")
        tele.setWordWrap(True)
        f.addRow("", tele)
        v.addWidget(hub)
        v.addStretch(1)
        scroll.setWidget(body)
        outer.addWidget(scroll)
        self.keyring = keyring_backend()
        self._show_token_state()
        self._apply_models_env()

    # -- models folder ----------------------------------------------------------------------------
    def _browse_models(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose the models folder", str(self.services.models_dir()))
        if path:
            self.set_models_dir(path)

    def set_models_dir(self, text: str) -> None:
        """Use `text` as the models folder ('' for the default); it must be creatable and writable."""
        text = text.strip()
        if not text:
            self.services.settings.set("models_dir", None)
        else:
            path = Path(text).expanduser()
            try:
                path.mkdir(parents=True, exist_ok=True)
                probe = path / ".bitsmith-write-test"
                probe.write_text("")
                probe.unlink()
            except OSError as exc:
                self.models_note.setText(f"Cannot use {path}: {exc}. Choose a folder you can write to.")
                self.models_edit.setText(str(self.services.models_dir()))
                return
            self.services.settings.set("models_dir", str(path.resolve()))
        self.models_edit.setText(str(self.services.models_dir()))
        self.models_note.setText("New downloads and quantized models go here; existing ones stay where they are.")
        self._apply_models_env()

    def _apply_models_env(self) -> None:
        """Jobs started from now on write to the chosen folder."""
        chosen = self.services.settings.get("models_dir")
        if chosen:
            self.services.jobs.env[paths.MODELS_ENV] = chosen
        elif paths.MODELS_ENV not in os.environ:
            self.services.jobs.env.pop(paths.MODELS_ENV, None)

    # -- appearance / chat ------------------------------------------------------------------------
    def _theme_changed(self) -> None:
        theme = self.theme_combo.currentData()
        self.services.settings.set("theme", theme)
        app = QApplication.instance()
        if isinstance(app, QApplication):
            apply_theme(app, theme)

    def _save_sampling(self) -> None:
        self.services.settings.set("chat/sampling_defaults", {
            "top_k": self.top_k.value(), "min_p": round(self.min_p.value(), 3),
            "repetition_penalty": round(self.rep.value(), 2)})

    # -- token ------------------------------------------------------------------------------------
    def _show_token_state(self) -> None:
        if self.keyring is None:
            self.token_status.setText("No system keyring is available here, so Bitsmith cannot store the token. "
                                      "Set the HF_TOKEN environment variable or run `hf auth login` instead.")
            self.save_token_button.setEnabled(False)
            self.forget_token_button.setEnabled(False)
            return
        try:
            stored = self.keyring.get_password(KEYRING_SERVICE, KEYRING_USER)
        except Exception as exc:  # noqa: BLE001 - a locked or broken keyring
            self.token_status.setText(f"The system keyring could not be read: {exc}.")
            return
        self.token_status.setText("A token is stored in the system keyring." if stored else
                                  "No token stored. It will be kept in the system keyring, never in a file.")
        self.forget_token_button.setEnabled(bool(stored))

    def save_token(self) -> None:
        """Store the typed token in the keyring (never in settings.json)."""
        token = self.token_edit.text().strip()
        if self.keyring is None or not token:
            return
        try:
            self.keyring.set_password(KEYRING_SERVICE, KEYRING_USER, token)
        except Exception as exc:  # noqa: BLE001
            self.token_status.setText(f"The token could not be stored in the keyring: {exc}.")
            return
        self.token_edit.clear()
        self._show_token_state()

    def forget_token(self) -> None:
        """Remove the stored token."""
        if self.keyring is None:
            return
        try:
            self.keyring.delete_password(KEYRING_SERVICE, KEYRING_USER)
        except Exception:  # noqa: BLE001 - nothing stored
            pass
        self._show_token_state()
