"""The Fine-tune page: a quantized model from the library, a dataset (a file, or a Hub dataset id when online)
with a preview of its first examples as they will be trained, the method (Q-SFT or LoRA) and its settings with
the planner's memory estimate, then the `finetune` job with a live loss chart, log and cancel. Running the same
output again resumes from the job's checkpoint (the engine keeps it next to the output): the page finds that
checkpoint, offers Resume (the loss chart goes on from the steps already trained) or Start over, and never writes
over a finished result (a second run of the same model and method gets a new name)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from bitsmith.engine.jobfiles import read_json

from ..charts import LineChart
from ..qtjob import QtJob
from .dataset_preview import DatasetPreview
from .models import scan_library

METHODS = (("qsft", "Q-SFT — tune the quantized codes themselves (full fine-tune, low memory)"),
           ("lora", "LoRA — small adapters on top of the frozen quantized model"))
DEFAULT_LR = {"qsft": 1e-3, "lora": 5e-4}


def checkpoint_of(out: Path) -> dict[str, Any] | None:
    """The engine's checkpoint of an unfinished run into `out` (its trainer.json: step, history, config), or None."""
    meta = read_json(out.with_name(f".{out.name}.partial") / "checkpoint" / "trainer.json")
    return meta if meta is not None and isinstance(meta.get("step"), int) else None


def output_for(model: Path, method: str) -> Path:
    """Where a run of `method` on `model` writes: <model>-<method>, or -2, -3… so that a finished earlier result is
    never written over; a name holding an unfinished run's checkpoint is taken again (that run resumes)."""
    base = f"{model.name}-{method}"
    names = [base, *(f"{base}-{i}" for i in range(2, 1000))]
    for name in names:
        out = model.with_name(name)
        if checkpoint_of(out) is not None or not out.exists():
            return out
    return model.with_name(f"{base}-{os.getpid()}")


def memory_estimate(model_dir: Path, bpw: float, seq_len: int, profile: dict[str, Any] | None) -> str:
    """The planner's Q-SFT estimate for this model, sequence length and machine, as a sentence."""
    from bitsmith.engine.modelinfo import ModelInfo
    from bitsmith.engine.plan import plan_model

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    info = ModelInfo.from_config(config, model_id=model_dir.name)
    if profile is None:
        return "Waiting for hardware detection…"
    from bitsmith.engine.hardware import HardwareProfile

    est = plan_model(info, max(bpw, 2.0), HardwareProfile.from_dict(profile), seq_len=seq_len).stages["qsft"]
    if est.verdict == "gpu":
        return f"Needs about {est.gpu_gb:.2f} GB of GPU memory: fits this GPU."
    if est.verdict == "offload":
        return f"Needs more than the GPU has: {est.gap_gb:.2f} GB would spill to RAM (slow)."
    if est.verdict == "cpu":
        return f"Runs on the CPU with about {est.cpu_gb:.2f} GB of RAM (slow for big models)."
    return f"Won't fit this machine: {est.gap_gb:.2f} GB short. Lower the sequence length."


