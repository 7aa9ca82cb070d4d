"""The Models page: the local library (Bitsmith folders, downloaded Hugging Face folders, .gguf files, imported GGUF
files), a Hub search as you type with size, family and licence filters and a fit badge per result for this machine
at the chosen budget, a details pane for the selected result with resumable downloads (model_details,
model_downloads, app/downloads.py).

The library is read from the models folder without torch (model_summary reads bitsmith.json) and re-read when the
folder changes on disk; a model deleted behind the app's back is said in plain words, never an error. Import GGUF
links or copies a file in (app/import_gguf.py). The search runs the Hub client (bitsmith.engine.hub) on a pool
thread, debounced; the family and licence filters are in model_filters; each shown result's fit comes from the
planner with config.json and safetensors headers only, before anything is downloaded. Offline, the page says so and
keeps the library usable.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

from PySide6.QtCore import QFileSystemWatcher, QObject, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QColor, QDesktopServices, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)
from shiboken6 import isValid

from bitsmith.engine.errors import BitsmithError

from .. import import_gguf
from ..background import error_text, run_in_background
from ..services import default_budget
from ..tables import setup_list_table
from .model_details import ModelDetailsPane
from .model_downloads import DownloadsPanel
from .model_filters import FAMILIES, LICENCES, SearchFilter
from .model_format import fit_badge, human_bytes, human_count

DEBOUNCE_MS = 400
SEARCH_LIMIT = 25
WATCH_DEBOUNCE_MS = 300  # the models folder changed on disk: re-read it once things settle
IMPORTED_KIND = "GGUF (imported)"


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def scan_library(models_dir: Path) -> list[dict[str, Any]]:
    """Every model in the models folder: Bitsmith folders (with bpw and metrics), Hugging Face folders, .gguf files
    and imported GGUF files, by name. Unfinished downloads, quantizations and imports (hidden '.partial' folders)
    are skipped, and so is an entry deleted while the folder is read."""
    out: list[dict[str, Any]] = []
    if not models_dir.is_dir():
        return out
    try:
        entries = sorted(models_dir.iterdir(), key=lambda p: p.name.lower())
    except OSError:  # the folder went away (or became unreadable) just now
        return out
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            out.extend(_entries(entry))
        except OSError:  # deleted behind our back while we looked at it: it is not in the library any more
            continue
    return out


def _entries(entry: Path) -> list[dict[str, Any]]:
    """The library rows one top-level entry of the models folder makes (none, one, or a GGUF per file)."""
    from bitsmith.engine.model_summary import summarize

    if entry.is_file() and entry.suffix.lower() == ".gguf":
        return [{"name": entry.name, "kind": "GGUF", "path": entry, "size": entry.stat().st_size,
                 "bpw": None, "ppl": None, "source": None}]
    if not entry.is_dir():
        return []
    record = import_gguf.read_import(entry)
    if record is not None:
        gguf = entry / str(record.get("file") or "")
        if not gguf.is_file():
            gguf = next(iter(sorted(entry.glob("*.gguf"))), entry)
        return [{"name": gguf.name if gguf.is_file() else entry.name, "kind": IMPORTED_KIND if gguf.is_file() else
                 f"{IMPORTED_KIND}, file missing", "path": gguf, "folder": entry,
                 "size": gguf.stat().st_size if gguf.is_file() else _dir_bytes(entry), "bpw": None, "ppl": None,
                 "source": record.get("source"), "source_stamp": record.get("source_stamp")}]
    if (entry / "bitsmith.json").is_file():
        try:
            s = summarize(entry)
        except Exception as exc:  # noqa: BLE001 - one damaged folder must not hide the others
            if not entry.is_dir():
                raise FileNotFoundError(entry) from exc  # not damaged: deleted while it was read
            return [{"name": entry.name, "kind": "Bitsmith (damaged)", "path": entry, "size": _dir_bytes(entry),
                     "bpw": None, "ppl": None, "source": error_text(exc)}]
        metrics = s.get("metrics") or {}
        if isinstance(metrics.get("finetune"), dict):  # its perplexity was measured before the fine-tune: not shown
            tuned_from = Path(str(_read_meta_source(entry).get("finetuned_from") or "")).name
            return [{"name": entry.name, "kind": "Bitsmith", "path": entry, "size": s["size_bytes"],
                     "bpw": s.get("bpw_quantized"), "ppl": None, "ppl_fp": None,
                     "source": f"fine-tuned from {tuned_from}" if tuned_from else s.get("source")}]
        return [{"name": entry.name, "kind": "Bitsmith", "path": entry, "size": s["size_bytes"],
                 "bpw": s.get("bpw_quantized"), "ppl": metrics.get("heldout_ppl"),
                 "ppl_fp": metrics.get("heldout_ppl_fp"), "source": s.get("source")}]
    if (entry / "config.json").is_file():
        return [{"name": entry.name.replace("--", "/"), "kind": "Hugging Face", "path": entry,
                 "size": _dir_bytes(entry), "bpw": 16.0, "ppl": None, "source": None}]
    return [{"name": f"{entry.name}/{gguf.name}", "kind": "GGUF", "path": gguf, "size": gguf.stat().st_size,
             "bpw": None, "ppl": None, "source": None} for gguf in sorted(entry.glob("*.gguf"))]


def _read_meta_source(folder: Path) -> dict[str, Any]:
    """The `source` record of a Bitsmith folder's bitsmith.json ({} when unreadable)."""
    from bitsmith.engine.jobfiles import read_json

    source = (read_json(folder / "bitsmith.json") or {}).get("source")
    return source if isinstance(source, dict) else {}


