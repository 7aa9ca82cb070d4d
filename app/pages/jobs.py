"""The Jobs page: every job in the jobs folder (this session's and earlier ones) with its state and log, and
buttons to cancel, retry (the same job id: a job that checkpoints resumes) and open its folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, QUrl
from PySide6.QtGui import QDesktopServices, QFont
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from bitsmith.engine import jobfiles

from ..tables import setup_list_table

REFRESH_MS = 1500
LOG_TAIL_BYTES = 200_000
HIDDEN_KINDS = ("hardware", "preview_dataset")  # the status bar's periodic probes, the fine-tune page's previews
STATUS_TEXT = {"running": "Running", "done": "Done", "error": "Failed", "cancelled": "Cancelled"}


def job_status(state: dict[str, Any] | None) -> str:
    """running / done / error / cancelled; a 'running' state whose worker is gone is an error (it died)."""
    if not state:
        return "error"
    status = str(state.get("status") or "error")
    if status == "running" and not jobfiles.worker_alive(state):
        return "error"
    return status


def read_jobs(jobs_dir: Path) -> list[dict[str, Any]]:
    """One dict per job folder, newest first: id, kind, status, times, error, folder."""
    rows: list[dict[str, Any]] = []
    if not jobs_dir.is_dir():
        return rows
    for folder in jobs_dir.iterdir():
        if not folder.is_dir():
            continue
        state = jobfiles.read_state(folder)
        request = jobfiles.read_json(folder / jobfiles.REQUEST_FILE) or {}
        kind = (state or {}).get("kind") or request.get("kind") or "?"
        rows.append({
            "id": folder.name, "kind": kind, "status": job_status(state), "folder": folder,
            "started": (state or {}).get("started_at") or "", "updated": (state or {}).get("updated_at") or "",
            "error": (state or {}).get("error"), "request": request, "runs": (state or {}).get("runs", 0),
        })
    rows.sort(key=lambda r: (r["started"], r["id"]), reverse=True)
    return rows


def read_log_tail(folder: Path, limit: int = LOG_TAIL_BYTES) -> str:
    """The last `limit` bytes of a job's log (whole lines)."""
    path = folder / jobfiles.LOG_FILE
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - limit))
            data = f.read()
    except OSError:
        return "(no log yet)"
    text = data.decode("utf-8", errors="replace")
    if size > limit:
        text = "…\n" + text.split("\n", 1)[-1]
    return text


