"""The main window: a sidebar of pages over a QStackedWidget, and a status bar with hardware and jobs.

Pages are found by name: `app/pages/<name>.py` exposing `<Name>Page(QWidget)` whose `__init__` takes the
Services object (e.g. pages/chat.py → ChatPage). A page is imported the first time it is shown, which keeps
the cold start short; a page whose module does not exist yet shows a placeholder saying so. Optional page
hooks: `on_shown()` each time it becomes visible, `shutdown()` when the window closes, `focus_target()` the
widget the keyboard goes to when the page is opened by its shortcut (Ctrl+1 … Ctrl+6).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import traceback
from typing import Any

from PySide6.QtCore import QByteArray, QEvent, Qt
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from .services import Services

log = logging.getLogger(__name__)

PAGES: list[tuple[str, str]] = [
    ("models", "Models"),
    ("quantize", "Quantize"),
    ("finetune", "Fine-tune"),
    ("chat", "Chat"),
    ("jobs", "Jobs"),
    ("settings", "Settings"),
]
DEFAULT_PAGE = "chat"
GIB = 2**30


def page_class_name(name: str) -> str:
    """The class a page module must define: 'chat' → 'ChatPage', 'finetune' → 'FinetunePage'."""
    return name[:1].upper() + name[1:] + "Page"


class PlaceholderPage(QWidget):
    """Stands in for a page that is not built yet, or that failed to load (with what to do)."""

    def __init__(self, title: str, text: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.addStretch(1)
        head = QLabel(title)
        head.setObjectName("placeholder_title")
        head.setAlignment(Qt.AlignmentFlag.AlignCenter)
        body = QLabel(text)
        body.setObjectName("muted")
        body.setWordWrap(True)
        body.setAlignment(Qt.AlignmentFlag.AlignCenter)
        body.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(head)
        layout.addWidget(body)
        layout.addStretch(2)
        self.text = text


def load_page(name: str, label: str, services: Services) -> QWidget:
    """Build page `name`, or a placeholder when its module is missing or broken."""
    module_name = f"bitsmith.app.pages.{name}"
    if importlib.util.find_spec(module_name) is None:
        return PlaceholderPage(label, f"The {label} page is not built yet.\n"
                                      "It will appear here in a later version of Bitsmith.")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, page_class_name(name))
        return cls(services)
    except Exception as exc:  # noqa: BLE001 - one broken page must not take the window down
        log.error("page %s failed to load:\n%s", name, traceback.format_exc())
        return PlaceholderPage(label, f"The {label} page could not be opened: {type(exc).__name__}: {exc}\n\n"
                                      "Restart Bitsmith. If it keeps happening, reinstall it or report the "
                                      "problem with the message above.")


def describe_gpu(profile: dict[str, Any] | None) -> tuple[str, str]:
    """The status-bar text for the accelerator and its tooltip."""
    if profile is None:
        return "Detecting hardware…", ""
    gpus = profile.get("gpus") or []
    if gpus:
        best = max(gpus, key=lambda g: g.get("free_bytes", 0))
        text = f"{best.get('name', 'GPU')} · {best['free_bytes'] / GIB:.1f} / {best['total_bytes'] / GIB:.1f} GB free"
        if len(gpus) > 1:
            text += f" (+{len(gpus) - 1} more)"
        tip = "\n".join(f"GPU {g.get('index')}: {g.get('name')}, {g['free_bytes'] / GIB:.1f} of "
                        f"{g['total_bytes'] / GIB:.1f} GB free" for g in gpus)
        return text, tip
    apple = profile.get("apple")
    if apple:
        mem = apple.get("unified_memory_bytes", 0) / GIB
        state = "GPU (MPS)" if apple.get("mps_usable") else "CPU only"
        return f"{apple.get('chip', 'Apple silicon')} · {mem:.0f} GB unified · {state}", apple.get("mps_reason", "")
    reason = profile.get("nvidia_reason") or "no supported GPU found"
    return "CPU only", f"No GPU: {reason}. Models run on the CPU (slowly); small models and chat still work."


class MainWindow(QMainWindow):
    """Sidebar + pages + status bar (see the module docstring)."""

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services
        services.open_page = self._open_page
        self.setWindowTitle("Bitsmith")
        self.setMinimumSize(720, 480)
        self.pages: dict[str, QWidget] = {}
        self._names = [name for name, _ in PAGES]

        central = QWidget()
        row = QHBoxLayout(central)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        self.sidebar = QListWidget()
        self.sidebar.setObjectName("sidebar")
        self.sidebar.setFixedWidth(170)
        self.sidebar.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.sidebar.setAccessibleName("Pages")
        self.stack = QStackedWidget()
        for i, (name, label) in enumerate(PAGES):
            item = QListWidgetItem(label)
            item.setData(Qt.ItemDataRole.UserRole, name)
            item.setToolTip(f"{label} (Ctrl+{i + 1})")
            self.sidebar.addItem(item)
            holder = QWidget()  # replaced by the real page on first show
            holder.setObjectName(f"holder_{name}")
            self.stack.addWidget(holder)
        row.addWidget(self.sidebar)
        row.addWidget(self.stack, 1)
        self.setCentralWidget(central)
        self.sidebar.currentRowChanged.connect(self._show_row)

        self._build_status_bar()
        self._build_actions()
        services.hardware.profile_changed.connect(self._on_profile)
        services.hardware.failed.connect(self._on_hardware_failed)
        services.hardware.ram_changed.connect(self._on_ram)
        services.jobs.jobs_changed.connect(self._on_jobs)

        app = QApplication.instance()
        if isinstance(app, QApplication):
            from .theme import SystemThemeFollower

            self.theme_follower = SystemThemeFollower(app, lambda: str(services.settings.get("theme", "system")),
                                                      parent=self)
        self._restore_geometry()
        start = services.settings.get("window/page", DEFAULT_PAGE)
        self.show_page(start if start in self._names else DEFAULT_PAGE)
        self._offer_downloads()

    # -- building ---------------------------------------------------------------------------------
    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.services.settings.write_failed.connect(
            lambda why: bar.showMessage(f"Settings not saved: {why}. Free some disk space; changes apply until you "
                                        "close Bitsmith.", 20_000))
        self.gpu_label = QLabel("Detecting hardware…")
        self.ram_label = QLabel("RAM …")
        self.jobs_label = QLabel("No jobs running")
        for w in (self.gpu_label, self.ram_label, self.jobs_label):
            w.setContentsMargins(8, 0, 8, 0)
            bar.addPermanentWidget(w)

    def _offer_downloads(self) -> None:
        """Downloads left unfinished when Bitsmith last closed: a status-bar button leads to them on the Models
        page, which offers to resume them."""
        from .downloads import read_downloads

        n = len(read_downloads(self.services.data_dir))
        self.downloads_button = QPushButton(f"{n} unfinished download{'s' if n != 1 else ''}: resume…")
        self.downloads_button.setFlat(True)
        self.downloads_button.setToolTip("Open the Models page to resume, pause or cancel them")
        self.downloads_button.clicked.connect(self._open_downloads)
        self.statusBar().addWidget(self.downloads_button)
        self.downloads_button.setVisible(n > 0 and "models" not in self.pages)

    def _open_downloads(self) -> None:
        self.downloads_button.setVisible(False)
        self.show_page("models")

    def _build_actions(self) -> None:
        for i, (name, label) in enumerate(PAGES):
            action = QAction(f"Go to {label}", self)
            action.setShortcut(QKeySequence(f"Ctrl+{i + 1}"))
            action.setShortcutContext(Qt.ShortcutContext.ApplicationShortcut)
            action.triggered.connect(lambda _=False, n=name: self.go_to(n))
            self.addAction(action)
        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        quit_action = QAction("&Quit", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        file_menu.addAction(quit_action)
        go = menu.addMenu("&Go")
        for action in self.actions():
            go.addAction(action)
        view = menu.addMenu("&View")
        for theme in ("system", "light", "dark"):
            act = QAction(f"{theme.capitalize()} theme", self)
            act.triggered.connect(lambda _=False, t=theme: self.set_theme(t))
            view.addAction(act)
        help_menu = menu.addMenu("&Help")
        about = QAction("&About Bitsmith", self)
        about.triggered.connect(lambda: QMessageBox.about(
            self, "About Bitsmith",
            "Bitsmith: compress, fine-tune and chat with language models on your own GPU.\n"
            f"Data folder: {self.services.data_dir}"))
        help_menu.addAction(about)

    # -- pages ------------------------------------------------------------------------------------
    def page(self, name: str) -> QWidget:
        """The page widget `name`, building it if needed."""
        if name not in self.pages:
            index = self._names.index(name)
            widget = load_page(name, PAGES[index][1], self.services)
            widget.setObjectName(f"page_{name}")
            old = self.stack.widget(index)
            self.stack.insertWidget(index, widget)
            self.stack.removeWidget(old)
            old.deleteLater()
            self.pages[name] = widget
        return self.pages[name]

    def go_to(self, name: str) -> None:
        """Show page `name` and put the keyboard on its main widget (what Ctrl+1 … Ctrl+6 do): a keyboard user lands
        where the work is, e.g. in the chat's message box. The sidebar keeps the focus when clicked or arrowed."""
        self.show_page(name)
        target = getattr(self.pages[name], "focus_target", None)
        widget = target() if callable(target) else None
        if isinstance(widget, QWidget) and widget.isEnabled():
            widget.setFocus(Qt.FocusReason.ShortcutFocusReason)

    def _open_page(self, name: str) -> QWidget:
        self.show_page(name)
        return self.pages[name]

    def current_page_name(self) -> str:
        """The name of the page shown now."""
        return self._names[self.stack.currentIndex()]

    def show_page(self, name: str) -> None:
        """Switch to page `name` (building it on first use)."""
        row = self._names.index(name)
        if self.sidebar.currentRow() != row:
            self.sidebar.setCurrentRow(row)  # → _show_row
        else:
            self._show_row(row)

    def _show_row(self, row: int) -> None:
        if row < 0:
            return
        name = self._names[row]
        widget = self.page(name)
        self.stack.setCurrentIndex(row)
        self.services.settings.set("window/page", name)
        if name == "models" and hasattr(self, "downloads_button"):
            self.downloads_button.setVisible(False)  # the Models page shows the downloads itself
        hook = getattr(widget, "on_shown", None)
        if callable(hook):
            hook()

    def set_theme(self, theme: str) -> None:
        """Switch theme and remember it."""
        from .theme import apply_theme

        self.services.settings.set("theme", theme)
        app = QApplication.instance()
        if isinstance(app, QApplication):
            apply_theme(app, theme)

    # -- status bar -------------------------------------------------------------------------------
    def _on_profile(self, profile: dict) -> None:
        text, tip = describe_gpu(profile)
        self.gpu_label.setText(text)
        self.gpu_label.setToolTip(tip)

    def _on_hardware_failed(self, message: str) -> None:
        self.gpu_label.setText("Hardware unknown")
        self.gpu_label.setToolTip(f"Hardware detection failed: {message}\nJobs still run; the planner assumes CPU.")

    def _on_ram(self, available: int, total: int) -> None:
        self.ram_label.setText(f"RAM {available / GIB:.1f} / {total / GIB:.1f} GB free")

    def _on_jobs(self, running: int) -> None:
        self.jobs_label.setText("No jobs running" if running == 0 else
                                f"{running} job{'s' if running != 1 else ''} running")

    # -- state ------------------------------------------------------------------------------------
    def _restore_geometry(self) -> None:
        saved = self.services.settings.get("window/geometry")
        if isinstance(saved, str) and saved:
            if self.restoreGeometry(QByteArray.fromBase64(saved.encode("ascii"))):
                return
        self.resize(1200, 800)

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt's name
        """The platform's ThemeChange (its palette changed) goes to the theme follower."""
        if event.type() == QEvent.Type.ThemeChange and hasattr(self, "theme_follower"):
            self.theme_follower.desktop_changed()
        super().changeEvent(event)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        """Remember the geometry, let pages save their work, stop the workers."""
        self.services.settings.set("window/geometry", bytes(self.saveGeometry().toBase64()).decode("ascii"))
        for widget in self.pages.values():
            hook = getattr(widget, "shutdown", None)
            if callable(hook):
                try:
                    hook()
                except Exception:  # noqa: BLE001 - closing must go on
                    log.error("page shutdown failed:\n%s", traceback.format_exc())
        self.services.shutdown()
        event.accept()
