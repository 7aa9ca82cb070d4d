"""The details of a Hub search result: the model card's opening text, its files with sizes, what a download
fetches, licence, gating, parameter count and the fit verdict, with Download / Pause / Resume / Cancel.

The card comes from the torch-free Hub client (bitsmith.engine.hub.model_card) on a pool thread; an answer for
a model the user has since moved away from is dropped. Downloads go through the page's DownloadManager.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..background import error_text, run_in_background
from ..downloads import DownloadManager, stored_token
from ..tables import setup_list_table
from .model_downloads import confirm_cancel, status_text
from .model_format import UNKNOWN_COLOR, human_bytes, human_count, progress_text

MAX_FILES_SHOWN = 200


@dataclass
class CardInfo:
    """What the pane shows about one model, gathered off the GUI thread."""

    card: Any  # bitsmith.engine.hub.ModelCardSummary
    fetched: set[str]  # the files a download takes
    download_bytes: int | None
    cannot_download: str | None  # why a download would be refused (pickle-only, GGUF-only…), or None
    has_token: bool
    in_library: bool


def load_card(model_id: str, dest: Any) -> CardInfo:
    """Read a model's card and work out what a download of it would fetch (runs on a pool thread)."""
    from bitsmith.engine.errors import BitsmithError
    from bitsmith.engine.hub import model_card
    from bitsmith.engine.hub_common import token_was_sent
    from bitsmith.engine.hub_download import RemoteFile, read_manifest, select_files

    card = model_card(model_id)
    try:
        chosen = select_files([RemoteFile(n, s) for n, s in card.files], None, False, model_id)
        fetched, size, refusal = {f.name for f in chosen}, sum(f.size or 0 for f in chosen), None
    except BitsmithError as exc:
        fetched, size, refusal = set(), None, error_text(exc)
    manifest = read_manifest(dest)
    return CardInfo(card, fetched, size, refusal, has_token=bool(stored_token()) or token_was_sent(None),
                    in_library=bool(manifest and manifest.get("model_id") == model_id))