class JobsPage(QWidget):
    """A table of jobs and the selected job's details (see the module docstring)."""

    def __init__(self, services: Any) -> None:
        super().__init__()
        self.services = services
        self.rows: list[dict[str, Any]] = []
        v = QVBoxLayout(self)
        v.setContentsMargins(18, 14, 18, 12)
        head = QHBoxLayout()
        title = QLabel("Jobs")
        title.setStyleSheet("font-size: 17px; font-weight: 600;")
        head.addWidget(title)
        head.addStretch(1)
        self.show_probes = QCheckBox("Show hardware checks and dataset previews")
        self.show_probes.toggled.connect(self.refresh)
        head.addWidget(self.show_probes)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh)
        head.addWidget(refresh)
        v.addLayout(head)

        split = QSplitter(Qt.Orientation.Vertical)
        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["Job", "Kind", "Status", "Started (UTC)", "Last update"])
        setup_list_table(self.table)
        self.table.itemSelectionChanged.connect(self._show_selected)
        split.addWidget(self.table)

        details = QWidget()
        d = QVBoxLayout(details)
        d.setContentsMargins(0, 6, 0, 0)
        self.detail_label = QLabel("Select a job to see its log.")
        self.detail_label.setWordWrap(True)
        self.detail_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        d.addWidget(self.detail_label)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setTabChangesFocus(True)  # Tab moves on to the buttons instead of stopping in the log
        self.log_view.setFont(QFont("monospace"))
        self.log_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        d.addWidget(self.log_view, 1)
        buttons = QHBoxLayout()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_selected)
        self.retry_button = QPushButton("Retry")
        self.retry_button.setToolTip("Run the job again with the same request; jobs that checkpoint resume")
        self.retry_button.clicked.connect(self.retry_selected)
        self.open_button = QPushButton("Open folder")
        self.open_button.clicked.connect(self.open_selected)
        for b in (self.cancel_button, self.retry_button, self.open_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        d.addLayout(buttons)
        split.addWidget(details)
        split.setSizes([300, 300])
        v.addWidget(split, 1)

        self.timer = QTimer(self)
        self.timer.setInterval(REFRESH_MS)
        self.timer.timeout.connect(self._tick)
        services.jobs.job_started.connect(lambda _j: self.refresh())
        services.jobs.job_finished.connect(lambda _j: self.refresh())
        self.refresh()

    # -- data -------------------------------------------------------------------------------------
    def live_job(self, job_id: str) -> Any:
        """This window's QtJob for `job_id`, if it started it."""
        return next((j for j in reversed(self.services.jobs.jobs) if j.job_id == job_id), None)

    def selected(self) -> dict[str, Any] | None:
        """The selected job's row."""
        items = self.table.selectedItems()
        if not items:
            return None
        job_id = self.table.item(items[0].row(), 0).text()
        return next((r for r in self.rows if r["id"] == job_id), None)

    def refresh(self) -> None:
        """Re-read the jobs folder, keeping the selection."""
        current = self.selected()
        keep = current["id"] if current else None
        rows = read_jobs(self.services.jobs_dir())
        if not self.show_probes.isChecked():
            rows = [r for r in rows if r["kind"] not in HIDDEN_KINDS]
        for r in rows:
            live = self.live_job(r["id"])
            if live is not None and live.running:
                r["status"] = "running"
        known = {r["id"] for r in rows}
        for job in self.services.jobs.jobs:  # started, but the worker has not written its folder yet
            if job.running and job.job_id and job.job_id not in known:
                known.add(job.job_id)
                rows.insert(0, {"id": job.job_id, "kind": job.kind, "status": "running", "started": "", "updated": "",
                                "folder": self.services.jobs_dir() / job.job_id, "error": None, "runs": 0,
                                "request": {"kind": job.kind, "params": job.params}})
        self.rows = rows
        self.table.blockSignals(True)
        self.table.setRowCount(len(rows))
        select_row = -1
        for i, r in enumerate(rows):
            status = STATUS_TEXT.get(r["status"], r["status"])
            for col, text in enumerate((r["id"], r["kind"], status, r["started"].replace("T", " ").rstrip("Z"),
                                        r["updated"].replace("T", " ").rstrip("Z"))):
                self.table.setItem(i, col, QTableWidgetItem(text))
            if r["id"] == keep:
                select_row = i
        if select_row < 0 and keep is None and rows:
            select_row = 0  # nothing chosen yet: show the newest job
        if select_row >= 0:
            self.table.selectRow(select_row)
        self.table.blockSignals(False)
        self._show_selected()
        if any(r["status"] == "running" for r in rows) and self.isVisible():
            self.timer.start()

    def _tick(self) -> None:
        if not self.isVisible():
            self.timer.stop()
            return
        self.refresh()
        if not any(r["status"] == "running" for r in self.rows):
            self.timer.stop()

    def _show_selected(self) -> None:
        row = self.selected()
        if row is None:
            self.detail_label.setText("Select a job to see its log." if self.rows else
                                      "No jobs yet. Quantize, fine-tune or download a model and it shows up here.")
            self.log_view.clear()
            for b in (self.cancel_button, self.retry_button, self.open_button):
                b.setEnabled(False)
            return
        text = f"<b>{row['id']}</b> · {row['kind']} · {STATUS_TEXT.get(row['status'], row['status'])}"
        if row["runs"] and row["runs"] > 1:
            text += f" · {row['runs']} runs"
        error = row.get("error")
        if row["status"] == "error" and isinstance(error, dict):
            text += f"<br>{error.get('message', '')}. {error.get('hint', '')}"
        elif row["status"] == "error" and not error:
            text += "<br>The worker stopped without finishing (it may have crashed); the log has details."
        self.detail_label.setText(text)
        log = read_log_tail(row["folder"])
        if log != self.log_view.toPlainText():
            bar = self.log_view.verticalScrollBar()
            at_end = bar.value() >= bar.maximum() - 2
            self.log_view.setPlainText(log)
            if at_end:
                bar.setValue(bar.maximum())
        live = self.live_job(row["id"])
        self.cancel_button.setEnabled(live is not None and live.running)
        self.retry_button.setEnabled(row["status"] != "running" and bool(row["request"].get("kind")))
        self.open_button.setEnabled(True)

    # -- actions ----------------------------------------------------------------------------------
    def select_job(self, job_id: str) -> None:
        """Select a job by id (refreshing first)."""
        self.refresh()
        for i, r in enumerate(self.rows):
            if r["id"] == job_id:
                self.table.selectRow(i)
                return

    def cancel_selected(self) -> None:
        """Ask the selected running job to stop."""
        row = self.selected()
        live = self.live_job(row["id"]) if row else None
        if live is not None:
            live.cancel()
            self.cancel_button.setEnabled(False)

    def retry_selected(self) -> Any:
        """Run the selected job's request again under the same id (it resumes where it checkpoints)."""
        row = self.selected()
        if row is None or row["status"] == "running":
            return None
        request = row["request"]
        job = self.services.jobs.start(request["kind"], request.get("params") or {}, job_id=row["id"])
        self.select_job(row["id"])
        return job

    def open_selected(self) -> None:
        """Show the selected job's folder in the file manager."""
        row = self.selected()
        if row is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(row["folder"])))

    def focus_target(self) -> QWidget:
        """Where the keyboard goes when the page is opened by its shortcut: the list of jobs."""
        return self.table

    def on_shown(self) -> None:
        """Refresh when the page becomes visible."""
        self.refresh()
