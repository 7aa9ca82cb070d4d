"""The Settings page: models folder, default budget, theme, chat context and sampling defaults, Hugging Face
token. Every change is saved at once in services.settings (the other pages read it from there); the token goes
to the OS keyring when the `keyring` package and a backend exist, and is never written to settings or logs.

Choosing a new models folder offers to move the models there (app.move_models, on a pool thread with progress and
cancel); the setting follows only when everything moved, so no model ever drops out of sight halfway. Paused
downloads move along and resume in the new folder."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal
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
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from bitsmith.engine import paths
from bitsmith.engine.errors import BitsmithError

from .. import move_models as mm
from ..background import error_text, run_in_background
from ..services import DEFAULT_BPW_KEY, default_budget
from ..theme import THEMES, apply_theme
from .model_format import human_bytes

KEYRING_SERVICE = "Bitsmith"
KEYRING_USER = "huggingface-token"
SAMPLING_DEFAULTS = {"top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1}  # llama.cpp's chat defaults
MODELS_NOTE = "New downloads and quantized models go here."
MOVE, KEEP, CANCEL = "Move", "Keep them there", "Cancel"
JOB_WORDS = {"quantize": "a quantization", "download": "a download", "finetune": "a fine-tune",
             "export": "a GGUF export", "chat": "a chat model (stop it on the Chat page)"}
PROGRESS_EVERY_S = 0.1


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


def ask_choice(parent: QWidget, title: str, text: str, informative: str, choices: list[str], default: str,
               escape: str) -> str:
    """A question box with one button per choice; the chosen label (`escape` when the box is closed)."""
    box = QMessageBox(QMessageBox.Icon.Question, title, text, QMessageBox.StandardButton.NoButton, parent)
    box.setInformativeText(informative)
    roles = {CANCEL: QMessageBox.ButtonRole.RejectRole}
    buttons = {box.addButton(c, roles.get(c, QMessageBox.ButtonRole.AcceptRole)): c for c in choices}
    for b, c in buttons.items():
        if c == default:
            box.setDefaultButton(b)
        if c == escape:
            box.setEscapeButton(b)
    box.exec()
    return buttons.get(box.clickedButton(), escape)


def running_jobs_text(jobs: Any) -> str | None:
    """'a quantization (job 3f2a…) and a download of acme/x' for the tracked jobs still running, or None."""
    parts = []
    for job in getattr(jobs, "jobs", []):
        if not job.running:
            continue
        words = JOB_WORDS.get(job.kind, f"a {job.kind} job")
        params = getattr(job, "params", {}) or {}
        what = params.get("model") or params.get("source")
        if what and job.kind != "chat":
            words += f" of {Path(str(what)).name if Path(str(what)).exists() else what}"
        parts.append(words)
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


class _MoveRelay(QObject):
    """Carries move progress from the pool thread to the page (queued signal)."""

    progress = Signal(object)


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
        self.models_browse, self.models_reset = browse, reset
        self.models_note = QLabel(MODELS_NOTE + " Choosing another folder offers to move your models there.")
        self.models_note.setObjectName("muted")
        self.models_note.setWordWrap(True)
        f.addRow("", self.models_note)
        move_row = QHBoxLayout()
        self.move_bar = QProgressBar()
        self.move_bar.setRange(0, 1000)
        self.move_cancel = QPushButton("Cancel move")
        self.move_cancel.clicked.connect(self.cancel_move)
        move_row.addWidget(self.move_bar, 1)
        move_row.addWidget(self.move_cancel)
        self.move_label = QLabel("")
        self.move_label.setWordWrap(True)
        f.addRow("", move_row)
        f.addRow("", self.move_label)
        self._move_widgets = (self.move_bar, self.move_cancel, self.move_label)
        for w in self._move_widgets:
            w.setVisible(False)
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
        self.budget_spin.setValue(default_budget(s))
        self.budget_spin.valueChanged.connect(lambda v_: s.set(DEFAULT_BPW_KEY, round(v_, 2)))
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
        self._choosing = False
        self._move_cancel: threading.Event | None = None
        self._move_ended: threading.Event | None = None
        self.last_move: mm.MoveReport | None = None
        self.keyring = keyring_backend()
        self._show_token_state()
        self._apply_models_env()

    def focus_target(self) -> QWidget:
        """Where the keyboard goes when the page is opened by its shortcut: the models folder."""
        return self.models_edit

    # -- models folder ----------------------------------------------------------------------------
    def _browse_models(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose the models folder", str(self.services.models_dir()))
        if path:
            self.set_models_dir(path)

    @property
    def moving(self) -> bool:
        """Whether a move of the models is under way."""
        return self._move_cancel is not None

    def set_models_dir(self, text: str) -> None:
        """Use `text` as the models folder ('' for the default), offering to move the models there first."""
        if self._choosing or self.moving:
            return
        self._choosing = True
        try:
            self._choose_models_dir(text.strip())
        finally:
            self._choosing = False
            if not self.moving:
                self.models_edit.setText(str(self.services.models_dir()))

    def _choose_models_dir(self, text: str) -> None:
        old = self.services.models_dir()
        target = Path(text).expanduser() if text else paths.models_dir({**os.environ, **self.services.env})
        value = str(target.resolve()) if text else None
        if mm.same_folder(old, target):
            self._use_folder(value, MODELS_NOTE)
            return
        try:
            mm.check_destination(old, target)
        except BitsmithError as exc:
            self._refuse("Choose another folder", error_text(exc))
            return
        created = not target.exists()
        try:
            target.mkdir(parents=True, exist_ok=True)
            probe = target / mm.WRITE_PROBE
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            self.models_note.setText(f"Cannot use {target}: {exc}. Choose a folder you can write to.")
            return
        if not self._offer_move(old, target, value) and created:
            try:
                target.rmdir()  # the empty folder made only to check that it is writable
            except OSError:
                pass

    def _offer_move(self, old: Path, target: Path, value: str | None) -> bool:
        """Switch to `target`, moving the models if the user wants; False when nothing changed."""
        downloads = self.services.download_manager()
        try:
            plan = mm.plan_move(old, target, include=downloads.carried_entries(old))
        except OSError as exc:
            self._refuse("Cannot read the models folder", f"Bitsmith could not list {old}: {exc}. Nothing changed.")
            return False
        if not plan.items:
            self._use_folder(value, MODELS_NOTE)
            return True
        busy = running_jobs_text(self.services.jobs)
        if busy:
            self._refuse("Wait for the running job", f"Bitsmith is running {busy}, which may be using the models "
                         f"folder, so the models cannot move now. Wait for it to finish or cancel it on the Jobs "
                         f"page, then choose {target} again. The models folder is still {old}.")
            return False
        answer = ask_choice(self, "Move your models?", self._move_question(plan), self._move_details(plan),
                            [MOVE, KEEP, CANCEL], MOVE, CANCEL)
        if answer == KEEP:
            self._use_folder(value, f"{MODELS_NOTE} Your earlier models stay in {old} and no longer show in the "
                             f"library; choose that folder again to see them.")
            return True
        if answer != MOVE:
            return False
        try:
            mm.check_space(plan)
        except BitsmithError as exc:
            self._refuse("Not enough space", f"{error_text(exc)}. The models folder is still {old}.")
            return False
        self._start_move(plan, value)
        return True

    def _move_question(self, plan: mm.MovePlan) -> str:
        from .models import scan_library  # the library's idea of a model, for the count the user sees

        n = len(scan_library(plan.source))
        size = human_bytes(plan.total_bytes)
        if n:
            return f"Move your {n} model{'s' if n != 1 else ''} ({size}) to the new folder?"
        k = len(plan.items)
        return f"Move the {k} item{'s' if k != 1 else ''} ({size}) in the models folder to the new folder?"

    def _move_details(self, plan: mm.MovePlan) -> str:
        lines = [f"From: {plan.source}", f"To: {plan.dest}", "",
                 "Move: everything in the old folder moves, " + ("at once (same disk)." if plan.same_device else
                                                                 "copied to the other disk; this can take a while."),
                 f"Keep them there: new models go to the new folder; the old ones stay in {plan.source} and "
                 "no longer show in the library.", "Cancel: nothing changes."]
        carried = self.services.download_manager().carried_entries(plan.source)
        if carried:
            lines += ["", f"{len(carried)} paused download(s) move too, and continue in the new folder when you "
                          "resume them."]
        unfinished = [n for n in plan.staying if n.endswith(".partial")]
        if unfinished:
            lines += ["", f"{len(unfinished)} unfinished download(s) or quantization(s) stay in the old folder, so "
                          "they can resume where they started."]
        return "\n".join(lines)

    def _refuse(self, title: str, text: str) -> None:
        self.models_note.setText(text)
        QMessageBox.warning(self, title, text)

    def _use_folder(self, value: str | None, note: str) -> None:
        self.services.settings.set("models_dir", value)
        self.models_edit.setText(str(self.services.models_dir()))
        self.models_note.setText(note)
        self._apply_models_env()

    # -- moving -----------------------------------------------------------------------------------
    def _start_move(self, plan: mm.MovePlan, value: str | None) -> None:
        cancel, ended = threading.Event(), threading.Event()
        self._move_cancel, self._move_ended = cancel, ended
        relay = _MoveRelay(self)
        relay.progress.connect(self._show_progress)
        last = {"t": 0.0, "items": -1}

        def report(p: mm.MoveProgress) -> None:
            now = time.monotonic()
            if now - last["t"] < PROGRESS_EVERY_S and p.done_items == last["items"]:
                return
            last["t"], last["items"] = now, p.done_items
            try:
                relay.progress.emit(mm.MoveProgress(p.done_bytes, p.total_bytes, p.done_items, p.total_items,
                                                    p.current))
            except RuntimeError:  # the page is gone (the app is closing): the move still stops cleanly
                pass

        def work() -> mm.MoveReport:
            try:
                return mm.move_models(plan, report, cancel.is_set)
            finally:
                ended.set()

        for w in (self.models_edit, self.models_browse, self.models_reset):
            w.setEnabled(False)
        for w in self._move_widgets:
            w.setVisible(True)
        self.move_cancel.setEnabled(True)
        self.models_edit.setText(str(plan.dest))
        self.models_note.setText(f"Moving your models to {plan.dest}… Bitsmith keeps using {plan.source} until "
                                 "everything has moved.")
        self._show_progress(mm.MoveProgress(0, plan.total_bytes, 0, len(plan.items)))
        run_in_background(work, lambda r: self._move_finished(r, value), self._move_crashed)

    def _show_progress(self, p: mm.MoveProgress) -> None:
        if self._move_cancel is None or self._move_cancel.is_set():  # over, or "Cancelling…" stays shown
            return
        self.move_bar.setValue(int(1000 * p.done_bytes / p.total_bytes) if p.total_bytes else 0)
        now = f" — {p.current}" if p.current and p.done_items < p.total_items else ""
        self.move_label.setText(f"{human_bytes(p.done_bytes)} of {human_bytes(p.total_bytes)}, "
                                f"{p.done_items} of {p.total_items} items{now}")

    def cancel_move(self) -> None:
        """Stop the move after the current chunk; the item in flight stays in the old folder."""
        if self._move_cancel is not None:
            self._move_cancel.set()
            self.move_cancel.setEnabled(False)
            self.move_label.setText("Cancelling…")

    def _end_move(self) -> None:
        self._move_cancel = None
        for w in self._move_widgets:
            w.setVisible(False)
        for w in (self.models_edit, self.models_browse, self.models_reset):
            w.setEnabled(True)

    def _move_finished(self, report: mm.MoveReport, value: str | None) -> None:
        self._end_move()
        self.last_move = report
        self.services.download_manager().follow_move(report)  # paused downloads whose files moved go on there
        if report.complete:
            self._use_folder(value, f"{MODELS_NOTE} {report.summary()}")
            return
        text = (f"{report.summary()}\nBitsmith still uses {report.source}, where the models that did not move "
                "are, so none of them drops out of sight.")
        self.models_edit.setText(str(self.services.models_dir()))
        self.models_note.setText(text)
        QMessageBox.warning(self, "The models did not all move", text)

    def _move_crashed(self, exc: BaseException) -> None:
        self._end_move()
        text = (f"The move stopped unexpectedly: {error_text(exc)}. Bitsmith still uses "
                f"{self.services.models_dir()}; check both folders, then choose the new one again to move the rest.")
        self.models_note.setText(text)
        QMessageBox.warning(self, "The move stopped", text)

    def shutdown(self) -> None:
        """The window is closing: stop a move between chunks and wait for it, so no copy is left half-done."""
        if self._move_cancel is not None and self._move_ended is not None:
            self._move_cancel.set()
            self._move_ended.wait(30.0)

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
