"""The Chat page: conversations on the left, messages in the middle, the chat's settings on the right."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QKeyEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..chat import export, models
from ..chat.controller import DEFAULT_N_CTX, DEFAULT_SAMPLING, ChatController
from ..chat.store import ChatStore, Conversation, Message, StoreError
from ..chat.widgets import MessageView
from ..services import Services

EXTRA_SAMPLING_KEYS = ("top_k", "min_p", "repetition_penalty")  # set on the Settings page, not per chat

RECENT_KEY = "chat/recent_models"
MAX_RECENT = 8
_OPEN_FILE, _OPEN_FOLDER = "__open_file__", "__open_folder__"
EXTERNAL_CHECK_MS = 2000  # how often to look for changes made by another Bitsmith window


class _EnterSends(QObject):
    """Enter sends, Shift+Enter adds a line, Escape stops or leaves edit mode."""

    def __init__(self, page: ChatPage) -> None:
        super().__init__(page)
        self.page = page

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.KeyPress and isinstance(event, QKeyEvent):
            if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not (
                    event.modifiers() & Qt.KeyboardModifier.ShiftModifier):
                self.page.send()
                return True
            if event.key() == Qt.Key.Key_Escape:
                if self.page.controller.busy:
                    self.page.stop()
                else:
                    self.page.cancel_edit()
                return True
        return False


def _lines_height(box: QPlainTextEdit, lines: int) -> int:
    """The height that shows `lines` lines of the box's font (it follows the font size, where pixels would not)."""
    margins = box.contentsMargins()
    return int(lines * box.fontMetrics().lineSpacing() + 2 * box.document().documentMargin() + margins.top()
               + margins.bottom() + 2)


class ModelCombo(QComboBox):
    """The model switcher: says when its list is about to open, so the page can re-read the models folder first."""

    about_to_open = Signal()

    def showPopup(self) -> None:  # noqa: N802 - Qt's name
        """Refresh the list (models come and go in the library), then open it."""
        self.about_to_open.emit()
        super().showPopup()


def library_models(models_dir: Path) -> list[tuple[str, str]]:
    """(label, path) of the models in the library that a chat can run: Bitsmith and Hugging Face folders (native
    backend) and GGUF files (llama.cpp)."""
    from .models import scan_library

    out = []
    for m in scan_library(models_dir):
        if m["kind"] in ("Bitsmith", "Hugging Face") or (m["kind"].startswith("GGUF") and "missing" not in m["kind"]):
            bpw = f" · {m['bpw']:.2f} bpw" if isinstance(m.get("bpw"), float) and m["kind"] == "Bitsmith" else ""
            out.append((f"{m['name']} ({m['kind']}{bpw})", str(m["path"])))
    return out