def is_gguf_entry(m: dict[str, Any]) -> bool:
    """Whether a library row is a GGUF file (llama.cpp runs it)."""
    return str(m["path"]).lower().endswith(".gguf")


class _ImportRelay(QObject):
    """Carries import progress from the pool thread to the page (queued signal)."""

    progress = Signal(object, object)  # done, total bytes (Python ints: beyond 32 bits)


class ModelsPage(QWidget):
    """Library above, Hub search below (see the module docstring)."""

    def __init__(self, services: Any) -> None:
        super().__init__()
        self.services = services
        self.library: list[dict[str, Any]] = []
        self.results: list[Any] = []
        self._search_seq = 0
        self.searching = False
        self.downloads = services.download_manager()
        self.downloads.write_failed.connect(self._download_list_not_saved)
        self.downloads.completed.connect(self._download_completed)

        v = QVBoxLayout(self)
        v.setContentsMargins(18, 14, 18, 12)
        self.banner = QLabel("")
        self.banner.setObjectName("banner")
        self.banner.setWordWrap(True)
        self.banner.setVisible(False)
        v.addWidget(self.banner)
        split = QSplitter(Qt.Orientation.Vertical)

        lib = QWidget()
        lv = QVBoxLayout(lib)
        lv.setContentsMargins(0, 0, 0, 0)
        head = QHBoxLayout()
        title = QLabel("Your models")
        title.setStyleSheet("font-size: 17px; font-weight: 600;")
        head.addWidget(title)
        self.folder_label = QLabel("")
        self.folder_label.setObjectName("muted")
        head.addWidget(self.folder_label, 1)
        self.import_button = QPushButton("Import GGUF…")
        self.import_button.setToolTip("Add a .gguf model file from this computer to your library (Ctrl+I)")
        self.import_button.clicked.connect(self.import_gguf)
        head.addWidget(self.import_button)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip("Read the models folder again (F5)")
        self.refresh_button.clicked.connect(self.refresh_library)
        head.addWidget(self.refresh_button)
        lv.addLayout(head)
        import_row = QHBoxLayout()
        self.import_bar = QProgressBar()
        self.import_bar.setRange(0, 1000)
        self.import_cancel = QPushButton("Cancel import")
        self.import_cancel.clicked.connect(self.cancel_import)
        import_row.addWidget(self.import_bar, 1)
        import_row.addWidget(self.import_cancel)
        lv.addLayout(import_row)
        for w in (self.import_bar, self.import_cancel):
            w.setVisible(False)
        self.lib_table = QTableWidget(0, 6)
        self.lib_table.setHorizontalHeaderLabels(["Model", "Kind", "Size", "Bits/weight", "Perplexity", "Source"])
        setup_list_table(self.lib_table)
        self.lib_table.setWordWrap(False)  # one line a model; a long source path is shortened in the middle
        self.lib_table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.lib_table.horizontalHeader().setSectionResizeMode(5, QHeaderView.ResizeMode.Interactive)
        self.lib_table.setColumnWidth(5, 240)
        self.lib_table.itemSelectionChanged.connect(self._lib_selection)
        self.lib_table.doubleClicked.connect(lambda _i: self.chat_selected())
        lv.addWidget(self.lib_table, 1)
        self.lib_empty = QLabel("")
        self.lib_empty.setObjectName("muted")
        self.lib_empty.setWordWrap(True)
        lv.addWidget(self.lib_empty)
        self.lib_message = QLabel("")  # what just happened to the library: an import, a model gone from disk
        self.lib_message.setWordWrap(True)
        self.lib_message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.lib_message.setVisible(False)
        lv.addWidget(self.lib_message)
        buttons = QHBoxLayout()
        self.chat_button = QPushButton("Chat with it")
        self.chat_button.clicked.connect(self.chat_selected)
        self.open_button = QPushButton("Open folder")
        self.open_button.clicked.connect(self.open_selected)
        self.delete_button = QPushButton("Delete…")
        self.delete_button.clicked.connect(self.delete_selected)
        for b in (self.chat_button, self.open_button, self.delete_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        lv.addLayout(buttons)
        self.downloads_panel = DownloadsPanel(self.downloads)
        lv.addWidget(self.downloads_panel)
        split.addWidget(lib)

        hub = QWidget()
        hv = QVBoxLayout(hub)
        hv.setContentsMargins(0, 8, 0, 0)
        hhead = QHBoxLayout()
        htitle = QLabel("Find a model on the Hugging Face Hub")
        htitle.setStyleSheet("font-size: 17px; font-weight: 600;")
        hhead.addWidget(htitle)
        hhead.addStretch(1)
        hv.addLayout(hhead)
        row = QHBoxLayout()
        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("Search text-generation models, e.g. qwen 7b instruct")
        self.search_edit.setClearButtonEnabled(True)
        self.search_edit.textChanged.connect(self._schedule_search)
        self.sort_combo = QComboBox()
        for key, text in (("downloads", "Most downloaded"), ("likes", "Most liked"), ("recent", "Recently updated"),
                          ("trending", "Trending")):
            self.sort_combo.addItem(text, key)
        self.sort_combo.currentIndexChanged.connect(self._schedule_search)
        self.size_combo = QComboBox()
        for text, lo, hi in (("Any size", None, None), ("≤ 2 B", None, "2B"), ("2–9 B", "2B", "9B"),
                             ("9–35 B", "9B", "35B"), ("> 35 B", "35B", None)):
            self.size_combo.addItem(text, (lo, hi))
        self.size_combo.currentIndexChanged.connect(self._schedule_search)
        self.family_combo = QComboBox()
        self.family_combo.setAccessibleName("Model family")
        self.family_combo.addItem("Any family", None)
        for key, label, _pattern, _arch in FAMILIES:
            self.family_combo.addItem(label, key)
        self.family_combo.setToolTip("The model family, read from the model's name, its base model or its "
                                     "architecture")
        self.family_combo.currentIndexChanged.connect(self._schedule_search)
        self.licence_combo = QComboBox()
        self.licence_combo.setAccessibleName("Licence")
        self.licence_combo.addItem("Any licence", None)
        for key, label, ids in LICENCES:
            self.licence_combo.addItem(label, key)
            self.licence_combo.setItemData(self.licence_combo.count() - 1, ", ".join(ids),
                                           Qt.ItemDataRole.ToolTipRole)
        self.licence_combo.setToolTip("The licence the model's Hub page declares")
        for combo in (self.family_combo, self.licence_combo):  # long names elide instead of widening the row
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(12)
        self.licence_combo.currentIndexChanged.connect(self._schedule_search)
        self.budget_spin = QDoubleSpinBox()
        self.budget_spin.setRange(2.2, 16.0)
        self.budget_spin.setDecimals(2)
        self.budget_spin.setSingleStep(0.25)
        self.budget_spin.setSuffix(" bpw")
        self.budget_spin.setToolTip("The budget the fit badges assume")
        self.budget_spin.setValue(default_budget(services.settings))
        self.budget_spin.valueChanged.connect(self._schedule_search)
        row.addWidget(self.search_edit, 1)
        row.addWidget(self.sort_combo)
        row.addWidget(self.size_combo)
        row.addWidget(self.family_combo)
        row.addWidget(self.licence_combo)
        row.addWidget(QLabel("Fit at"))
        row.addWidget(self.budget_spin)
        hv.addLayout(row)
        self.search_status = QLabel("")
        self.search_status.setObjectName("muted")
        self.search_status.setWordWrap(True)
        hv.addWidget(self.search_status)
        self.hub_table = QTableWidget(0, 6)
        self.hub_table.setHorizontalHeaderLabels(["Model", "Parameters", "Size (16-bit)", "Downloads", "License",
                                                  "Fit on this machine"])
        setup_list_table(self.hub_table)
        self.hub_table.itemSelectionChanged.connect(self._hub_selection)
        self.details = ModelDetailsPane(self.downloads)
        hsplit = QSplitter(Qt.Orientation.Horizontal)
        hsplit.addWidget(self.hub_table)
        hsplit.addWidget(self.details)
        hsplit.setSizes([620, 420])
        hv.addWidget(hsplit, 1)
        split.addWidget(hub)
        split.setSizes([320, 380])
        v.addWidget(split, 1)

        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(DEBOUNCE_MS)
        self.timer.timeout.connect(self.search)
        services.settings.changed.connect(self._on_setting)
        self._import_cancel: threading.Event | None = None
        self._import_ended: threading.Event | None = None
        self._closed = False
        self.watcher = QFileSystemWatcher(self)
        self.watcher.directoryChanged.connect(lambda _p: self._watch_timer.start())
        self._watch_timer = QTimer(self)
        self._watch_timer.setSingleShot(True)
        self._watch_timer.setInterval(WATCH_DEBOUNCE_MS)
        self._watch_timer.timeout.connect(self.refresh_library)
        self._build_shortcuts()
        self._check_offline()
        self.refresh_library()

    def _build_shortcuts(self) -> None:
        """Keyboard reach: find (Ctrl+F), import (Ctrl+I), refresh (F5); on the library, Enter chats and Delete
        deletes (after asking)."""
        for keys, slot, widget in (("Ctrl+F", self.focus_search, self), ("Ctrl+I", self.import_gguf, self),
                                   ("F5", self.refresh_library, self), ("Return", self.chat_selected, self.lib_table),
                                   ("Enter", self.chat_selected, self.lib_table),
                                   (QKeySequence.StandardKey.Delete, self.delete_selected, self.lib_table)):
            shortcut = QShortcut(QKeySequence(keys), widget)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut if widget is self else
                                Qt.ShortcutContext.WidgetShortcut)
            shortcut.activated.connect(slot)

    def focus_search(self) -> None:
        """Put the cursor in the Hub search field (the library when offline)."""
        if self.search_edit.isEnabled():
            self.search_edit.setFocus(Qt.FocusReason.ShortcutFocusReason)
            self.search_edit.selectAll()
        else:
            self.lib_table.setFocus(Qt.FocusReason.ShortcutFocusReason)

    def focus_target(self) -> QWidget:
        """Where the keyboard goes when the page is opened by its shortcut."""
        return self.search_edit if self.search_edit.isEnabled() else self.lib_table

    def _on_setting(self, key: str) -> None:
        if key == "models_dir":
            self.refresh_library()

    # -- offline ----------------------------------------------------------------------------------
    def offline(self) -> bool:
        """Whether Hub access is switched off."""
        from bitsmith.engine.hub_common import is_offline

        return is_offline()

    def _download_list_not_saved(self, why: str) -> None:
        """Downloads go on, but a restart would not know them: say so where the downloads are."""
        self.banner.setText(f"Your downloads continue, but {why}. Free some disk space, or Bitsmith will not "
                            "offer to resume them after a restart.")
        self.banner.setVisible(True)

    def _check_offline(self) -> bool:
        off = self.offline()
        self.banner.setVisible(off)
        if off:
            self.banner.setText("Offline mode: searching the Hub is switched off (HF_HUB_OFFLINE is set). Your "
                                "models below still work; unset HF_HUB_OFFLINE and restart to search.")
        self.search_edit.setEnabled(not off)
        return off

    # -- library ----------------------------------------------------------------------------------
    def refresh_library(self) -> None:
        """Re-read the models folder (also when it changes on disk), keeping the selected model selected."""
        folder = self.services.models_dir()
        self.folder_label.setText(f"  {folder}")
        chosen = self.selected_model()
        self.library = scan_library(folder)
        self._watch(folder)
        t = self.lib_table
        t.blockSignals(True)
        t.clearSelection()
        t.setRowCount(len(self.library))
        for i, m in enumerate(self.library):
            ppl = f"{m['ppl']:.2f}" if isinstance(m.get("ppl"), (int, float)) else "–"
            if isinstance(m.get("ppl_fp"), (int, float)) and ppl != "–":
                ppl += f" (from {m['ppl_fp']:.2f})"
            bpw = f"{m['bpw']:.2f}" if isinstance(m.get("bpw"), (int, float)) else "–"
            for col, text in enumerate((m["name"], m["kind"], human_bytes(m["size"]), bpw, ppl,
                                        str(m.get("source") or ""))):
                item = QTableWidgetItem(text)
                if col == 5 and text:
                    item.setToolTip(f"Imported from {text}" if m.get("folder") is not None else text)
                t.setItem(i, col, item)
            if chosen is not None and m["path"] == chosen["path"]:
                t.selectRow(i)
        t.blockSignals(False)
        self.lib_empty.setText("" if self.library else
                               "No models yet. Quantize the bundled demo on the Quantize page, download one "
                               "from the Hub below, or import a .gguf file.")
        self._lib_selection()

    def _watch(self, folder: Path) -> None:
        """Follow the models folder on disk, so a model deleted or added outside Bitsmith shows at once."""
        watched = self.watcher.directories()
        if watched != [str(folder)]:
            if watched:
                self.watcher.removePaths(watched)
            if folder.is_dir():
                self.watcher.addPath(str(folder))
        elif not folder.is_dir():
            self.watcher.removePaths(watched)

    def selected_model(self) -> dict[str, Any] | None:
        """The selected library entry."""
        rows = {i.row() for i in self.lib_table.selectedItems()}
        return self.library[min(rows)] if rows and min(rows) < len(self.library) else None

    def _lib_selection(self) -> None:
        on = self.selected_model() is not None
        for b in (self.chat_button, self.open_button, self.delete_button):
            b.setEnabled(on)

    def say(self, text: str) -> None:
        """Tell the user what happened to the library (below the list); '' hides it."""
        self.lib_message.setText(text)
        self.lib_message.setVisible(bool(text))

    def _still_there(self, m: dict[str, Any]) -> bool:
        """Whether the entry's files still exist; if not, say so in plain words and re-read the folder."""
        if m["path"].exists():
            return True
        where = m.get("folder") or m["path"]
        self.say(f"{m['name']} is no longer in the models folder: it was moved or deleted outside Bitsmith "
                 f"({where}). The list has been refreshed.")
        self.refresh_library()
        return False

    def chat_selected(self) -> None:
        """Open the chat page on the selected model (GGUF files with llama.cpp)."""
        m = self.selected_model()
        if m is None or self.services.open_page is None or not self._still_there(m):
            return
        chat = self.services.open_page("chat")
        use = getattr(chat, "use_model", None)
        if callable(use):
            use(str(m["path"]), "llama.cpp" if is_gguf_entry(m) else None)

    def open_selected(self) -> None:
        """Show the model in the file manager."""
        m = self.selected_model()
        if m is not None and self._still_there(m):
            path = m.get("folder") or (m["path"] if m["path"].is_dir() else m["path"].parent)
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))

    def delete_selected(self) -> bool:
        """Delete the selected model after the user confirms; True when it was deleted."""
        m = self.selected_model()
        if m is None or not self._still_there(m):
            return False
        target = m.get("folder") or m["path"]
        kept = (f"\n\nThe original file stays where it was: {m['source']}" if m.get("folder") and m.get("source")
                else "")
        answer = QMessageBox.question(
            self, "Delete model",
            f"Delete {m['name']} ({human_bytes(m['size'])})?\n\n{target}\n\nThis cannot be undone.{kept}",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        if answer != QMessageBox.StandardButton.Yes:
            return False
        try:
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()
        except FileNotFoundError:  # gone while the question was open: what the user wanted anyway
            pass
        except OSError as exc:
            QMessageBox.warning(self, "Could not delete", f"{target} could not be deleted: {exc}.\n"
                                "Close programs using it and try again.")
            return False
        self.say("")
        self.refresh_library()
        return True

    # -- import -----------------------------------------------------------------------------------
    @property
    def importing(self) -> bool:
        """Whether a GGUF import is under way."""
        return self._import_cancel is not None

    def import_gguf(self, path: str | None = None) -> None:
        """Ask for a .gguf file (unless given) and add it to the library (app.import_gguf: linked or copied)."""
        if self.importing:
            return
        if not path:
            path, _ = QFileDialog.getOpenFileName(self, "Import a GGUF model", str(Path.home()),
                                                  "GGUF models (*.gguf);;All files (*)")
            if not path:
                return
        source = Path(path)
        stamp = import_gguf.source_stamp(source)
        known = next((m for m in self.library if m.get("folder") and m.get("source") == str(source.resolve())
                      and stamp is not None and m.get("source_stamp") == stamp), None)
        if known is not None and self._still_there(known):
            self._select_path(known["path"])
            self.say(f"{source.name} is in your library already (imported earlier as {known['folder'].name}).")
            return
        try:
            folder = self.services.models_dir()
            folder.mkdir(parents=True, exist_ok=True)
            plan = import_gguf.plan_import(folder, source)
        except (OSError, BitsmithError) as exc:
            self.refresh_library()
            self._select_path(source)  # when it is in the models folder already
            self.say(f"Cannot import {source.name}: {error_text(exc)}.")
            return
        cancel, ended = threading.Event(), threading.Event()
        self._import_cancel, self._import_ended = cancel, ended
        relay = _ImportRelay(self)
        relay.progress.connect(self._import_progress)

        def report(done: int, total: int) -> None:
            try:
                relay.progress.emit(done, total)
            except RuntimeError:  # the page is gone (the app is closing)
                pass

        for w in (self.import_bar, self.import_cancel):
            w.setVisible(True)
        self.import_cancel.setEnabled(True)
        self.import_button.setEnabled(False)
        self.import_bar.setValue(0)
        self.say(f"Importing {source.name} ({human_bytes(plan.size)})…")
        def work() -> Path:
            try:
                return import_gguf.run_import(plan, report, cancel.is_set)
            finally:
                ended.set()

        run_in_background(work, lambda target: self._imported(plan, target), lambda exc: self._import_failed(plan, exc))

    def _import_progress(self, done: int, total: int) -> None:
        if self.importing:
            self.import_bar.setValue(int(1000 * done / total) if total else 1000)

    def cancel_import(self) -> None:
        """Stop the copy after the current chunk; nothing is added to the library."""
        if self._import_cancel is not None:
            self._import_cancel.set()
            self.import_cancel.setEnabled(False)
            self.say("Cancelling the import…")

    def _end_import(self) -> None:
        self._import_cancel = self._import_ended = None
        for w in (self.import_bar, self.import_cancel):
            w.setVisible(False)
        self.import_button.setEnabled(True)

    def _imported(self, plan: import_gguf.ImportPlan, target: Path) -> None:
        if self._closed:
            return  # the window closed meanwhile; the model is in the folder, the next start lists it
        self._end_import()
        self.refresh_library()
        self._select_path(target)
        self.say(f"Imported {plan.source.name} ({human_bytes(plan.size)}) into {plan.folder}. Chat with it to run it "
                 "with llama.cpp; the original file stays where it was.")

    def _import_failed(self, plan: import_gguf.ImportPlan, exc: BaseException) -> None:
        if self._closed:
            return
        self._end_import()
        if isinstance(exc, import_gguf.ImportCancelled):
            self.say(f"Import of {plan.source.name} cancelled; nothing was added.")
        else:
            self.say(f"Cannot import {plan.source.name}: {error_text(exc)}.")
        self.refresh_library()

    def _select_path(self, path: Path) -> None:
        for i, m in enumerate(self.library):
            if m["path"] == path:
                self.lib_table.selectRow(i)
                return

    # -- search -----------------------------------------------------------------------------------
    def _schedule_search(self, *_args: Any) -> None:
        self.timer.start()

    def search(self) -> None:
        """Run the search now (the debounce timer calls this)."""
        query = self.search_edit.text().strip()
        if self._check_offline():
            return
        self._search_seq += 1
        seq = self._search_seq
        lo, hi = self.size_combo.currentData()
        sort = self.sort_combo.currentData()
        bpw = self.budget_spin.value()
        flt = self.search_filter()
        profile = self.services.hardware.profile
        self.searching = True
        self.search_status.setText("Searching…" if query or flt.family else "Searching the most popular models…")

        def call() -> list[Any]:
            from bitsmith.engine.hub import attach_fit, search_models

            hardware = None
            if profile is not None:
                from bitsmith.engine.hardware import HardwareProfile

                hardware = HardwareProfile.from_dict(profile)
            found = search_models(flt.hub_query(query or None), min_params=lo, max_params=hi,
                                  license=flt.hub_licence(), sort=sort, limit=flt.fetch_limit(SEARCH_LIMIT))
            kept = [m for m in found if flt.keeps(m)][:SEARCH_LIMIT]
            attach_fit(kept, bpw, hardware=hardware)  # only for what is shown: each fit reads the model's headers
            return kept

        def done(models: list[Any]) -> None:
            if seq != self._search_seq or self._closed or not isValid(self.hub_table):
                return  # a newer search is on its way, or the page closed (or was deleted) while this one ran
            self.searching = False
            self.show_results(models, bpw, flt)

        def failed(exc: BaseException) -> None:
            if seq != self._search_seq or self._closed or not isValid(self.hub_table):
                return
            self.searching = False
            self.results = []
            self.hub_table.setRowCount(0)
            self.search_status.setText(f"Search failed: {error_text(exc)}")

        run_in_background(call, done, failed)

    def search_filter(self) -> SearchFilter:
        """The family and licence chosen above the results."""
        return SearchFilter(self.family_combo.currentData(), self.licence_combo.currentData())

    def show_results(self, models: list[Any], bpw: float, flt: SearchFilter | None = None) -> None:
        """Fill the results table; the details pane keeps its model when the new results still have it."""
        self.results = list(models)
        shown = self.details.model_id
        t = self.hub_table
        t.blockSignals(True)
        t.clearSelection()
        t.setRowCount(len(models))
        for i, m in enumerate(models):
            text, color = fit_badge(m.fit, m.fit_note)
            name = m.id + ("  🔒 gated" if m.gated else "")
            cells = (name, human_count(m.params), human_bytes(m.size_bytes),
                     f"{m.downloads:,}" if m.downloads is not None else "–", m.license or "–", text)
            for col, cell in enumerate(cells):
                item = QTableWidgetItem(cell)
                if col == 5:
                    item.setForeground(QColor(color))
                    item.setToolTip(m.fit_note or f"chat at {bpw:g} bits per weight on this machine")
                t.setItem(i, col, item)
        keep = next((i for i, m in enumerate(models) if m.id == shown), None)
        if keep is not None:
            t.selectRow(keep)
            self.details.update_result(models[keep], fit_badge(models[keep].fit, models[keep].fit_note))
        t.blockSignals(False)
        if keep is None and shown is not None:
            self.details.show_model(None)
        what = flt.describe() if flt is not None else ""
        if models:
            self.search_status.setText(f"{len(models)} model{'s' if len(models) != 1 else ''}"
                                       f"{f' ({what})' if what else ''} · fit for chat at {bpw:g} bpw on this machine")
        else:
            self.search_status.setText(f"No {what} found. Try another family or licence, or other words."
                                       if what else "No models found.")

    def selected_result(self) -> Any:
        """The selected Hub search result."""
        rows = {i.row() for i in self.hub_table.selectedItems()}
        return self.results[min(rows)] if rows and min(rows) < len(self.results) else None

    def _hub_selection(self) -> None:
        m = self.selected_result()
        if m is None:
            return  # keep the pane on the last model (a download may be running)
        if m.id != self.details.model_id:
            self.details.show_model(m, fit_badge(m.fit, m.fit_note))

    def _download_completed(self, model_id: str, path: str) -> None:
        self.refresh_library()
        for i, m in enumerate(self.library):
            if str(m["path"]) == path:
                self.lib_table.selectRow(i)
        self.search_status.setText(f"{model_id} downloaded to {path}.")

    def shutdown(self) -> None:
        """The window is closing: remember how far the downloads got (they resume on the next start); a search or
        import still on its way finds no page to report to."""
        self.timer.stop()
        self._watch_timer.stop()
        self._search_seq += 1  # a search answering after this is dropped
        self._closed = True
        if self._import_cancel is not None and self._import_ended is not None:
            self._import_cancel.set()  # stop a copy at its next chunk, and wait: no half-copied file is left
            self._import_ended.wait(30.0)
        self.downloads.shutdown()

    def on_shown(self) -> None:
        """Re-read the library (jobs may have added models); online, show popular models until the user types."""
        self.refresh_library()
        if not self.results and not self.searching and not self.offline():
            self._schedule_search()