class ModelDetailsPane(QWidget):
    """One Hub model's details and download controls (see the module docstring)."""

    def __init__(self, downloads: DownloadManager, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.downloads = downloads
        self.model: Any = None  # the HubModel shown
        self.fit: tuple[str, str] | None = None
        self.info: CardInfo | None = None
        self.loading = False
        self.error: str | None = None
        self._seq = 0

        v = QVBoxLayout(self)
        v.setContentsMargins(8, 0, 0, 0)
        self.title = QLabel("Select a model to see its details.")
        self.title.setStyleSheet("font-size: 15px; font-weight: 600;")
        self.title.setWordWrap(True)
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        v.addWidget(self.title)
        self.facts = QLabel("")
        self.facts.setWordWrap(True)
        self.facts.setTextFormat(Qt.TextFormat.RichText)
        v.addWidget(self.facts)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        v.addWidget(self.status)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setObjectName("muted")
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        v.addWidget(self.summary)
        self.files = QTableWidget(0, 3)
        self.files.setHorizontalHeaderLabels(["File", "Size", "Fetched"])
        setup_list_table(self.files, selectable=False)
        v.addWidget(self.files, 1)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        v.addWidget(self.progress)
        self.progress_label = QLabel("")
        self.progress_label.setWordWrap(True)
        v.addWidget(self.progress_label)
        buttons = QHBoxLayout()
        self.download_button = QPushButton("Download")
        self.download_button.clicked.connect(self.download)
        self.pause_button = QPushButton("Pause")
        self.pause_button.clicked.connect(lambda: self.model and self.downloads.pause(self.model.id))
        self.resume_button = QPushButton("Resume")
        self.resume_button.clicked.connect(lambda: self.model and self.downloads.resume(self.model.id))
        self.cancel_button = QPushButton("Cancel…")
        self.cancel_button.clicked.connect(self.cancel)
        for b in (self.download_button, self.pause_button, self.resume_button, self.cancel_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        v.addLayout(buttons)
        downloads.changed.connect(self._on_download_changed)
        downloads.completed.connect(self._on_completed)
        self._render()

    # -- showing a model --------------------------------------------------------------------------
    @property
    def model_id(self) -> str | None:
        """The id of the model shown, if any."""
        return self.model.id if self.model is not None else None

    def show_model(self, model: Any, fit: tuple[str, str] | None = None) -> None:
        """Show `model` (a HubModel from the search; None clears the pane) with its fit badge (text, colour)."""
        self._seq += 1
        seq = self._seq
        self.model, self.fit, self.info, self.error = model, fit, None, None
        self.loading = model is not None
        self._render()
        if model is None:
            return
        dest = self.downloads.dest_for(model.id)
        run_in_background(lambda: load_card(model.id, dest), lambda info: self._loaded(seq, info),
                          lambda exc: self._failed(seq, exc))

    def update_result(self, model: Any, fit: tuple[str, str] | None) -> None:
        """The same model came back in a new search (e.g. at another budget): show its new fit, keep the card."""
        if self.model is not None and model.id == self.model.id:
            self.model, self.fit = model, fit
            self._render()

    def _loaded(self, seq: int, info: CardInfo) -> None:
        if seq != self._seq:
            return  # the user has moved on to another model
        self.loading, self.info = False, info
        self._render()

    def _failed(self, seq: int, exc: BaseException) -> None:
        if seq != self._seq:
            return
        self.loading, self.error = False, error_text(exc)
        self._render()

    # -- downloads --------------------------------------------------------------------------------
    def download(self) -> None:
        """Start downloading the model shown."""
        if self.model is None:
            return
        size = self.info.download_bytes if self.info is not None else None
        self.downloads.start(self.model.id, total_bytes=size)

    def cancel(self) -> None:
        """Cancel the model's download after the user confirms (its partial files are deleted)."""
        d = self.downloads.get(self.model.id) if self.model is not None else None
        if d is not None and confirm_cancel(self, d):
            self.downloads.cancel(d.model_id)

    def _on_download_changed(self, model_id: str) -> None:
        if model_id == self.model_id:
            self._render_download()

    def _on_completed(self, model_id: str, _path: str) -> None:
        if model_id == self.model_id and self.info is not None:
            self.info.in_library = True
            self._render_download()

    # -- drawing ----------------------------------------------------------------------------------
    def _render(self) -> None:
        m, info = self.model, self.info
        if m is None:
            self.title.setText("Select a model to see its details.")
            self.facts.setText("")
            self.summary.setText("")
            self.status.setText("")
            self.files.setRowCount(0)
            self.files.setVisible(False)
        else:
            self.title.setText(m.id)
            card = info.card if info is not None else None
            params = card.params if card is not None and card.params else m.params
            licence = (card.license if card is not None else None) or m.license or "not stated"
            gated = card.gated if card is not None else m.gated
            text, color = self.fit or ("unknown", UNKNOWN_COLOR)
            facts = [f"Parameters: <b>{human_count(params)}</b>", f"Licence: <b>{licence}</b>",
                     "Gated: <b>yes</b> (accept its licence on the Hub)" if gated else "Gated: no"]
            if card is not None:
                facts.append(f"All files: <b>{human_bytes(card.total_bytes)}</b> in {len(card.files)}")
                if info.download_bytes is not None:
                    facts.append(f"Download: <b>{human_bytes(info.download_bytes)}</b> in {len(info.fetched)} files")
            facts.append(f"Fit: <span style='color:{color}'><b>{text}</b></span>")
            self.facts.setText(" · ".join(facts))
            self.summary.setText(card.summary if card is not None and card.summary else
                                 ("" if card is None else "The model card has no summary."))
            self.status.setText(self._status_text())
            self.status.setVisible(bool(self.status.text()))
            self._fill_files()
        self._render_download()

    def _status_text(self) -> str:
        if self.loading:
            return "Reading the model card…"
        if self.error:
            return f"Could not read the model card: {self.error}"
        info = self.info
        if info is None:
            return ""
        notes = []
        if info.cannot_download:
            notes.append(f"Bitsmith cannot download this model: {info.cannot_download}")
        if info.card.gated and not info.has_token:
            notes.append("This model is gated and no Hugging Face token is set: accept its licence on "
                         f"https://huggingface.co/{info.card.id}, then save a token on the Settings page (or set "
                         "HF_TOKEN) before downloading.")
        if info.in_library:
            notes.append("It is in your library already; downloading again only fetches what changed.")
        return "\n".join(notes)

    def _fill_files(self) -> None:
        info = self.info
        files = sorted(info.card.files) if info is not None else []
        shown = files[:MAX_FILES_SHOWN]
        self.files.setVisible(bool(files))
        self.files.setRowCount(len(shown) + (len(files) > len(shown)))
        for i, (name, size) in enumerate(shown):
            taken = name in info.fetched
            cells = (name, human_bytes(size), "✓" if taken else "")
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if not taken:
                    item.setForeground(QColor(UNKNOWN_COLOR))
                    item.setToolTip("Not needed to run the model: Bitsmith does not download it")
                self.files.setItem(i, col, item)
        if len(files) > len(shown):
            self.files.setItem(len(shown), 0, QTableWidgetItem(f"… and {len(files) - len(shown)} more files"))

    def _render_download(self) -> None:
        d = self.downloads.get(self.model_id) if self.model_id else None
        ready = self.model is not None and self.info is not None and not self.info.cannot_download
        self.download_button.setVisible(d is None)
        self.download_button.setEnabled(ready)
        self.download_button.setText("Download again" if ready and self.info.in_library else "Download")
        self.pause_button.setVisible(d is not None and d.running)
        self.pause_button.setEnabled(d is not None and d.running and d.stop_reason is None)
        self.resume_button.setVisible(d is not None and not d.running)
        self.cancel_button.setVisible(d is not None)
        self.cancel_button.setEnabled(d is not None and d.stop_reason is None)
        self.progress.setVisible(d is not None)
        if d is None:
            done = self.model is not None and self.info is not None and self.info.in_library
            self.progress_label.setText("Downloaded: it is in your library." if done else "")
            return
        fraction = d.fraction
        busy = fraction is None and d.running  # running with no known total: a busy bar
        self.progress.setRange(0, 0 if busy else 1000)
        if not busy:
            self.progress.setValue(int(1000 * min(fraction or 0.0, 1.0)))
        text = f"{status_text(d)}: " + progress_text(d.done_bytes, d.total_bytes, d.speed_bps if d.running else None,
                                                     d.eta_s if d.running else None)
        if d.status == "failed" and d.error:
            text += f"\n{d.error}"
        elif d.status == "interrupted":
            text += "\nBitsmith closed while this was downloading; Resume continues where it stopped."
        self.progress_label.setText(text)
