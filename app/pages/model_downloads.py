"""The Models page's list of downloads in flight, paused, interrupted or failed, with Pause / Resume / Cancel, and
the offer to resume the downloads that were running when Bitsmith last closed."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..downloads import Download, DownloadManager
from ..tables import setup_list_table
from .model_format import human_bytes, human_eta, human_speed

STATUS_TEXT = {"downloading": "Downloading", "paused": "Paused", "interrupted": "Interrupted", "failed": "Failed"}


def status_text(d: Download) -> str:
    """'Downloading', 'Pausing…', 'Paused', 'Interrupted', 'Failed', 'Moving to the new folder…'…"""
    if d.running and d.stop_reason == "pause":
        return "Pausing…"
    if d.running and d.stop_reason == "cancel":
        return "Cancelling…"
    if d.relocating:
        return "Moving to the new folder…"
    return STATUS_TEXT.get(d.status, d.status)


def confirm_cancel(parent: QWidget, d: Download) -> bool:
    """Ask before deleting a download's partial files."""
    got = f" ({human_bytes(d.done_bytes)} downloaded so far)" if d.done_bytes else ""
    answer = QMessageBox.question(
        parent, "Cancel download",
        f"Cancel the download of {d.model_id} and delete what was downloaded{got}?\n\n"
        "Pause keeps the files so the download can resume later.",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


class DownloadsPanel(QWidget):
    """A table of the manager's downloads; hidden while there are none."""

    def __init__(self, manager: DownloadManager, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.manager = manager
        self.ids: list[str] = []
        v = QVBoxLayout(self)
        v.setContentsMargins(0, 6, 0, 0)
        head = QHBoxLayout()
        title = QLabel("Downloads")
        title.setStyleSheet("font-weight: 600;")
        head.addWidget(title)
        self.notice = QLabel("")
        self.notice.setWordWrap(True)
        head.addWidget(self.notice, 1)
        self.resume_all_button = QPushButton("Resume all")
        self.resume_all_button.clicked.connect(self._resume_all)
        head.addWidget(self.resume_all_button)
        v.addLayout(head)
        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["Model", "Status", "Progress", "Speed", "Time left"])
        setup_list_table(self.table)
        self.table.setMaximumHeight(110)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        v.addWidget(self.table)
        self.error_label = QLabel("")
        self.error_label.setWordWrap(True)
        self.error_label.setObjectName("muted")
        v.addWidget(self.error_label)
        buttons = QHBoxLayout()
        self.pause_button = QPushButton("Pause")
        self.pause_button.clicked.connect(lambda: self._act("pause"))
        self.resume_button = QPushButton("Resume")
        self.resume_button.clicked.connect(lambda: self._act("resume"))
        self.cancel_button = QPushButton("Cancel…")
        self.cancel_button.clicked.connect(lambda: self._act("cancel"))
        for b in (self.pause_button, self.resume_button, self.cancel_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        v.addLayout(buttons)
        manager.changed.connect(lambda _id: self.refresh())
        self.refresh()

    def selected(self) -> Download | None:
        """The selected download (the only one when there is one)."""
        rows = {i.row() for i in self.table.selectedItems()}
        if not rows and len(self.ids) == 1:
            rows = {0}
        row = min(rows) if rows else -1
        return self.manager.get(self.ids[row]) if 0 <= row < len(self.ids) else None

    def refresh(self) -> None:
        """Redraw from the manager, keeping the selection."""
        current = self.selected()
        self.ids = list(self.manager.downloads)
        self.setVisible(bool(self.ids))
        t = self.table
        t.blockSignals(True)
        t.setRowCount(len(self.ids))
        for i, model_id in enumerate(self.ids):
            d = self.manager.downloads[model_id]
            progress = f"{human_bytes(d.done_bytes)} of {human_bytes(d.total_bytes)}" if d.total_bytes else (
                human_bytes(d.done_bytes) if d.done_bytes else "–")
            cells = (model_id, status_text(d), progress, human_speed(d.speed_bps) if d.running else "",
                     human_eta(d.eta_s) if d.running else "")
            for col, text in enumerate(cells):
                item = t.item(i, col)
                if item is None:
                    t.setItem(i, col, QTableWidgetItem(text))
                elif item.text() != text:
                    item.setText(text)
            if current is not None and current.model_id == model_id:
                t.selectRow(i)
        t.blockSignals(False)
        n = len(self.manager.interrupted())
        self.notice.setText(f"  {n} download{'s were' if n != 1 else ' was'} interrupted when Bitsmith closed; "
                            "resume to continue where it stopped." if n else "")
        self.resume_all_button.setVisible(n > 0)
        self._update_buttons()

    def _update_buttons(self) -> None:
        d = self.selected()
        stopping = d is not None and d.stop_reason is not None
        self.pause_button.setEnabled(d is not None and d.running and not stopping)
        self.resume_button.setEnabled(d is not None and not d.running)
        self.cancel_button.setEnabled(d is not None and not stopping)
        self.error_label.setText(f"{d.model_id}: {d.error}" if d is not None and d.status == "failed" and d.error
                                 else "")

    def _act(self, action: str) -> None:
        d = self.selected()
        if d is None:
            return
        if action == "pause":
            self.manager.pause(d.model_id)
        elif action == "resume":
            self.manager.resume(d.model_id)
        elif confirm_cancel(self, d):
            self.manager.cancel(d.model_id)

    def _resume_all(self) -> None:
        self.manager.resume_all()