class FinetunePage(QWidget):
    """The form, then the run (see the module docstring)."""

    def __init__(self, services: Any) -> None:
        super().__init__()
        self.services = services
        self.job: QtJob | None = None
        self.result: dict[str, Any] | None = None
        self._refreshing = False
        v = QVBoxLayout(self)
        v.setContentsMargins(18, 14, 18, 12)
        title = QLabel("Fine-tune a quantized model on your data")
        title.setStyleSheet("font-size: 17px; font-weight: 600;")
        v.addWidget(title)
        form = QFormLayout()
        self.model_combo = QComboBox()
        # a long name elides instead of widening the page
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(30)
        self.model_combo.currentIndexChanged.connect(self.update_estimate)
        self.model_combo.currentIndexChanged.connect(self.update_preview)
        form.addRow("Model", self.model_combo)
        row = QHBoxLayout()
        self.data_edit = QLineEdit()
        self.data_edit.setPlaceholderText("a .jsonl / .json file of chats or instructions, a .txt file of plain text, "
                                          "or a Hub dataset id such as tatsu-lab/alpaca")
        self.data_edit.editingFinished.connect(self.update_preview)
        browse = QPushButton("Choose…")
        browse.clicked.connect(self._browse_data)
        row.addWidget(self.data_edit, 1)
        row.addWidget(browse)
        form.addRow("Dataset", row)
        self.method_combo = QComboBox()
        self.method_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.method_combo.setMinimumContentsLength(30)
        for key, text in METHODS:
            self.method_combo.addItem(text, key)
        self.method_combo.currentIndexChanged.connect(self._method_changed)
        form.addRow("Method", self.method_combo)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 100_000)
        self.steps_spin.setValue(200)
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(6)
        self.lr_spin.setRange(1e-6, 1.0)
        self.lr_spin.setSingleStep(1e-4)
        self.lr_spin.setValue(DEFAULT_LR["qsft"])
        self.seq_spin = QSpinBox()
        self.seq_spin.setRange(64, 32768)
        self.seq_spin.setSingleStep(256)
        self.seq_spin.setValue(512)
        self.seq_spin.valueChanged.connect(self.update_estimate)
        form.addRow("Steps", self.steps_spin)
        form.addRow("Learning rate", self.lr_spin)
        form.addRow("Sequence length", self.seq_spin)
        self.estimate_label = QLabel("")
        self.estimate_label.setWordWrap(True)
        form.addRow("Memory", self.estimate_label)
        self.out_label = QLabel("")
        self.out_label.setObjectName("muted")
        self.out_label.setWordWrap(True)
        form.addRow("Output", self.out_label)
        v.addLayout(form)
        self.preview_box = DatasetPreview(services)
        v.addWidget(self.preview_box)
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start fine-tuning")
        self.start_button.setToolTip("Start fine-tuning (Ctrl+Enter)")
        self.start_button.clicked.connect(lambda: self.start())
        for keys in ("Ctrl+Return", "Ctrl+Enter"):
            shortcut = QShortcut(QKeySequence(keys), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(lambda: self.start_button.isEnabled() and self.start())
        self.fresh_button = QPushButton("Start over")
        self.fresh_button.setToolTip("Discard the unfinished run's checkpoint and train from step 0")
        self.fresh_button.clicked.connect(self.start_over)
        self.fresh_button.setVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        self.chat_button = QPushButton("Chat with it")
        self.chat_button.setToolTip("Open the tuned model on the Chat page")
        self.chat_button.clicked.connect(self.chat_with_it)
        self.chat_button.setEnabled(False)
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.fresh_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.progress, 1)
        buttons.addWidget(self.chat_button)
        v.addLayout(buttons)
        v.addWidget(self.status)
        lower = QHBoxLayout()
        self.loss_chart = LineChart("Loss", "step", "loss")
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setTabChangesFocus(True)  # Tab moves on to the buttons instead of stopping in the log
        self.log_view.setMaximumBlockCount(3000)
        self.log_view.setPlaceholderText("The job's log appears here.")
        lower.addWidget(self.loss_chart, 1)
        lower.addWidget(self.log_view, 1)
        v.addLayout(lower, 1)
        services.hardware.profile_changed.connect(lambda _p: self.update_estimate())
        self.refresh_models()

    def refresh_models(self) -> None:
        """The quantized models of the library (fine-tuning works on Bitsmith folders)."""
        self._refreshing = True
        try:
            self._fill_models()
        finally:
            self._refreshing = False
        self.update_estimate()

    def _fill_models(self) -> None:
        current = self.model_combo.currentData()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for m in scan_library(self.services.models_dir()):
            if m["kind"] == "Bitsmith":
                bpw = f" · {m['bpw']:.2f} bpw" if isinstance(m.get("bpw"), float) else ""
                self.model_combo.addItem(f"{m['name']}{bpw}", (str(m["path"]), m.get("bpw") or 4.0))
        if self.model_combo.count() == 0:
            self.model_combo.addItem("No quantized models yet — quantize one on the Quantize page", None)
        index = self.model_combo.findData(current)
        self.model_combo.setCurrentIndex(max(index, 0))
        self.model_combo.blockSignals(False)

    def model_gone(self) -> bool:
        """Whether the chosen model's folder has disappeared (deleted or moved outside Bitsmith); if so, say so in
        plain words and re-read the library, so the list only offers models that exist."""
        data = self.model_combo.currentData()
        if not data or Path(data[0]).is_dir() or self._refreshing:
            return False
        self.refresh_models()
        self.status.setText(f"The model {Path(data[0]).name} is no longer in the models folder: it was moved or "
                            f"deleted outside Bitsmith ({data[0]}). The list has been refreshed; choose another "
                            "model.")
        return True

    def use_model(self, path: str) -> None:
        """Select a library model by folder (what the Quantize results' "Fine-tune it" calls)."""
        self.refresh_models()
        for i in range(self.model_combo.count()):
            data = self.model_combo.itemData(i)
            if data and Path(data[0]) == Path(path):
                self.model_combo.setCurrentIndex(i)
                return

    def _browse_data(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a dataset", str(Path.home()),
                                              "Datasets (*.jsonl *.json *.parquet *.txt *.md);;All files (*)")
        if path:
            self.data_edit.setText(path)
            self.update_preview()

    def update_preview(self) -> None:
        """Preview the dataset field's file or Hub dataset, formatted with the chosen model's chat template."""
        data = self.data_edit.text().strip()
        if data and not self.model_gone():
            model = self.model_combo.currentData()
            self.preview_box.request(data, model[0] if model else None)

    def _method_changed(self) -> None:
        self.lr_spin.setValue(DEFAULT_LR[self.method_combo.currentData()])
        self.update_output()

    def output_path(self) -> Path | None:
        """Where the next run writes (see output_for), or None without a model."""
        data = self.model_combo.currentData()
        return output_for(Path(data[0]), self.method_combo.currentData()) if data else None

    def update_output(self) -> None:
        """Say where the run will save, and offer Resume / Start over when an unfinished run left a checkpoint."""
        out = self.output_path()
        running = self.job is not None and self.job.running
        ckpt = checkpoint_of(out) if out is not None else None
        if out is None:
            self.out_label.setText("")
        elif ckpt:
            total = (ckpt.get("config") or {}).get("steps")
            of = f" of {total}" if isinstance(total, int) else ""
            self.out_label.setText(f"An unfinished run into {out.name} stopped after step {ckpt['step']}{of}: "
                                   "Resume goes on from there with its settings; Start over discards it.")
        else:
            self.out_label.setText(f"Saves to {out}")
        self.start_button.setText("Resume fine-tuning" if ckpt else "Start fine-tuning")
        self.fresh_button.setVisible(bool(ckpt))
        self.fresh_button.setEnabled(bool(ckpt) and not running)

    def update_estimate(self) -> None:
        """Recompute the planner's memory estimate for the chosen model and sequence length."""
        if self.model_gone():
            return  # refreshed: the estimate is for the model chosen now
        data = self.model_combo.currentData()
        if not data:
            self.estimate_label.setText("Choose a model first.")
            self.start_button.setEnabled(False)
            self.update_output()
            return
        self.start_button.setEnabled(self.job is None or not self.job.running)
        self.update_output()
        try:
            self.estimate_label.setText(memory_estimate(Path(data[0]), float(data[1]), self.seq_spin.value(),
                                                        self.services.hardware.profile))
        except Exception as exc:  # noqa: BLE001 - the estimate is advice; the job still reports real errors
            self.estimate_label.setText(f"No estimate for this model ({exc}).")

    def job_params(self) -> dict[str, Any]:
        """The finetune request the form describes."""
        model = Path(self.model_combo.currentData()[0])
        method = self.method_combo.currentData()
        params = {"model": str(model), "data": self.data_edit.text().strip(), "method": method,
                  "steps": self.steps_spin.value(), "lr": self.lr_spin.value(), "seq_len": self.seq_spin.value(),
                  "out": str(output_for(model, method))}
        if self.preview_box.skip_malformed:
            params["on_bad_line"] = "skip"
        return params

    def start(self, fresh: bool = False) -> None:
        """Start the finetune job, or resume the unfinished run into the same output (`fresh` discards it)."""
        if self.job is not None and self.job.running or self.model_gone() or not self.model_combo.currentData():
            return
        if not self.data_edit.text().strip():
            self.status.setText("Choose a dataset file first.")
            return
        params = self.job_params()
        ckpt = None if fresh else checkpoint_of(Path(params["out"]))
        if ckpt:  # a resume goes on with the settings the run began with (the engine refuses others)
            config = ckpt.get("config") or {}
            for spin, key in ((self.steps_spin, "steps"), (self.lr_spin, "lr"), (self.seq_spin, "seq_len")):
                if isinstance(config.get(key), (int, float)) and not isinstance(config.get(key), bool):
                    spin.setValue(config[key])
            params = self.job_params()
        if fresh:
            params["fresh"] = True
        self.result = None
        history = (ckpt or {}).get("history") or {}
        self.loss_chart.set_points([(s, v) for s, v in history.get("train") or []])  # a resumed run's curve so far
        self.log_view.clear()
        self.status.setText(f"Resuming after step {ckpt['step']}…" if ckpt else "Starting the worker…")
        self.progress.setRange(0, 0)
        self.chat_button.setEnabled(False)
        self.fresh_button.setEnabled(False)
        self.job = self.services.jobs.start("finetune", params)
        self.job.event.connect(self._on_event)
        self.job.finished.connect(self._on_finished)
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)

    def start_over(self) -> None:
        """Discard the unfinished run's checkpoint and train from the start."""
        self.start(fresh=True)

    def cancel(self) -> None:
        """Stop at the next checkpoint."""
        if self.job is not None and self.job.running:
            self.job.cancel()
            self.cancel_button.setEnabled(False)
            self.status.setText("Stopping at the next checkpoint…")

    def _on_event(self, ev: dict) -> None:
        kind = ev.get("event")
        if kind == "stage":
            self.status.setText(f"Stage: {ev.get('stage')}")
            self.progress.setRange(0, int(ev["total"]) if ev.get("total") else 0)
            self.progress.setValue(int(ev.get("done") or 0))  # a resumed run starts at its checkpoint's step
        elif kind == "progress" and ev.get("total"):
            self.progress.setRange(0, int(ev["total"]))
            self.progress.setValue(int(ev.get("done") or 0))
        elif kind == "metric" and ev.get("name") == "train_loss" and isinstance(ev.get("step"), int):
            self.loss_chart.add_point(ev["step"], float(ev["value"]))
        elif kind == "log":
            self.log_view.appendPlainText(str(ev.get("message", "")))
        elif kind == "error":
            self.log_view.appendPlainText(f"[error] {ev.get('message', '')} {ev.get('hint', '')}")
        elif kind == "result":
            self.result = ev

    def _on_finished(self, done: dict) -> None:
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setRange(0, 1)
        status = done.get("status")
        if status == "ok":
            self.progress.setValue(1)
            out = self.result_path()
            self.status.setText(f"Finished: {out.name if out else 'the tuned model'} is in your library "
                                "(Models page). Chat with it to try it.")
            self.chat_button.setEnabled(out is not None)
            self.refresh_models()
        elif status == "cancelled":
            step = checkpoint_of(Path(self.job.params["out"])) if self.job else None
            self.status.setText(f"Cancelled after step {step['step']}: the checkpoint is kept. Resume goes on from "
                                "there." if step else "Cancelled before training began: nothing to resume yet.")
        else:
            err = self.job.errors[-1] if self.job and self.job.errors else {}
            again = (" Start over discards the unfinished run's checkpoint." if self.job and
                     checkpoint_of(Path(self.job.params["out"])) else "")
            self.status.setText(f"Stopped with an error: {err.get('message', 'the worker ended unexpectedly')}. "
                                f"{err.get('hint', '')}{again}")
        self.update_output()

    def result_path(self) -> Path | None:
        """The folder the last finished run saved."""
        out = (self.result or {}).get("out")
        return Path(out) if isinstance(out, str) and out else None

    def chat_with_it(self) -> None:
        """Open the chat page on the tuned model."""
        out = self.result_path()
        if out is None or self.services.open_page is None:
            return
        if not out.is_dir():
            self.status.setText(f"The tuned model {out} is no longer there: it was moved or deleted outside Bitsmith.")
            self.chat_button.setEnabled(False)
            return
        use = getattr(self.services.open_page("chat"), "use_model", None)
        if callable(use):
            use(str(out))

    def focus_target(self) -> QWidget:
        """Where the keyboard goes when the page is opened by its shortcut: the model to tune."""
        return self.model_combo

    def on_shown(self) -> None:
        """Pick up models quantized since the page was built."""
        self.refresh_models()

    def shutdown(self) -> None:
        """Stop a running dataset preview (the window is closing; the fine-tune job is the job manager's)."""
        self.preview_box.shutdown()
