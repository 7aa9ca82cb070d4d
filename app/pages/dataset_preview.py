"""The Fine-tune page's dataset preview: the first examples as the trainer formats them, with the part the loss
ignores (the prompt) greyed and the trained answer in normal text, the example and held-out counts, and malformed
records named by file and line.

The work runs in the engine's `preview_dataset` job (engine/finetune/preview.py) in a worker process: it reads
the file (or fetches a Hub dataset), renders chats with the chosen model's chat template (or the engine's
ChatML fallback) and splits them exactly as the fine-tune does. A newer request replaces a running one.
"""

from __future__ import annotations

import html
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QGroupBox, QLabel, QTextBrowser, QVBoxLayout

from bitsmith.engine.finetune.data import hub_repo

from ..qtjob import QtJob

IGNORED_COLOR = "#8a8f98"  # readable on the light and the dark theme
IGNORED_STYLE = f"color: {IGNORED_COLOR};"
TRAINED_STYLE = "font-weight: 600;"
LEGEND = (f'<span style="{IGNORED_STYLE}">grey: prompt and template text — the loss ignores it</span>'
          f'&nbsp;&nbsp;·&nbsp;&nbsp;<span style="{TRAINED_STYLE}">bold: the answer — what the model is trained '
          f'to write</span>')


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def summary_text(preview: dict[str, Any]) -> str:
    """Counts: examples (and their kind), held out for evaluation, left for training."""
    n, chats = int(preview["documents"]), int(preview.get("chats", 0))
    kind = "chats / instructions" if chats == n else "plain-text documents" if chats == 0 else \
        f"{chats:,} chats / instructions and {n - chats:,} plain-text documents"
    text = f"{_plural(n, 'example')} ({kind})"
    if preview.get("heldout"):
        share = float(preview.get("heldout_fraction") or 0) * 100
        text += (f" · {preview['heldout']:,} held out to measure the loss before and after ({share:g} %), "
                 f"{preview['train']:,} for training")
    if preview.get("hub"):
        text += f" · from the Hub dataset {preview['hub']}"
    return text


def problems_text(preview: dict[str, Any], skipping: bool) -> str:
    """Malformed records (file:line and what is wrong) and a split the job would refuse, with what to do."""
    parts = []
    count = int(preview.get("skipped_count") or 0)
    if count:
        listed = "\n".join(f"• {line}" for line in preview.get("skipped") or [])
        more = f"\n… and {count - len(preview['skipped']):,} more" if count > len(preview.get("skipped") or []) else ""
        lines = "that line" if count == 1 else "those lines"
        action = ("They will be skipped." if skipping else
                  f"The fine-tune stops at the first one: fix {lines}, or tick “Skip malformed records”.")
        parts.append(f"{_plural(count, 'malformed record')}. {action}\n{listed}{more}\n"
                     f"{preview.get('formats_hint') or ''}".rstrip())
    if preview.get("split_note"):
        parts.append(str(preview["split_note"]))
    return "\n\n".join(parts)


def examples_html(preview: dict[str, Any]) -> str:
    """The examples as rich text: ignored segments grey, trained segments bold, whitespace kept."""
    blocks = []
    for i, ex in enumerate(preview.get("examples") or [], 1):
        head = f"Example {i} · {html.escape(str(ex.get('where') or ''))}"
        spans = "".join(
            f'<span style="{TRAINED_STYLE if trained else IGNORED_STYLE}">{html.escape(str(text))}</span>'
            for text, trained in ex.get("segments") or [])
        cut = (f'<span style="{IGNORED_STYLE}"> … (cut in this preview; the fine-tune reads all of it)</span>'
               if ex.get("truncated") else "")
        blocks.append(f'<p style="{IGNORED_STYLE} margin-top: 8px;">{head}</p>'
                      f'<div style="white-space: pre-wrap; font-family: monospace;">{spans}{cut}</div>')
    return "".join(blocks)