class ChatPage(QWidget):
    """Chat with a model: streaming answers, stop, regenerate, edit-and-resend, per-chat settings, export."""

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services
        self.settings = services.settings
        self.store: ChatStore | None = None
        self.conv: Conversation | None = None
        self.editing: int | None = None  # the user message being edited
        self.library: list[tuple[str, str]] = []  # the models folder's chat-able models, read when the list opens
        self._loading_settings = False
        self._build()
        try:
            self.store = services.chat_store()
        except StoreError as exc:
            self._disable(str(exc), exc.hint)
            return
        n_ctx = int(self.settings.get("chat/n_ctx", DEFAULT_N_CTX))
        self.controller = ChatController(self.store, services.jobs, n_ctx=n_ctx, parent=self)
        c = self.controller
        c.busy_changed.connect(self._on_busy)
        c.status.connect(self.status_label.setText)
        c.message_added.connect(self._on_message_added)
        c.token.connect(self._on_token)
        c.message_finished.connect(self._on_message_finished)
        c.speed.connect(lambda n, r: self.speed_label.setText(f"{n} tokens · {r:.1f} tok/s"))
        c.problem.connect(self.show_problem)
        c.conversation_changed.connect(self._on_conversation_changed)
        if self.store.recovered:
            self.show_problem(f"{self.store.recovered} answer(s) were cut off when Bitsmith last closed unexpectedly.",
                              "Their text up to that point is kept; use Regenerate to answer again.")
        self.reload_conversations()
        if self.conv_list.count() == 0:
            self.new_conversation()
        else:
            self.conv_list.setCurrentRow(0)
        self._data_version = self.store.data_version()
        self._external_timer = QTimer(self)
        self._external_timer.setInterval(EXTERNAL_CHECK_MS)
        self._external_timer.timeout.connect(self.check_external_changes)
        self._external_timer.start()

    # -- layout -----------------------------------------------------------------------------------
    def _build(self) -> None:
        root = QHBoxLayout(self)
        root.setContentsMargins(0, 0, 0, 0)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        root.addWidget(splitter)
        self.splitter = splitter

        # conversations
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(8, 8, 4, 8)
        top = QHBoxLayout()
        self.new_button = QPushButton("New chat")
        self.new_button.setToolTip("Start a new conversation (Ctrl+N)")
        self.new_button.clicked.connect(self.new_conversation)
        top.addWidget(self.new_button)
        lv.addLayout(top)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search chats (Ctrl+F)")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(lambda _t: self._search_timer.start())
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(200)
        self._search_timer.timeout.connect(self.reload_conversations)
        lv.addWidget(self.search)
        self.conv_list = QListWidget()
        self.conv_list.setAccessibleName("Conversations")
        self.conv_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.conv_list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.conv_list.currentItemChanged.connect(self._on_conv_selected)
        self.conv_list.itemDoubleClicked.connect(lambda _i: self.rename_current())
        self.conv_list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.conv_list.customContextMenuRequested.connect(self._conv_menu)
        lv.addWidget(self.conv_list, 1)
        splitter.addWidget(left)

        # messages
        mid = QWidget()
        mv = QVBoxLayout(mid)
        mv.setContentsMargins(4, 8, 4, 8)
        bar = QHBoxLayout()
        self.model_combo = ModelCombo()
        self.model_combo.setMinimumContentsLength(16)
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setToolTip("The model this chat talks to")
        self.model_combo.activated.connect(self._on_model_activated)
        self.model_combo.about_to_open.connect(self.refresh_model_list)
        self.backend_combo = QComboBox()
        for value, text in models.BACKENDS:
            self.backend_combo.addItem(text, value)
        self.backend_combo.setToolTip("Native runs Bitsmith and Hugging Face folders; llama.cpp runs .gguf files")
        self.backend_combo.activated.connect(lambda _i: self._save_settings())
        bar.addWidget(QLabel("Model"))
        bar.addWidget(self.model_combo, 1)
        bar.addWidget(self.backend_combo)
        self.export_button = QToolButton()
        self.export_button.setText("Export")
        self.export_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        export_menu = QMenu(self.export_button)
        export_menu.addAction("As Markdown…", lambda: self.export_dialog("md"))
        export_menu.addAction("As JSON…", lambda: self.export_dialog("json"))
        self.export_button.setMenu(export_menu)
        bar.addWidget(self.export_button)
        self.settings_toggle = QToolButton()
        self.settings_toggle.setText("Settings")
        self.settings_toggle.setCheckable(True)
        self.settings_toggle.setChecked(bool(self.settings.get("chat/show_settings", True)))
        self.settings_toggle.toggled.connect(self._toggle_settings)
        bar.addWidget(self.settings_toggle)
        mv.addLayout(bar)

        banner_row = QHBoxLayout()
        self.banner = QLabel()
        self.banner.setObjectName("banner")
        self.banner.setWordWrap(True)
        self.banner.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.banner_close = QToolButton()
        self.banner_close.setText("✕")
        self.banner_close.setToolTip("Dismiss")
        self.banner_close.clicked.connect(self.hide_problem)
        banner_row.addWidget(self.banner, 1)
        banner_row.addWidget(self.banner_close)
        mv.addLayout(banner_row)
        self.hide_problem()

        self.view = MessageView()
        self.view.copy_requested.connect(self.copy_message)
        self.view.edit_requested.connect(self.start_edit)
        self.view.regenerate_requested.connect(self.regenerate)
        mv.addWidget(self.view, 1)

        self.edit_note = QLabel("Editing a message: Send replaces it and every message after it. Esc cancels.")
        self.edit_note.setObjectName("banner")
        self.edit_note.hide()
        mv.addWidget(self.edit_note)
        inp = QHBoxLayout()
        self.input = QPlainTextEdit()
        self.input.setPlaceholderText("Message the model…  (Enter sends, Shift+Enter adds a line)")
        self.input.setFixedHeight(_lines_height(self.input, 4))
        self.input.setAccessibleName("Message")
        self.input.setTabChangesFocus(True)  # Tab reaches Send and Stop; a tab character is rarely what one means
        self.input.installEventFilter(_EnterSends(self))
        inp.addWidget(self.input, 1)
        buttons = QVBoxLayout()
        self.send_button = QPushButton("Send")
        self.send_button.setDefault(True)
        self.send_button.clicked.connect(self.send)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop the answer (Esc)")
        self.stop_button.clicked.connect(self.stop)
        self.stop_button.setEnabled(False)
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        inp.addLayout(buttons)
        mv.addLayout(inp)
        status_row = QHBoxLayout()
        self.status_label = QLabel("No model loaded yet: it starts with your first message.")
        self.status_label.setObjectName("muted")
        self.status_label.setWordWrap(True)  # a long status takes two lines rather than widening the page
        self.speed_label = QLabel("")
        self.speed_label.setObjectName("muted")
        status_row.addWidget(self.status_label, 1)
        status_row.addWidget(self.speed_label)
        mv.addLayout(status_row)
        splitter.addWidget(mid)

        # settings
        self.settings_panel = QFrame()
        sv = QVBoxLayout(self.settings_panel)
        sv.setContentsMargins(4, 8, 8, 8)
        sv.addWidget(QLabel("System prompt"))
        self.system_edit = QPlainTextEdit()
        self.system_edit.setPlaceholderText("e.g. You are a helpful assistant. Answer briefly.")
        self.system_edit.setFixedHeight(_lines_height(self.system_edit, 6))
        self.system_edit.setTabChangesFocus(True)
        self.system_edit.textChanged.connect(lambda: self._settings_timer.start())
        sv.addWidget(self.system_edit)
        form = QFormLayout()
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.0, 2.0)
        self.temperature.setSingleStep(0.05)
        self.temperature.setToolTip("0 = always the most likely word (deterministic); higher = more varied")
        self.top_p = QDoubleSpinBox()
        self.top_p.setRange(0.01, 1.0)
        self.top_p.setSingleStep(0.05)
        self.top_p.setToolTip("Sample only from the most likely words whose probabilities add up to this")
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 32768)
        self.max_tokens.setToolTip("The longest answer, in tokens")
        self.seed = QSpinBox()
        self.seed.setRange(-1, 2**31 - 1)
        self.seed.setSpecialValueText("random")
        self.seed.setToolTip("The same seed and settings give the same answer; 'random' draws a new one each time")
        for w in (self.temperature, self.top_p, self.max_tokens, self.seed):
            w.valueChanged.connect(lambda _v: self._settings_timer.start())
        form.addRow("Temperature", self.temperature)
        form.addRow("Top-p", self.top_p)
        form.addRow("Max tokens", self.max_tokens)
        form.addRow("Seed", self.seed)
        sv.addLayout(form)
        note = QLabel("Settings belong to this chat and apply from the next answer.")
        note.setObjectName("muted")
        note.setWordWrap(True)
        sv.addWidget(note)
        sv.addStretch(1)
        splitter.addWidget(self.settings_panel)
        self._settings_timer = QTimer(self)
        self._settings_timer.setSingleShot(True)
        self._settings_timer.setInterval(300)
        self._settings_timer.timeout.connect(self._save_settings)

        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setStretchFactor(2, 0)
        splitter.setSizes([230, 700, 260])
        self.settings_panel.setVisible(self.settings_toggle.isChecked())

        for keys, slot in (("Ctrl+N", self.new_conversation), ("Ctrl+F", self.search.setFocus),
                           ("F2", self.rename_current), ("Ctrl+Shift+R", self.regenerate),
                           ("Ctrl+L", self.input.setFocus)):
            shortcut = QShortcut(QKeySequence(keys), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(slot)
        delete = QShortcut(QKeySequence(QKeySequence.StandardKey.Delete), self.conv_list)
        delete.setContext(Qt.ShortcutContext.WidgetShortcut)
        delete.activated.connect(self.delete_current)

    def _disable(self, message: str, hint: str) -> None:
        self.show_problem(message, hint)
        for w in (self.input, self.send_button, self.new_button, self.conv_list, self.search):
            w.setEnabled(False)

    def _toggle_settings(self, on: bool) -> None:
        self.settings_panel.setVisible(on)
        self.settings.set("chat/show_settings", on)

    # -- problems ---------------------------------------------------------------------------------
    def show_problem(self, message: str, hint: str = "") -> None:
        """Show what went wrong and what to do, above the messages."""
        self.banner.setText(message + (f"\n{hint}" if hint else ""))
        self.banner.show()
        self.banner_close.show()

    def hide_problem(self) -> None:
        """Dismiss the problem banner."""
        self.banner.hide()
        self.banner_close.hide()

    # -- conversations ----------------------------------------------------------------------------
    def reload_conversations(self) -> None:
        """Refill the list (after a search, or when another window changed the database)."""
        if self.store is None:
            return
        current = self.conv.id if self.conv else None
        self.conv_list.blockSignals(True)
        self.conv_list.clear()
        for conv in self.store.conversations(self.search.text()):
            item = QListWidgetItem(conv.title)
            item.setData(Qt.ItemDataRole.UserRole, conv.id)
            item.setToolTip(f"{conv.title}\n{models.label(conv.model)}")
            self.conv_list.addItem(item)
            if conv.id == current:
                self.conv_list.setCurrentItem(item)
        self.conv_list.blockSignals(False)

    def check_external_changes(self) -> None:
        """Another window wrote to the database: refresh the list (and the open chat when idle)."""
        if self.store is None:
            return
        version = self.store.data_version()
        if version == self._data_version:
            return
        self._data_version = version
        self.reload_conversations()
        if self.conv is not None and not self.controller.busy and self.editing is None:
            try:
                self.store.conversation(self.conv.id)
            except KeyError:  # deleted in the other window
                self.conv = None
                if self.conv_list.count():
                    self.conv_list.setCurrentRow(0)
                else:
                    self.new_conversation()
                return
            shown = [(w.message.id, w.message.content, w.message.status) for w in self.view.widgets.values()]
            stored = [(m.id, m.content, m.status) for m in self.store.messages(self.conv.id)]
            if shown != stored:
                self.view.set_messages(self.store.messages(self.conv.id))
                self._refresh_actions()

    def _item_for(self, conversation_id: int) -> QListWidgetItem | None:
        for i in range(self.conv_list.count()):
            item = self.conv_list.item(i)
            if item.data(Qt.ItemDataRole.UserRole) == conversation_id:
                return item
        return None

    def new_conversation(self) -> None:
        """Start an empty chat with the last model and settings used."""
        if self.store is None:
            return
        self._settings_timer.stop()
        self._save_settings()  # the chat being left keeps its pending edits
        model = str(self.settings.get("chat/last_model", models.BUNDLED))
        backend = str(self.settings.get("chat/last_backend", "auto"))
        sampling = dict(self.settings.get("chat/last_sampling", DEFAULT_SAMPLING))
        try:
            conv = self.store.create(model=model, backend=backend, sampling=sampling,
                                     system=str(self.settings.get("chat/last_system", "")))
        except StoreError as exc:
            self.show_problem(f"No new chat was started: {exc}", exc.hint)
            return
        self.search.blockSignals(True)
        self.search.clear()
        self.search.blockSignals(False)
        self.conv = conv
        self.reload_conversations()
        self.open_conversation(conv.id)
        self.input.setFocus()

    def _on_conv_selected(self, item: QListWidgetItem | None, _prev: QListWidgetItem | None = None) -> None:
        if item is not None:
            self.open_conversation(int(item.data(Qt.ItemDataRole.UserRole)))

    def open_conversation(self, conversation_id: int) -> None:
        """Show a conversation and its settings."""
        if self.store is None:
            return
        try:
            conv = self.store.conversation(conversation_id)
        except KeyError:
            self.reload_conversations()
            return
        self._settings_timer.stop()
        if self.conv is not None and self.conv.id != conv.id:
            self._save_settings()
        self.cancel_edit()
        self.conv = conv
        item = self._item_for(conv.id)
        if item is not None and self.conv_list.currentItem() is not item:
            self.conv_list.blockSignals(True)
            self.conv_list.setCurrentItem(item)
            self.conv_list.blockSignals(False)
        self._load_settings(conv)
        self.view.set_messages(self.store.messages(conv.id))
        self._refresh_actions()

    def rename_current(self) -> None:
        """Ask for a new title for the selected chat."""
        if self.conv is None or self.store is None:
            return
        title, ok = QInputDialog.getText(self, "Rename chat", "Title:", text=self.conv.title)
        if ok:
            self.conv = self.store.rename(self.conv.id, title)
            self.reload_conversations()

    def delete_current(self) -> None:
        """Delete the selected chat after asking."""
        if self.conv is None or self.store is None:
            return
        answer = QMessageBox.question(self, "Delete chat", f"Delete “{self.conv.title}” and all its messages?\n"
                                      "This cannot be undone (export it first to keep a copy).")
        if answer != QMessageBox.StandardButton.Yes:
            return
        if self.controller.busy:
            self.controller.stop()
        self.store.delete(self.conv.id)
        self.conv = None
        self.reload_conversations()
        if self.conv_list.count():
            self.conv_list.setCurrentRow(0)
        else:
            self.new_conversation()

    def _conv_menu(self, pos: Any) -> None:
        if self.conv_list.itemAt(pos) is None:
            return
        menu = QMenu(self)
        menu.addAction("Rename…", self.rename_current)
        menu.addAction("Export as Markdown…", lambda: self.export_dialog("md"))
        menu.addAction("Export as JSON…", lambda: self.export_dialog("json"))
        menu.addSeparator()
        menu.addAction("Delete…", self.delete_current)
        menu.exec(self.conv_list.mapToGlobal(pos))

    def _on_conversation_changed(self, conv: Conversation) -> None:
        if self.conv is not None and conv.id == self.conv.id:
            self.conv = conv
        item = self._item_for(conv.id)
        if item is not None:
            item.setText(conv.title)

    # -- settings of the chat ---------------------------------------------------------------------
    def _load_settings(self, conv: Conversation) -> None:
        self._loading_settings = True
        try:
            self._select_model(conv.model)
            index = self.backend_combo.findData(conv.backend)
            self.backend_combo.setCurrentIndex(max(index, 0))
            self.system_edit.setPlainText(conv.system)
            s = {**DEFAULT_SAMPLING, **conv.sampling}
            self.temperature.setValue(float(s.get("temperature", 0.7)))
            self.top_p.setValue(float(s.get("top_p", 0.95)))
            self.max_tokens.setValue(int(s.get("max_tokens", 512)))
            seed = s.get("seed")
            self.seed.setValue(int(seed) if isinstance(seed, int) and seed >= 0 else -1)
        finally:
            self._loading_settings = False
        self._settings_timer.stop()

    def current_sampling(self) -> dict[str, Any]:
        """The sampling settings shown in the panel."""
        seed = self.seed.value()
        extra = self.settings.get("chat/sampling_defaults") or {}  # top-k, min-p, repetition penalty (Settings page)
        return {**{k: extra[k] for k in EXTRA_SAMPLING_KEYS if k in extra},
                "temperature": round(self.temperature.value(), 3), "top_p": round(self.top_p.value(), 3),
                "max_tokens": self.max_tokens.value(), "seed": None if seed < 0 else seed}

    def _save_settings(self) -> None:
        if self._loading_settings or self.conv is None or self.store is None:
            return
        model = self.model_combo.currentData() or ""
        if model in (_OPEN_FILE, _OPEN_FOLDER):
            model = self.conv.model
        fields = {"model": model, "backend": self.backend_combo.currentData() or "auto",
                  "system": self.system_edit.toPlainText(), "sampling": self.current_sampling()}
        try:
            self.conv = self.store.update(self.conv.id, **fields)
        except KeyError:
            return
        except StoreError as exc:
            self.show_problem(str(exc), exc.hint)
            return
        self.settings.set("chat/last_model", fields["model"])
        self.settings.set("chat/last_backend", fields["backend"])
        self.settings.set("chat/last_sampling", fields["sampling"])
        self.settings.set("chat/last_system", fields["system"])

    def _fill_models(self, extra: str | None = None) -> None:
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        bundled = models.bundled_path()
        self.model_combo.addItem(models.BUNDLED_LABEL + ("" if bundled else " — not installed"), models.BUNDLED)
        recent = [m for m in self.settings.get(RECENT_KEY, []) if isinstance(m, str) and m != models.BUNDLED]
        if extra and extra != models.BUNDLED and extra not in recent:
            recent.insert(0, extra)
        for m in recent:
            missing = "" if Path(m).exists() else " — missing"
            self.model_combo.addItem(models.label(m) + missing, m)
            self.model_combo.setItemData(self.model_combo.count() - 1, m, Qt.ItemDataRole.ToolTipRole)
        shown = {models.BUNDLED, *recent}
        library = [(text, path) for text, path in self.library if path not in shown]
        if library:
            self.model_combo.insertSeparator(self.model_combo.count())
        for text, path in library:
            self.model_combo.addItem(text, path)
            self.model_combo.setItemData(self.model_combo.count() - 1, path, Qt.ItemDataRole.ToolTipRole)
        self.model_combo.insertSeparator(self.model_combo.count())
        self.model_combo.addItem("Open a .gguf file…", _OPEN_FILE)
        self.model_combo.addItem("Open a model folder…", _OPEN_FOLDER)
        self.model_combo.blockSignals(False)

    def refresh_model_list(self) -> None:
        """Re-read the models folder into the switcher (called as its list opens), keeping the chat's model."""
        try:
            self.library = library_models(self.services.models_dir())
        except OSError:  # an unreadable models folder: the list keeps what it had
            return
        current = self.model_combo.currentData()
        self._select_model(self.conv.model if self.conv is not None else str(current or models.BUNDLED))

    def _select_model(self, model: str) -> None:
        self._fill_models(model)
        index = self.model_combo.findData(model)
        self.model_combo.setCurrentIndex(max(index, 0))

    def _remember_model(self, model: str) -> None:
        recent = [m for m in self.settings.get(RECENT_KEY, []) if m != model]
        self.settings.set(RECENT_KEY, [model, *recent][:MAX_RECENT])

    def _on_model_activated(self, index: int) -> None:
        data = self.model_combo.itemData(index)
        if data in (_OPEN_FILE, _OPEN_FOLDER):
            if data == _OPEN_FILE:
                path, _ = QFileDialog.getOpenFileName(self, "Choose a GGUF model", str(Path.home()),
                                                      "GGUF models (*.gguf)")
            else:
                path = QFileDialog.getExistingDirectory(self, "Choose a model folder", str(Path.home()))
            if not path:
                self._select_model(self.conv.model if self.conv else models.BUNDLED)
                return
            self.use_model(path)
            return
        if isinstance(data, str) and data:
            self.use_model(data)  # the backend follows (a folder cannot run on llama.cpp), and it joins the recent

    def use_model(self, model: str, backend: str | None = None) -> None:
        """Point the current chat at a model (also what other pages call for "Chat with it")."""
        if model != models.BUNDLED:
            model = str(Path(model).expanduser())
            self._remember_model(model)
        self._select_model(model)
        if backend is not None:
            self.backend_combo.setCurrentIndex(max(self.backend_combo.findData(backend), 0))
        elif not models.is_gguf(model) and self.backend_combo.currentData() == "llama.cpp":
            self.backend_combo.setCurrentIndex(self.backend_combo.findData("auto"))
        self._save_settings()
        trouble = models.problem(model, self.backend_combo.currentData() or "auto")
        if trouble:
            self.show_problem(*trouble)
        else:
            self.hide_problem()

    # -- sending ----------------------------------------------------------------------------------
    def send(self) -> None:
        """Send the typed message (or the edited one)."""
        if self.conv is None or self.store is None:
            return
        text = self.input.toPlainText().strip()
        if not text or self.controller.busy:
            return
        self._settings_timer.stop()
        self._save_settings()
        self.hide_problem()
        if self.editing is not None:
            editing, self.editing = self.editing, None
            self.edit_note.hide()
            try:
                self.store.truncate_from(editing)
            except KeyError:
                pass
            except StoreError as exc:
                self.show_problem(f"The edited message was not sent: {exc}", exc.hint)
                return
            self.view.set_messages(self.store.messages(self.conv.id))
        if self.controller.send(self.conv, text):
            self.input.clear()
            self.speed_label.setText("")

    def stop(self) -> None:
        """Stop the answer being written."""
        if self.store is not None:
            self.controller.stop()

    def regenerate(self, _message_id: int | None = None) -> None:
        """Write the last answer again."""
        if self.conv is None or self.controller.busy:
            return
        self._save_settings()
        self.hide_problem()
        last_user = next((m for m in reversed(self.store.messages(self.conv.id)) if m.role == "user"), None)
        if last_user is None:
            return
        try:
            self.store.truncate_from(last_user.id)
        except StoreError as exc:
            self.show_problem(f"The answer was not written again: {exc}", exc.hint)
            return
        self.view.set_messages(self.store.messages(self.conv.id))
        self.controller.send(self.conv, last_user.content)

    def start_edit(self, message_id: int) -> None:
        """Put a user message in the input box; Send replaces it and what follows."""
        if self.controller.busy:
            return
        try:
            msg = self.store.message(message_id)
        except KeyError:
            return
        self.editing = message_id
        self.input.setPlainText(msg.content)
        self.edit_note.show()
        self.input.setFocus()

    def cancel_edit(self) -> None:
        """Leave edit mode without sending."""
        if self.editing is not None:
            self.editing = None
            self.input.clear()
        self.edit_note.hide()

    def copy_message(self, message_id: int) -> None:
        """Copy a message's whole text."""
        widget = self.view.widgets.get(message_id)
        if widget is not None:
            QApplication.clipboard().setText(widget.message.content)

    # -- controller events ------------------------------------------------------------------------
    def _on_busy(self, busy: bool) -> None:
        self.stop_button.setEnabled(busy)
        self.send_button.setEnabled(not busy)
        if busy:
            self.speed_label.setText("waiting for the model…")
        self._refresh_actions()

    def _on_message_added(self, msg: Message) -> None:
        if self.conv is None or msg.conversation_id != self.conv.id:
            return
        self.view.add(msg)
        self._refresh_actions()

    def _on_token(self, message_id: int, text: str) -> None:
        widget = self.view.widgets.get(message_id)
        if widget is not None:
            widget.append_text(text)

    def _on_message_finished(self, msg: Message) -> None:
        widget = self.view.widgets.get(msg.id)
        if widget is not None:
            widget.update_message(msg)
        if msg.meta.get("decode_tok_s"):
            self.speed_label.setText(f"{msg.meta.get('completion_tokens', 0)} tokens · "
                                     f"{msg.meta['decode_tok_s']:.1f} tok/s")
        self._refresh_actions()

    def _refresh_actions(self) -> None:
        widgets = list(self.view.widgets.values())
        last_answer = next((w for w in reversed(widgets) if w.message.role == "assistant"), None)
        busy = self.controller.busy if hasattr(self, "controller") else False
        for w in widgets:
            w.set_actions(regenerate=w is last_answer, enabled=not busy)

    # -- export -----------------------------------------------------------------------------------
    def export_to(self, path: str | Path, fmt: str) -> Path:
        """Write the current conversation to `path` as Markdown ("md") or JSON ("json")."""
        assert self.conv is not None and self.store is not None
        conv = self.store.conversation(self.conv.id)
        msgs = self.store.messages(conv.id)
        text = export.to_markdown(conv, msgs) if fmt == "md" else export.to_json(conv, msgs)
        export.write_text_atomic(path, text)
        return Path(path)

    def export_dialog(self, fmt: str) -> None:
        """Ask where to save, then export."""
        if self.conv is None:
            return
        safe = "".join(c if c.isalnum() or c in " -_" else "_" for c in self.conv.title).strip() or "chat"
        suffix, filt = (".md", "Markdown (*.md)") if fmt == "md" else (".json", "JSON (*.json)")
        path, _ = QFileDialog.getSaveFileName(self, "Export chat", str(Path.home() / f"{safe}{suffix}"), filt)
        if not path:
            return
        try:
            self.export_to(path, fmt)
        except OSError as exc:
            self.show_problem(f"Could not write {path}: {exc}", "Choose another folder or free some disk space.")
        else:
            self.status_label.setText(f"Exported to {path}")

    # -- page hooks -------------------------------------------------------------------------------
    def focus_target(self) -> QWidget:
        """Where the keyboard goes when the page is opened by its shortcut: the message box."""
        return self.input

    def on_shown(self) -> None:
        """Refresh the list (another window may have changed it) and focus the input."""
        if self.store is not None and not self.search.text():
            self.reload_conversations()
        self.input.setFocus()

    def shutdown(self) -> None:
        """Save the chat's settings and keep the partial answer; end the model process."""
        self._settings_timer.stop()
        self._search_timer.stop()
        if hasattr(self, "_external_timer"):
            self._external_timer.stop()
        self._save_settings()
        if hasattr(self, "controller"):
            self.controller.shutdown()

