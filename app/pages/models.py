"""The Models page: the local library (Bitsmith folders, downloaded Hugging Face folders, .gguf files), a Hub
search as you type with a fit badge per result for this machine at the chosen budget, a details pane for the
selected result with resumable downloads (model_details, model_downloads, app/downloads.py).

The library is read from the models folder without torch (model_summary reads bitsmith.json). The search runs
the Hub client (bitsmith.engine.hub) on a pool thread, debounced; each result's fit comes from the planner with
config.json and safetensors headers only, before anything is downloaded. Offline, the page says so and keeps
the library usable.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, QUrl
from PySide6.QtGui import QColor, QDesktopServices
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..background import error_text, run_in_background
from ..downloads import DownloadManager
from ..tables import setup_list_table
from .model_details import ModelDetailsPane
from .model_downloads import DownloadsPanel
from .model_format import fit_badge, human_bytes, human_count

DEBOUNCE_MS = 400
SEARCH_LIMIT = 25


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def scan_library(models_dir: Path) -> list[dict[str, Any]]:
    """Every model in the models folder: Bitsmith folders (with bpw and metrics), Hugging Face folders and
    .gguf files, by name. Unfinished downloads and quantizations (hidden '.partial' folders) are skipped."""
    from bitsmith.engine.model_summary import summarize

    out: list[dict[str, Any]] = []
    if not models_dir.is_dir():
        return out
    for entry in sorted(models_dir.iterdir(), key=lambda p: p.name.lower()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix.lower() == ".gguf":
            out.append({"name": entry.name, "kind": "GGUF", "path": entry, "size": entry.stat().st_size,
                        "bpw": None, "ppl": None, "source": None})
        elif entry.is_dir() and (entry / "bitsmith.json").is_file():
            try:
                s = summarize(entry)
            except Exception as exc:  # noqa: BLE001 - one damaged folder must not hide the others
                out.append({"name": entry.name, "kind": "Bitsmith (damaged)", "path": entry,
                            "size": _dir_bytes(entry), "bpw": None, "ppl": None, "source": error_text(exc)})
                continue
            metrics = s.get("metrics") or {}
            out.append({"name": entry.name, "kind": "Bitsmith", "path": entry, "size": s["size_bytes"],
                        "bpw": s.get("bpw_quantized"), "ppl": metrics.get("heldout_ppl"),
                        "ppl_fp": metrics.get("heldout_ppl_fp"), "source": s.get("source")})
        elif entry.is_dir() and (entry / "config.json").is_file():
            out.append({"name": entry.name.replace("--", "/"), "kind": "Hugging Face", "path": entry,
                        "size": _dir_bytes(entry), "bpw": 16.0, "ppl": None, "source": None})
        elif entry.is_dir():
            for gguf in sorted(entry.glob("*.gguf")):
                out.append({"name": f"{entry.name}/{gguf.name}", "kind": "GGUF", "path": gguf,
                            "size": gguf.stat().st_size, "bpw": None, "ppl": None, "source": None})
    return out


class ModelsPage(QWidget):
    """Library above, Hub search below (see the module docstring)."""

    def __init__(self, services: Any) -> None:
        super().__init__()
        self.services = services
        self.library: list[dict[str, Any]] = []
        self.results: list[Any] = []
        self._search_seq = 0
        self.searching = False
        self.downloads = DownloadManager(services, parent=self)
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
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh_library)
        head.addWidget(refresh)
        lv.addLayout(head)
        self.lib_table = QTableWidget(0, 6)
        self.lib_table.setHorizontalHeaderLabels(["Model", "Kind", "Size", "Bits/weight", "Perplexity", "Source"])
        setup_list_table(self.lib_table)
        self.lib_table.itemSelectionChanged.connect(self._lib_selection)
        self.lib_table.doubleClicked.connect(lambda _i: self.chat_selected())
        lv.addWidget(self.lib_table, 1)
        self.lib_empty = QLabel("")
        self.lib_empty.setObjectName("muted")
        lv.addWidget(self.lib_empty)
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
        self.budget_spin = QDoubleSpinBox()
        self.budget_spin.setRange(2.2, 16.0)
        self.budget_spin.setDecimals(2)
        self.budget_spin.setSingleStep(0.25)
        self.budget_spin.setSuffix(" bpw")
        self.budget_spin.setToolTip("The budget the fit badges assume")
        self.budget_spin.setValue(float(services.settings.get("quantize/default_bpw", 2.5) or 2.5))
        self.budget_spin.valueChanged.connect(self._schedule_search)
        row.addWidget(self.search_edit, 1)
        row.addWidget(self.sort_combo)
        row.addWidget(self.size_combo)
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
        self._check_offline()
        self.refresh_library()

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
        """Re-read the models folder."""
        folder = self.services.models_dir()
        self.folder_label.setText(f"  {folder}")
        self.library = scan_library(folder)
        t = self.lib_table
        t.setRowCount(len(self.library))
        for i, m in enumerate(self.library):
            ppl = f"{m['ppl']:.2f}" if isinstance(m.get("ppl"), (int, float)) else "–"
            if isinstance(m.get("ppl_fp"), (int, float)) and ppl != "–":
                ppl += f" (from {m['ppl_fp']:.2f})"
            bpw = f"{m['bpw']:.2f}" if isinstance(m.get("bpw"), (int, float)) else "–"
            for col, text in enumerate((m["name"], m["kind"], human_bytes(m["size"]), bpw, ppl,
                                        str(m.get("source") or ""))):
                t.setItem(i, col, QTableWidgetItem(text))
        self.lib_empty.setText("" if self.library else
                               "No models yet. Quantize the bundled demo on the Quantize page, or download one "
                               "from the Hub below.")
        self._lib_selection()

    def selected_model(self) -> dict[str, Any] | None:
        """The selected library entry."""
        rows = {i.row() for i in self.lib_table.selectedItems()}
        return self.library[min(rows)] if rows and min(rows) < len(self.library) else None

    def _lib_selection(self) -> None:
        on = self.selected_model() is not None
        for b in (self.chat_button, self.open_button, self.delete_button):
            b.setEnabled(on)

    def chat_selected(self) -> None:
        """Open the chat page on the selected model."""
        m = self.selected_model()
        if m is None or self.services.open_page is None:
            return
        chat = self.services.open_page("chat")
        use = getattr(chat, "use_model", None)
        if callable(use):
            use(str(m["path"]), "llama.cpp" if m["kind"] == "GGUF" else None)

    def open_selected(self) -> None:
        """Show the model in the file manager."""
        m = self.selected_model()
        if m is not None:
            path = m["path"] if m["path"].is_dir() else m["path"].parent
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))

    def delete_selected(self) -> bool:
        """Delete the selected model after the user confirms; True when it was deleted."""
        m = self.selected_model()
        if m is None:
            return False
        answer = QMessageBox.question(
            self, "Delete model",
            f"Delete {m['name']} ({human_bytes(m['size'])})?\n\n{m['path']}\n\nThis cannot be undone.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        if answer != QMessageBox.StandardButton.Yes:
            return False
        try:
            if m["path"].is_dir():
                shutil.rmtree(m["path"])
            else:
                m["path"].unlink()
        except OSError as exc:
            QMessageBox.warning(self, "Could not delete", f"{m['path']} could not be deleted: {exc}.\n"
                                "Close programs using it and try again.")
            return False
        self.refresh_library()
        return True

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
        profile = self.services.hardware.profile
        self.searching = True
        self.search_status.setText("Searching…" if query else "Searching the most popular models…")

        def call() -> list[Any]:
            from bitsmith.engine.hub import search_models

            hardware = None
            if profile is not None:
                from bitsmith.engine.hardware import HardwareProfile

                hardware = HardwareProfile.from_dict(profile)
            return search_models(query or None, min_params=lo, max_params=hi, sort=sort, limit=SEARCH_LIMIT,
                                 bpw=bpw, hardware=hardware)

        def done(models: list[Any]) -> None:
            if seq != self._search_seq:
                return  # a newer search is on its way
            self.searching = False
            self.show_results(models, bpw)

        def failed(exc: BaseException) -> None:
            if seq != self._search_seq:
                return
            self.searching = False
            self.results = []
            self.hub_table.setRowCount(0)
            self.search_status.setText(f"Search failed: {error_text(exc)}")

        run_in_background(call, done, failed)

    def show_results(self, models: list[Any], bpw: float) -> None:
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
        self.search_status.setText(f"{len(models)} model{'s' if len(models) != 1 else ''} · fit for chat at "
                                   f"{bpw:g} bpw on this machine" if models else "No models found.")

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
        """The window is closing: remember how far the downloads got (they resume on the next start)."""
        self.downloads.shutdown()

    def on_shown(self) -> None:
        """Re-read the library (jobs may have added models); online, show popular models until the user types."""
        self.refresh_library()
        if not self.results and not self.searching and not self.offline():
            self._schedule_search()