class DatasetPreview(QGroupBox):
    """The preview box (see the module docstring); `request(data, model)` refreshes it."""

    updated = Signal()  # a preview or an error has been shown

    def __init__(self, services: Any) -> None:
        super().__init__("Dataset preview")
        self.services = services
        self.job: QtJob | None = None
        self.preview: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self._request: tuple[str, str | None] | None = None
        v = QVBoxLayout(self)
        self.summary = QLabel("Choose a dataset to see its first examples as the model will be trained on them.")
        self.summary.setWordWrap(True)
        self.problems = QLabel("")
        self.problems.setObjectName("banner")
        self.problems.setWordWrap(True)
        self.problems.setVisible(False)
        self.skip_box = QCheckBox("Skip malformed records instead of stopping")
        self.skip_box.setVisible(False)
        self.skip_box.toggled.connect(self._show_problems)
        self.template_note = QLabel("")
        self.template_note.setObjectName("muted")
        self.template_note.setWordWrap(True)
        self.legend = QLabel(LEGEND)
        self.legend.setVisible(False)
        self.view = QTextBrowser()
        self.view.setAccessibleName("Dataset examples")
        self.view.setMinimumHeight(120)
        self.view.setVisible(False)
        for w in (self.summary, self.problems, self.skip_box, self.template_note, self.legend, self.view):
            v.addWidget(w)

    @property
    def skip_malformed(self) -> bool:
        """Whether the user chose to skip malformed records (the job's on_bad_line)."""
        return self.skip_box.isChecked() and not self.skip_box.isHidden()

    def request(self, data: str, model: str | None) -> None:
        """Preview `data` (a file, a folder or a Hub id) formatted for `model` (a folder, or None)."""
        data = data.strip()
        if not data:
            return
        if self._request == (data, model) and self.job is not None and self.job.running:
            return
        self._request = (data, model)
        if self.job is not None and self.job.running:
            self.job.kill()
        self.preview, self.error = None, None
        repo = hub_repo(data)
        self.summary.setText(f"Fetching the Hub dataset {repo}…{self._offline_note()}" if repo else "Reading…")
        job = self.services.jobs.start("preview_dataset", {"data": data, "model": model}, track=False)
        job.event.connect(lambda ev, j=job: self._on_event(j, ev))
        job.finished.connect(lambda done, j=job: self._on_finished(j, done))
        self.job = job

    @staticmethod
    def _offline_note() -> str:
        from bitsmith.engine.hub_common import is_offline

        return (" Offline mode is on (HF_HUB_OFFLINE): only a copy downloaded earlier can be used."
                if is_offline() else "")

    def _on_event(self, job: QtJob, ev: dict) -> None:
        if job is not self.job:  # a replaced request
            return
        if ev.get("event") == "result" and isinstance(ev.get("preview"), dict):
            self.preview = ev["preview"]
        elif ev.get("event") == "error":
            self.error = ev

    def _on_finished(self, job: QtJob, done: dict) -> None:
        if job is not self.job:
            return
        if self.preview is not None:
            self._show(self.preview)
        else:
            self._show_error(self.error or {"message": f"the preview stopped ({done.get('status')})"})
        self.updated.emit()

    def _show(self, preview: dict[str, Any]) -> None:
        self.summary.setText(summary_text(preview))
        self.template_note.setText(str(preview.get("template_note") or ""))
        self.skip_box.setVisible(bool(preview.get("skipped_count")))
        self._show_problems()
        self.legend.setVisible(True)
        self.view.setVisible(True)
        self.view.setHtml(examples_html(preview))

    def _show_problems(self) -> None:
        text = problems_text(self.preview, self.skip_box.isChecked()) if self.preview else ""
        self.problems.setText(text)
        self.problems.setVisible(bool(text))

    def _show_error(self, error: dict[str, Any]) -> None:
        message = str(error.get("message") or "the dataset could not be read")
        hint = str(error.get("hint") or "")
        repo = hub_repo(self._request[0]) if self._request else None
        if error.get("kind") == "network" and repo:
            offline = self._offline_note()
            message = (f"Cannot fetch the Hub dataset {repo}: offline mode is on (HF_HUB_OFFLINE) and no copy was "
                       "downloaded earlier" if offline else f"Cannot fetch the Hub dataset {repo} (no connection?)")
            hint = "Connect to the internet (and unset HF_HUB_OFFLINE), or choose a dataset file on this computer."
        self.summary.setText("The dataset cannot be used as it is.")
        self.problems.setText(f"{message.rstrip('.')}.\n{hint}".strip())
        self.problems.setVisible(True)
        self.skip_box.setVisible(False)
        self.template_note.setText("")
        self.legend.setVisible(False)
        self.view.setVisible(False)
        self.view.clear()

    def shutdown(self) -> None:
        """Stop a running preview (the window is closing)."""
        if self.job is not None and self.job.running:
            self.job.kill()
