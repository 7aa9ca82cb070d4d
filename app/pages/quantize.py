"""The Quantize wizard: model → hardware → budget → run → results, driving the engine's `quantize` job.

The hardware step shows the detected machine and lets the user plan for other memory (another machine, or
headroom kept free): a GPU memory and RAM override, remembered in the settings, with "Reset to detected".
The budget step's figures come from the torch-free planner (live while the slider moves) for that memory; the
run step shows
the worker's stages, progress, ETA and log; the results step reads the finished folder's bitsmith.json
(model_summary) and offers chat, GGUF export and the folder. Running the same output again resumes: the
engine keeps per-block checkpoints next to the output. A quantization left unfinished by a closed window, a crash or
a cancel is found in the jobs folder when the wizard opens, and offered for resuming on its first step. When the
output's checkpoint belongs to another run (the engine's foreign_checkpoint error), the run step offers to start over
(delete that checkpoint folder, after asking) or to save elsewhere. The budget step's Advanced options choose the
layout search mode and how the model is loaded (quantize_options.py). A stage's row is marked done only when the
engine starts the next stage or finishes; the parts of a stage (its stage events name it as "parent", e.g. capture
inside calibrate) show as indented rows under it.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSlider,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from bitsmith.engine.jobfiles import read_json

from ..background import error_text, run_in_background
from ..charts import LayoutChart, LineChart
from ..qtjob import QtJob
from ..services import DEFAULT_BPW_KEY, default_budget
from . import quantize_budget as qb
from .quantize_options import AdvancedOptions

STEPS = ("Model", "Hardware", "Budget", "Run", "Results")
PRESETS = (("demo", "Demo — a few minutes, rough"), ("default", "Default — balanced"),
           ("best", "Best — slow, highest quality"))
PRESET_TIPS = {
    "demo": "Little calibration data and few iterations: to try the pipeline on a new model",
    "default": "Block-wise calibration with the presets' three formats, then end-to-end distillation from the "
               "full-precision model (tunes every scale and norm against its next-token distribution): the usual "
               "choice",
    "best": "More calibration iterations and samples than Default and a longer measurement, then the same "
            "end-to-end distillation: several times as long as Default",
}
GIB = 2**30
PLAN_GPU_KEY, PLAN_RAM_KEY = "quantize/plan_gpu_gb", "quantize/plan_ram_gb"  # the user's planning memory (GB)
DISMISSED_KEY = "quantize/dismissed_resume"  # unfinished jobs the user chose not to resume (job ids)


def _title(text: str) -> QLabel:
    label = QLabel(text)
    label.setStyleSheet("font-size: 17px; font-weight: 600;")
    return label


def _muted(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setObjectName("muted")
    label.setWordWrap(True)
    return label


def load_model_info(source: str) -> Any:
    """ModelInfo for 'bundled', a local folder / .gguf, or a Hub id (config and headers only, no weights)."""
    from bitsmith.engine.modelinfo import ModelInfo

    if source == "bundled":
        from ..chat.models import bundled_path

        path = bundled_path()
        if path is None:
            from bitsmith.engine.errors import BadInputError

            raise BadInputError("the bundled demo model (SmolLM2) is not installed",
                                "reinstall Bitsmith with its demo model, or pick another model")
        return ModelInfo.from_gguf(path, "SmolLM2-135M-Instruct")
    if Path(source).expanduser().exists():
        return ModelInfo.from_path(Path(source).expanduser())
    from bitsmith.engine.hub import fit_inputs

    config, tensors = fit_inputs(source)
    return ModelInfo.from_config(config, tensors, source)


def partial_folder(out: str | Path) -> Path:
    """Where the engine keeps an unfinished quantization of `out` (layout and per-block checkpoints)."""
    out = Path(out).expanduser()
    return out.with_name(f".{out.name}.partial")


def checkpoint_folder(out: str | Path) -> Path:
    """The calibration checkpoint folder of `out`, where the engine puts it (the output path resolved)."""
    return partial_folder(Path(out).expanduser().resolve()) / "calibrate"


def delete_checkpoint(out: str | Path, reported: str | None = None) -> Path:
    """Delete the calibration checkpoint folder of `out` and nothing else; ValueError, deleting nothing, when the
    engine reported another folder or the folder is a link. Returns the folder."""
    folder = checkpoint_folder(out)
    if reported is not None and Path(reported).expanduser().resolve() != folder:
        raise ValueError(f"{reported} is not the calibration checkpoint folder of {out}")
    if folder.is_symlink():
        raise ValueError(f"{folder} is a link, not a checkpoint folder")
    if folder.is_dir():
        shutil.rmtree(folder)
    return folder


def unused_output(out: str | Path) -> Path:
    """`out`, or `out` with -2, -3 … appended: the first with neither a folder nor unfinished work of its own."""
    out = Path(out).expanduser()
    candidate, n = out, 1
    while candidate.exists() or partial_folder(candidate).exists():
        n += 1
        candidate = out.with_name(f"{out.name}-{n}")
    return candidate


def calibration_progress(out: str | Path) -> tuple[int, int | None]:
    """(blocks calibrated, blocks in the layout or None) of an unfinished quantization of `out`, from its files."""
    partial = partial_folder(out)
    done = (read_json(partial / "calibrate" / "progress.json") or {}).get("blocks_done")
    try:
        layout = json.loads((partial / "layout.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        layout = None
    blocks = None
    if isinstance(layout, dict):
        blocks = len({m.group(1) for m in map(re.compile(r"^(.*?\.\d+)\.").match, layout) if m}) or None
    return (int(done) if isinstance(done, int) else 0), blocks


def unfinished_quantize(jobs_dir: Path, skip: set[str] | frozenset[str] = frozenset()) -> dict[str, Any] | None:
    """The newest quantize job that stopped before the end (cancelled, failed, or its worker gone with a closed
    window) and left files to resume from, and whose output was not finished since; None when there is none."""
    from .jobs import read_jobs

    seen: set[Path] = set()
    for row in read_jobs(jobs_dir):  # newest first
        params = (row.get("request") or {}).get("params") or {}
        if row["kind"] != "quantize" or not isinstance(params.get("out"), str) or not params.get("source"):
            continue
        out = Path(params["out"]).expanduser()
        if out in seen:
            continue  # an older job of the same output: the newest one says how it stands
        seen.add(out)
        if row["status"] not in ("cancelled", "error") or row["id"] in skip:
            continue
        if (out / "bitsmith.json").is_file() or not partial_folder(out).is_dir():
            continue
        done, blocks = calibration_progress(out)
        return {"id": row["id"], "params": params, "status": row["status"], "updated": row.get("updated") or "",
                "blocks_done": done, "blocks": blocks}
    return None


class StageRow(QWidget):
    """One pipeline stage, or a part of one (indented under it): its name, a progress bar and the ETA."""

    def __init__(self, name: str, parent_stage: str | None = None) -> None:
        super().__init__()
        self.parent_stage = parent_stage
        row = QHBoxLayout(self)
        indent = 20 if parent_stage else 0
        row.setContentsMargins(indent, 0, 0, 0)
        short = name.removeprefix(f"{parent_stage}-") if parent_stage else name  # measure-fisher → fisher
        self.name = QLabel(short or name)
        self.name.setMinimumWidth(170 - indent)
        self.bar = QProgressBar()
        self.bar.setTextVisible(True)
        self.eta = QLabel("")
        self.eta.setMinimumWidth(110)
        row.addWidget(self.name)
        row.addWidget(self.bar, 1)
        row.addWidget(self.eta)

    def set_progress(self, done: int | None, total: int | None, eta_s: float | None = None) -> None:
        """Determinate when the total is known, else a busy bar."""
        if total:
            self.bar.setRange(0, int(total))
            self.bar.setValue(min(int(done or 0), int(total)))
            self.bar.setFormat(f"{done}/{total}")
        else:
            self.bar.setRange(0, 0)
        text = qb.format_eta(eta_s)
        self.eta.setText(f"ETA {text}" if text and total and (done or 0) < total else "")

    def complete(self) -> None:
        """Mark finished (100 %)."""
        self.bar.setRange(0, 1)
        self.bar.setValue(1)
        self.bar.setFormat("done")
        self.eta.setText("")

    @property
    def done(self) -> bool:
        """Whether the row is marked finished."""
        return self.bar.format() == "done" and self.bar.value() == self.bar.maximum() == 1


class QuantizePage(QWidget):
    """The wizard (see the module docstring)."""

    def __init__(self, services: Any) -> None:
        super().__init__()
        self.services = services
        self.info: Any = None
        self.source: str | None = None
        self.source_local = False  # the source is a folder or file on this computer (it can vanish)
        self.job: QtJob | None = None
        self.export_job: QtJob | None = None
        self.params: dict[str, Any] | None = None
        self.metrics: dict[str, Any] = {}
        self.result: dict[str, Any] | None = None
        self.curve: list[tuple[float, float]] = []
        self.curve_basis = ""  # what the engine says the predicted curve rests on
        self.summary: dict[str, Any] | None = None
        self.stage_rows: dict[str, StageRow] = {}
        self._current_stage: str | None = None  # the running stage, and the part of it running (capture in calibrate)
        self._current_part: str | None = None
        self._out_edited = False
        self._loading = False
        self._bpw_chosen = False  # False: the budget follows the Settings page's default
        self.unfinished: dict[str, Any] | None = None  # a quantize job an earlier window left unfinished
        self._job_id: str | None = None  # the job folder the next start resumes in (an unfinished job's)
        self.plan_gpu_gb: float | None = self._saved_gb(PLAN_GPU_KEY)
        self.plan_ram_gb: float | None = self._saved_gb(PLAN_RAM_KEY)
        self._syncing = False

        outer = QVBoxLayout(self)
        outer.setContentsMargins(18, 14, 18, 12)
        crumbs = QHBoxLayout()
        self.crumbs: list[QLabel] = []
        for i, name in enumerate(STEPS):
            label = QLabel(f"{i + 1}  {name}")
            label.setContentsMargins(8, 4, 8, 4)
            self.crumbs.append(label)
            crumbs.addWidget(label)
            if i < len(STEPS) - 1:
                crumbs.addWidget(_muted("›"))
        crumbs.addStretch(1)
        outer.addLayout(crumbs)
        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)
        outer.addWidget(line)

        self.stack = QStackedWidget()
        self.stack.addWidget(self._build_model_step())
        self.stack.addWidget(self._build_hardware_step())
        self.stack.addWidget(self._build_budget_step())
        self.stack.addWidget(self._build_run_step())
        self.stack.addWidget(self._build_results_step())
        outer.addWidget(self.stack, 1)

        nav = QHBoxLayout()
        self.back_button = QPushButton("Back")
        self.back_button.setToolTip("Back (Alt+Left)")
        self.back_button.clicked.connect(self.back)
        self.next_button = QPushButton("Next")
        self.next_button.setToolTip("Next step (Ctrl+Enter)")
        self.next_button.setDefault(True)
        self.next_button.clicked.connect(self.next)
        for keys, button in (("Ctrl+Return", self.next_button), ("Ctrl+Enter", self.next_button),
                             ("Alt+Left", self.back_button)):
            shortcut = QShortcut(QKeySequence(keys), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(lambda b=button: b.isVisible() and b.isEnabled() and b.click())
        nav.addWidget(self.back_button)
        nav.addStretch(1)
        nav.addWidget(self.next_button)
        outer.addLayout(nav)

        services.hardware.profile_changed.connect(lambda _p: self._show_hardware())
        self.go(0)

    # -- steps ------------------------------------------------------------------------------------
    def _build_model_step(self) -> QWidget:
        page = QWidget()
        v = QVBoxLayout(page)
        self.resume_box = QGroupBox("Unfinished quantization")
        box = QVBoxLayout(self.resume_box)
        self.resume_text = QLabel("")
        self.resume_text.setWordWrap(True)
        box.addWidget(self.resume_text)
        row = QHBoxLayout()
        self.resume_unfinished_button = QPushButton("Resume it")
        self.resume_unfinished_button.setToolTip("Continue from its last checkpoint")
        self.resume_unfinished_button.clicked.connect(self.resume_unfinished)
        self.dismiss_button = QPushButton("Not now")
        self.dismiss_button.setToolTip("Hide this; the Jobs page can still retry it, and its files stay")
        self.dismiss_button.clicked.connect(self.dismiss_unfinished)
        row.addWidget(self.resume_unfinished_button)
        row.addWidget(self.dismiss_button)
        row.addStretch(1)
        box.addLayout(row)
        self.resume_box.setVisible(False)
        v.addWidget(self.resume_box)
        v.addWidget(_title("Which model do you want to compress?"))
        self.model_group = QButtonGroup(self)
        self.bundled_radio = QRadioButton("SmolLM2-135M-Instruct — the bundled demo model (135 M parameters)")
        self.local_radio = QRadioButton("A model on this computer (a Hugging Face folder or a .gguf file)")
        self.hub_radio = QRadioButton("A model on the Hugging Face Hub")
        for i, radio in enumerate((self.bundled_radio, self.local_radio, self.hub_radio)):
            self.model_group.addButton(radio, i)
        self.bundled_radio.setChecked(True)
        v.addWidget(self.bundled_radio)
        v.addWidget(self.local_radio)
        row = QHBoxLayout()
        row.setContentsMargins(24, 0, 0, 0)
        self.local_edit = QLineEdit()
        self.local_edit.setPlaceholderText("/path/to/model-folder or /path/to/model.gguf")
        self.local_edit.textEdited.connect(lambda _t: self.local_radio.setChecked(True))
        browse = QPushButton("Folder…")
        browse.clicked.connect(self._browse_folder)
        browse_file = QPushButton(".gguf file…")
        browse_file.clicked.connect(self._browse_file)
        row.addWidget(self.local_edit, 1)
        row.addWidget(browse)
        row.addWidget(browse_file)
        v.addLayout(row)
        v.addWidget(self.hub_radio)
        self.hub_edit = QLineEdit()
        self.hub_edit.setPlaceholderText("owner/name, e.g. HuggingFaceTB/SmolLM2-1.7B-Instruct")
        self.hub_edit.textEdited.connect(lambda _t: self.hub_radio.setChecked(True))
        hub_row = QHBoxLayout()
        hub_row.setContentsMargins(24, 0, 0, 0)
        hub_row.addWidget(self.hub_edit)
        v.addLayout(hub_row)
        self.model_status = _muted("")
        v.addWidget(self.model_status)
        v.addStretch(1)
        return page

    def _build_hardware_step(self) -> QWidget:
        page = QWidget()
        v = QVBoxLayout(page)
        v.addWidget(_title("This computer"))
        self.hardware_text = QLabel("Detecting hardware…")
        self.hardware_text.setWordWrap(True)
        self.hardware_text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.hardware_text.setStyleSheet("font-family: monospace;")
        v.addWidget(self.hardware_text)
        self.hardware_note = _muted("")
        v.addWidget(self.hardware_note)
        redo = QPushButton("Detect again")
        redo.clicked.connect(self.services.hardware.refresh)
        row = QHBoxLayout()
        row.addWidget(redo)
        row.addStretch(1)
        v.addLayout(row)
        box = QGroupBox("Memory to plan for")
        form = QFormLayout(box)
        self.gpu_spin = QDoubleSpinBox()
        self.gpu_spin.setRange(0.0, 2048.0)
        self.gpu_spin.setSpecialValueText("none — plan for the CPU alone")
        self.gpu_spin.setAccessibleName("GPU memory to plan for, in GB")
        self.ram_spin = QDoubleSpinBox()
        self.ram_spin.setRange(0.5, 16384.0)
        self.ram_spin.setAccessibleName("RAM to plan for, in GB")
        for spin, which in ((self.gpu_spin, "gpu"), (self.ram_spin, "ram")):
            spin.setDecimals(1)
            spin.setSingleStep(0.5)
            spin.setSuffix(" GB")
            spin.setEnabled(False)
            spin.valueChanged.connect(lambda value, w=which: self._plan_edited(w, value))
        form.addRow("GPU memory", self.gpu_spin)
        form.addRow("RAM", self.ram_spin)
        self.reset_plan_button = QPushButton("Reset to detected")
        self.reset_plan_button.clicked.connect(self.reset_plan)
        self.plan_note = _muted("")
        reset_row = QHBoxLayout()
        reset_row.addWidget(self.reset_plan_button)
        reset_row.addWidget(self.plan_note, 1)
        form.addRow(reset_row)
        v.addWidget(box)
        v.addStretch(1)
        return page

    def _build_budget_step(self) -> QWidget:
        page = QWidget()
        v = QVBoxLayout(page)
        v.addWidget(_title("How many bits per weight?"))
        v.addWidget(_muted("Fewer bits make a smaller, faster model; more bits keep more quality. The budget counts "
                           "everything stored per quantized weight (codes, scales and zeros). Embeddings and norms "
                           "stay in 16 bits."))
        row = QHBoxLayout()
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setAccessibleName("Bits per weight")
        self.slider.setRange(220, int(qb.MAX_BPW * 100))
        self.slider.setPageStep(10)
        self.bpw_spin = QDoubleSpinBox()
        self.bpw_spin.setDecimals(2)
        self.bpw_spin.setSingleStep(0.05)
        self.bpw_spin.setSuffix(" bpw")
        self.bpw_spin.setRange(2.2, qb.MAX_BPW)
        self.slider.valueChanged.connect(lambda v_: self.choose_bpw(v_ / 100))
        self.bpw_spin.valueChanged.connect(self.choose_bpw)
        self.min_label = _muted("")
        row.addWidget(self.min_label)
        row.addWidget(self.slider, 1)
        row.addWidget(_muted(f"{qb.MAX_BPW:g}"))
        row.addWidget(self.bpw_spin)
        v.addLayout(row)
        presets = QHBoxLayout()
        presets.addWidget(QLabel("Presets:"))
        self.preset_buttons: dict[float, QPushButton] = {}
        for b in qb.PRESET_BUDGETS:
            button = QPushButton(f"{b:.1f} bpw")
            button.clicked.connect(lambda _=False, b=b: self.choose_bpw(b))
            self.preset_buttons[b] = button
            presets.addWidget(button)
        presets.addStretch(1)
        v.addLayout(presets)

        grid = QGridLayout()
        self.size_label = QLabel("")
        self.size_label.setStyleSheet("font-size: 15px; font-weight: 600;")
        self.vram_label = QLabel("")
        self.vram_label.setStyleSheet("font-size: 15px; font-weight: 600;")
        self.calib_label = _muted("")
        self.plan_label = _muted("")
        self.chat_title = _muted("Chat on this machine")
        grid.addWidget(_muted("Predicted size"), 0, 0)
        grid.addWidget(self.size_label, 1, 0)
        grid.addWidget(self.chat_title, 0, 1)
        grid.addWidget(self.vram_label, 1, 1)
        grid.addWidget(self.calib_label, 2, 0, 1, 2)
        grid.addWidget(self.plan_label, 3, 0, 1, 2)
        v.addLayout(grid)

        form = QFormLayout()
        self.preset_combo = QComboBox()
        for key, text in PRESETS:
            self.preset_combo.addItem(text, key)
            self.preset_combo.setItemData(self.preset_combo.count() - 1, PRESET_TIPS[key], Qt.ItemDataRole.ToolTipRole)
        self.preset_combo.setCurrentIndex(self.preset_combo.findData("default"))
        self.preset_combo.currentIndexChanged.connect(self._preset_changed)  # presets may search other formats
        form.addRow("Effort", self.preset_combo)
        out_row = QHBoxLayout()
        self.out_edit = QLineEdit()
        self.out_edit.textEdited.connect(self._out_typed)
        out_browse = QPushButton("…")
        out_browse.clicked.connect(self._browse_out)
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(out_browse)
        form.addRow("Save to", out_row)
        self.out_edit.setAccessibleName("Save to")
        self.out_note = _muted("")
        self.out_note.setVisible(False)
        form.addRow("", self.out_note)
        v.addLayout(form)
        self.advanced = AdvancedOptions()
        self.advanced.changed.connect(self._update_budget)  # loading whole or streamed changes the memory figures
        v.addWidget(self.advanced)
        self.budget_curve = LineChart("", "bits per weight", "")
        v.addWidget(self.budget_curve, 1)
        v.addStretch(0)
        self._set_bpw(default_budget(self.services.settings))
        self.services.settings.changed.connect(self._on_setting)
        return page

    def _build_run_step(self) -> QWidget:
        page = QWidget()
        v = QVBoxLayout(page)
        self.run_title = _title("Quantizing…")
        v.addWidget(self.run_title)
        self.run_status = _muted("")
        v.addWidget(self.run_status)
        self.stages_box = QVBoxLayout()
        holder = QWidget()
        holder.setLayout(self.stages_box)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(holder)
        scroll.setMinimumHeight(200)  # several rows at once, not the two its size hint would give
        scroll.setMaximumHeight(300)
        self.stages_scroll = scroll
        scroll.verticalScrollBar().rangeChanged.connect(lambda _lo, _hi: self._reveal())
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        v.addWidget(scroll)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setTabChangesFocus(True)  # Tab moves on to the buttons instead of stopping in the log
        self.log_view.setMaximumBlockCount(5000)
        self.log_view.setPlaceholderText("The job's log appears here.")
        v.addWidget(self.log_view, 1)
        row = QHBoxLayout()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Run the same job again: it continues from its last checkpoint")
        self.resume_button.clicked.connect(self.start)
        self.resume_button.setVisible(False)
        self.start_over_button = QPushButton("Start over")
        self.start_over_button.setToolTip("Delete the other run's calibration checkpoint (after asking) and run again "
                                          "from the beginning")
        self.start_over_button.clicked.connect(self.start_over)
        self.other_folder_button = QPushButton("Choose another folder")
        self.other_folder_button.setToolTip("Keep that checkpoint and save this model in another folder")
        self.other_folder_button.clicked.connect(self.choose_another_folder)
        self._foreign: dict[str, Any] | None = None  # the foreign_checkpoint error the run step is showing
        row.addWidget(self.cancel_button)
        row.addWidget(self.resume_button)
        row.addWidget(self.start_over_button)
        row.addWidget(self.other_folder_button)
        self._show_foreign(None)
        row.addStretch(1)
        v.addLayout(row)
        return page

    def _build_results_step(self) -> QWidget:
        page = QWidget()
        v = QVBoxLayout(page)
        self.results_title = _title("Done")
        v.addWidget(self.results_title)
        grid = QGridLayout()
        self.ppl_before = QLabel("–")
        self.ppl_after = QLabel("–")
        self.size_before = QLabel("–")
        self.size_after = QLabel("–")
        for w in (self.ppl_before, self.ppl_after, self.size_before, self.size_after):
            w.setStyleSheet("font-size: 15px; font-weight: 600;")
        grid.addWidget(_muted(""), 0, 0)
        grid.addWidget(_muted("Before"), 0, 1)
        grid.addWidget(_muted("After"), 0, 2)
        grid.addWidget(QLabel("Perplexity (held-out text, lower is better)"), 1, 0)
        grid.addWidget(self.ppl_before, 1, 1)
        grid.addWidget(self.ppl_after, 1, 2)
        grid.addWidget(QLabel("Size"), 2, 0)
        grid.addWidget(self.size_before, 2, 1)
        grid.addWidget(self.size_after, 2, 2)
        grid.setColumnStretch(3, 1)
        v.addLayout(grid)
        self.results_note = _muted("")
        v.addWidget(self.results_note)
        charts = QHBoxLayout()
        self.curve_chart = LineChart("Predicted quality vs budget (from the measurement, before calibration)",
                                     "bits per weight", "perplexity")
        self.curve_chart.log_y = True
        self.layout_chart = LayoutChart()
        charts.addWidget(self.curve_chart, 1)
        charts.addWidget(self.layout_chart, 1)
        v.addLayout(charts, 1)
        row = QHBoxLayout()
        self.chat_button = QPushButton("Chat with it")
        self.chat_button.clicked.connect(self.chat_with_it)
        self.finetune_button = QPushButton("Fine-tune it")
        self.finetune_button.clicked.connect(self.finetune_it)
        self.export_button = QPushButton("Export GGUF")
        self.export_button.clicked.connect(self.export_gguf)
        self.open_button = QPushButton("Open folder")
        self.open_button.clicked.connect(self.open_folder)
        self.new_button = QPushButton("Quantize another")
        self.new_button.clicked.connect(lambda: self.go(0))
        for b in (self.chat_button, self.finetune_button, self.export_button, self.open_button):
            row.addWidget(b)
        row.addStretch(1)
        row.addWidget(self.new_button)
        v.addLayout(row)
        exp = QHBoxLayout()
        self.export_bar = QProgressBar()
        self.export_bar.setVisible(False)
        self.export_status = _muted("")
        exp.addWidget(self.export_bar, 1)
        exp.addWidget(self.export_status, 2)
        v.addLayout(exp)
        return page

    # -- navigation -------------------------------------------------------------------------------
    def step(self) -> int:
        """The index of the step shown (0 Model … 4 Results)."""
        return self.stack.currentIndex()

    def go(self, index: int) -> None:
        """Show step `index` and set the buttons for it."""
        self.stack.setCurrentIndex(index)
        pal_hl = "background: palette(highlight); color: palette(highlighted-text); border-radius: 5px;"
        for i, label in enumerate(self.crumbs):
            label.setStyleSheet(pal_hl if i == index else ("font-weight: 600;" if i < index else ""))
        running = self.job is not None and self.job.running
        self.back_button.setVisible(index in (1, 2) or (index == 3 and not running))
        self.next_button.setVisible(index in (0, 1, 2))
        self.next_button.setText({2: "Start quantizing"}.get(index, "Next"))
        if index == 0:
            self.find_unfinished()
        if index == 1:
            self._show_hardware()
        if index == 2:
            self._update_budget()

    def back(self) -> None:
        """One step back (the run step goes back to the budget)."""
        self.go(max(0, min(self.step(), 3) - 1))

    def next(self) -> None:
        """Validate this step and go on."""
        index = self.step()
        if index == 0:
            self._load_model()
        elif self.source_gone():
            return
        elif index == 1:
            self.go(2)
        elif index == 2:
            self.start()

    def source_gone(self) -> bool:
        """Whether the chosen local model has disappeared since it was read (deleted or moved outside Bitsmith);
        if so, go back to the first step and say so in plain words instead of planning for a model that is gone."""
        if not self.source_local or self.source is None or Path(self.source).exists():
            return False
        gone = self.source
        self.info, self.source, self.source_local, self.params = None, None, False, None
        self.go(0)
        self.model_status.setText(f"The model {gone} is no longer there: it was moved or deleted outside Bitsmith "
                                  "after you chose it. Choose it again where it is now, or pick another model.")
        return True

    def chosen_source(self) -> str | None:
        """The model the first step names, or None (with a message) when it names none."""
        if self.bundled_radio.isChecked():
            return "bundled"
        if self.local_radio.isChecked():
            text = self.local_edit.text().strip()
            if not text:
                self.model_status.setText("Choose a model folder or a .gguf file first.")
                return None
            if not Path(text).expanduser().exists():
                self.model_status.setText(f"{text} does not exist. Check the path or choose it with the buttons.")
                return None
            return str(Path(text).expanduser())
        text = self.hub_edit.text().strip()
        if "/" not in text:
            self.model_status.setText("Type a Hub model id like owner/name.")
            return None
        return text

    def _load_model(self) -> None:
        source = self.chosen_source()
        if source is None or self._loading:
            return
        self._loading = True
        self.next_button.setEnabled(False)
        self.model_status.setText("Reading the model's shape…")

        def done(info: Any) -> None:
            self._loading = False
            self.next_button.setEnabled(True)
            if source != self.source:
                self._out_edited = False
            self.info, self.source = info, source
            self.source_local = source != "bundled" and Path(source).exists()
            self.model_status.setText(f"{info.model_id or qb.model_slug(source)}: "
                                      f"{info.total_params / 1e6:,.0f} M parameters, {len(info.linears)} linear "
                                      f"layers in {info.num_layers} blocks")
            self._prepare_budget()
            self.go(1)

        def failed(exc: BaseException) -> None:
            self._loading = False
            self.next_button.setEnabled(True)
            self.model_status.setText(f"Cannot use this model: {error_text(exc)}")

        run_in_background(lambda: load_model_info(source), done, failed)

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose a model folder", str(Path.home()))
        if path:
            self.local_edit.setText(path)
            self.local_radio.setChecked(True)

    def _browse_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a GGUF file", str(Path.home()), "GGUF models (*.gguf)")
        if path:
            self.local_edit.setText(path)
            self.local_radio.setChecked(True)

    def _browse_out(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Save the model under", str(self.services.models_dir()))
        if path and self.source:
            self.out_edit.setText(str(qb.default_output(Path(path), self.source, self.bpw())))
            self._out_edited = True

    # -- hardware ---------------------------------------------------------------------------------
    def _show_hardware(self) -> None:
        profile = self.services.hardware.profile
        if profile is None:
            self.hardware_text.setText("Detecting hardware…")
            self.hardware_note.setText(self.services.hardware.error or "")
            self.services.hardware.refresh()
            return
        from bitsmith.engine.hardware import HardwareProfile, describe

        self.hardware_text.setText(describe(HardwareProfile.from_dict(profile)))
        device = profile.get("best_device", "cpu")
        self.hardware_note.setText(
            "Calibration and chat will use the GPU." if str(device).startswith(("cuda", "mps")) else
            "No usable GPU was found: everything runs on the CPU. Small models (like the demo) are fine; "
            "large ones are slow.")
        self._sync_plan_spins()
        if self.step() == 2:
            self._update_budget()

    # -- memory to plan for -------------------------------------------------------------------------
    def _saved_gb(self, key: str) -> float | None:
        value = self.services.settings.get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else None

    def detected_memory(self) -> tuple[float, float] | None:
        """(GPU memory, RAM) in GB that detection found for planning, or None before detection."""
        profile = self.services.hardware.profile
        return qb.detected_memory_gb(profile) if profile is not None else None

    def planning_profile(self) -> dict[str, Any] | None:
        """The detected profile with the user's GPU memory and RAM in place of the detected ones."""
        return qb.planning_profile(self.services.hardware.profile, self.plan_gpu_gb, self.plan_ram_gb)

    def _sync_plan_spins(self) -> None:
        """Show the memory planned for: the user's values where set, else the detected ones."""
        detected = self.detected_memory()
        self._syncing = True
        for spin, override, i in ((self.gpu_spin, self.plan_gpu_gb, 0), (self.ram_spin, self.plan_ram_gb, 1)):
            spin.setEnabled(detected is not None)
            if detected is not None:
                spin.setValue(override if override is not None else round(detected[i], 1))
        self._syncing = False
        overridden = self.plan_gpu_gb is not None or self.plan_ram_gb is not None
        self.reset_plan_button.setEnabled(overridden)
        if detected is None:
            self.plan_note.setText("")
        elif overridden:
            self.plan_note.setText(f"Planning with your values (detected: {detected[0]:.1f} GB of GPU memory free, "
                                   f"{detected[1]:.1f} GB of RAM available).")
        else:
            self.plan_note.setText("Planning with the detected memory. Change it to plan for another machine or to "
                                   "keep some memory free for other programs.")

    def _plan_edited(self, which: str, value: float) -> None:
        if self._syncing:
            return
        value = round(float(value), 1)
        if which == "gpu":
            self.plan_gpu_gb = value
            self.services.settings.set(PLAN_GPU_KEY, value)
        else:
            self.plan_ram_gb = value
            self.services.settings.set(PLAN_RAM_KEY, value)
        self._sync_plan_spins()
        if self.info is not None:
            self._update_budget()

    def reset_plan(self) -> None:
        """Plan for the detected memory again."""
        self.plan_gpu_gb = self.plan_ram_gb = None
        self.services.settings.set(PLAN_GPU_KEY, None)
        self.services.settings.set(PLAN_RAM_KEY, None)
        self._sync_plan_spins()
        if self.info is not None:
            self._update_budget()

    def _show_plan_override(self) -> None:
        """On the budget step: say when the figures are for the user's memory rather than this machine's."""
        overridden = self.services.hardware.profile is not None and (
            self.plan_gpu_gb is not None or self.plan_ram_gb is not None)
        self.chat_title.setText("Chat with the memory you plan for" if overridden else "Chat on this machine")
        if not overridden:
            self.plan_label.setText("")
            return
        gpu, ram = (qb.detected_memory_gb(self.planning_profile()))
        gpu_text = f"{gpu:.1f} GB of GPU memory" if gpu > 0 else "no GPU"
        self.plan_label.setText(f"Planned for {gpu_text} and {ram:.1f} GB of RAM (your values on the Hardware step).")

    # -- budget -----------------------------------------------------------------------------------
    def _prepare_budget(self) -> None:
        low = qb.min_feasible_bpw(self.info, qb.preset_formats(self.preset_combo.currentData()))
        self.min_bpw = low
        self.slider.blockSignals(True)
        self.slider.setMinimum(int(round(low * 100)))
        self.slider.blockSignals(False)
        self.bpw_spin.blockSignals(True)
        self.bpw_spin.setMinimum(low)
        self.bpw_spin.blockSignals(False)
        self.min_label.setText(f"{low:.2f}")
        for b, button in self.preset_buttons.items():
            button.setEnabled(b >= low)
            button.setToolTip("" if b >= low else f"below the smallest layout of this model ({low:.2f} bpw)")
        # The user's budget where they chose one, else the Settings page's default; clamped to this model's range.
        self._set_bpw(self.bpw() if self._bpw_chosen else default_budget(self.services.settings))
        self._load_cached_curve()

    def _preset_changed(self) -> None:
        if getattr(self, "info", None) is not None:
            self._prepare_budget()

    def bpw(self) -> float:
        """The chosen budget."""
        return round(self.bpw_spin.value(), 2)

    def choose_bpw(self, value: float) -> None:
        """The user sets the budget (slider, box or preset): it stays, whatever the default says."""
        self._bpw_chosen = True
        self._set_bpw(value)

    def _on_setting(self, key: str) -> None:
        if key == DEFAULT_BPW_KEY:  # a new default on the Settings page: the wizard starts from it again
            self._bpw_chosen = False
            self._set_bpw(default_budget(self.services.settings))

    def _set_bpw(self, value: float) -> None:
        value = round(min(max(float(value), self.bpw_spin.minimum()), qb.MAX_BPW), 2)
        for w, v in ((self.slider, int(round(value * 100))), (self.bpw_spin, value)):
            w.blockSignals(True)
            w.setValue(v)
            w.blockSignals(False)
        self._update_budget()

    def _update_budget(self) -> None:
        if self.source_gone():
            return
        if self.info is None or self.source is None:
            self.size_label.setText("–")
            self.vram_label.setText("Choose a model first")
            return
        fig = qb.figures(self.info, self.bpw(), self.planning_profile(),
                         local=self.source == "bundled" or Path(self.source).exists(),
                         preset=self.preset_combo.currentData(), stream=self.advanced.params()["stream"])
        self._show_plan_override()
        self.figures = fig
        self.size_label.setText(f"{fig.size_gb * 1024:,.0f} MB  (from {fig.source16_gb * 1024:,.0f} MB in 16 bits)"
                                if fig.size_gb < 1 else f"{fig.size_gb:.2f} GB  (from {fig.source16_gb:.2f} GB)")
        self.vram_label.setText(fig.chat_text())
        if fig.calibrate_verdict is not None:
            self.calib_label.setText(fig.quantize_text())
        if not self._out_edited:
            self.out_edit.setText(str(qb.default_output(self.services.models_dir(), self.source, self.bpw())))
        self._draw_budget_chart()

    def _draw_budget_chart(self) -> None:
        """Predicted quality from this model's last measurement when there is one, else predicted size."""
        chart = self.budget_curve
        if self.curve:
            chart.title, chart.y_label, chart.log_y = self._curve_title("Predicted perplexity"), "perplexity", True
            chart.set_points(self.curve, self._curve_point(self.bpw()))
            return
        from bitsmith.engine.plan import quantized_bytes

        chart.title = "Predicted size (quality is predicted after the first measurement of this model)"
        chart.y_label, chart.log_y = "MB", False
        low = int(round(self.slider.minimum()))
        steps = sorted({*range(low, int(qb.MAX_BPW * 100), 5), int(qb.MAX_BPW * 100)})
        pts = [(b / 100, quantized_bytes(self.info, b / 100) / 2**20) for b in steps]
        now = self.bpw()
        chart.set_points(pts, (now, quantized_bytes(self.info, now) / 2**20))

    def _curve_title(self, what: str) -> str:
        """The chart title with what the prediction rests on (the engine's words; an older run's curve has none)."""
        return f"{what}: {self.curve_basis}" if self.curve_basis else f"{what} (last measurement of this model)"

    def _curve_point(self, bpw: float) -> tuple[float, float] | None:
        pts = sorted(self.curve)
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            if x0 <= bpw <= x1 and x1 > x0:
                return bpw, y0 + (y1 - y0) * (bpw - x0) / (x1 - x0)
        return None

    def _load_cached_curve(self) -> None:
        """The predicted-quality curve a previous run of this model reported (job folders), if any."""
        self.curve = []
        key = f"quantize/curve/{self.source}"
        saved = self.services.settings.get(key)
        if isinstance(saved, list):
            self.curve = [(float(a), float(b)) for a, b in saved]
        self.curve_basis = str(self.services.settings.get(f"quantize/curve_basis/{self.source}") or "")
        self._draw_budget_chart()

    # -- an unfinished job from an earlier window ----------------------------------------------------
    def find_unfinished(self) -> dict[str, Any] | None:
        """Look in the jobs folder for a quantization left unfinished, and offer it on the first step."""
        running = self.job is not None and self.job.running
        dismissed = self.services.settings.get(DISMISSED_KEY) or []
        found = None if running else unfinished_quantize(self.services.jobs_dir(), set(dismissed))
        self.unfinished = found
        self.resume_box.setVisible(found is not None)
        if found is not None:
            p = found["params"]
            how = {"cancelled": "was stopped"}.get(found["status"], "did not finish (Bitsmith was closed or the "
                                                                  "worker stopped)")
            blocks = found["blocks_done"]
            of = f" of {found['blocks']}" if found["blocks"] else ""
            done = (f"{blocks}{of} blocks are calibrated and kept" if blocks else
                    "its measurement and layout are kept")
            when = f" on {found['updated'].replace('T', ' ').rstrip('Z')} UTC" if found["updated"] else ""
            self.resume_text.setText(f"Quantizing {qb.model_slug(str(p['source']))} to {float(p['bpw']):.2f} bpw "
                                     f"into {p['out']} {how}{when}: {done}. Resume continues from there.")
        return found

    def resume_unfinished(self) -> None:
        """Run the unfinished job again, in its own job folder, with its own request: the engine resumes it."""
        found = self.unfinished
        if found is None or (self.job is not None and self.job.running):
            return
        params = dict(found["params"])
        source = str(params["source"])
        if source != "bundled" and not Path(source).expanduser().exists() and (
                source.startswith((".", "/", "~")) or len(source) > 1 and source[1] == ":"):
            self.model_status.setText(f"The model {source} of the unfinished quantization is no longer there: it was "
                                      "moved or deleted. Put it back to resume, or start a new quantization.")
            return
        self.source, self.params, self._job_id = source, params, found["id"]
        self.source_local = source != "bundled" and Path(source).expanduser().exists()
        self._out_edited = True
        self.out_edit.setText(str(params["out"]))
        index = self.preset_combo.findData(params.get("preset"))
        if index >= 0:
            self.preset_combo.blockSignals(True)
            self.preset_combo.setCurrentIndex(index)
            self.preset_combo.blockSignals(False)
        self.advanced.set_params(params)
        self._bpw_chosen = True
        self._set_bpw(float(params["bpw"]))  # what the budget step shows if the user goes back to it
        self.resume_box.setVisible(False)
        self.unfinished = None
        self.start()

        def loaded(info: Any) -> None:  # the results step's "size before" and the budget step need it
            if self.source == source:
                self.info = info

        run_in_background(lambda: load_model_info(source), loaded, lambda _exc: None)

    def dismiss_unfinished(self) -> None:
        """Hide the offer for this job (its files stay; the Jobs page can still retry it)."""
        if self.unfinished is not None:
            dismissed = [*(self.services.settings.get(DISMISSED_KEY) or []), self.unfinished["id"]]
            self.services.settings.set(DISMISSED_KEY, dismissed[-50:])
        self.find_unfinished()

    # -- run --------------------------------------------------------------------------------------
    def job_params(self) -> dict[str, Any]:
        """The quantize request the budget step describes."""
        return {"source": self.source, "bpw": self.bpw(), "out": self.out_edit.text().strip(),
                "preset": self.preset_combo.currentData(), **self.advanced.params()}

    def start(self) -> None:
        """Start (or resume: same output) the quantize job and show the run step."""
        if self.job is not None and self.job.running:
            return
        if self.source_gone():
            return
        if self.source is None:
            self.go(0)
            return
        if self.step() == 2 or self.params is None:
            self.params = self.job_params()
        if not self.params["out"]:
            self.vram_label.setText("Choose where to save the model.")
            return
        for row in self.stage_rows.values():
            row.deleteLater()
        self.stage_rows.clear()
        self.metrics, self.result, self.summary = {}, None, None
        self.log_view.clear()
        self._current_stage = self._current_part = None
        self._show_foreign(None)
        self.out_note.setVisible(False)
        resumed = partial_folder(self.params["out"]).is_dir() and not (Path(self.params["out"]) /
                                                                        "bitsmith.json").is_file()
        blocks, total = calibration_progress(self.params["out"]) if resumed else (0, None)
        self.run_title.setText(f"Quantizing {qb.model_slug(self.source)} to {self.params['bpw']:.2f} bpw")
        if blocks:
            of = f" of {total}" if total else ""
            self.run_status.setText(f"Resuming: {blocks}{of} blocks were already calibrated…")
        else:
            self.run_status.setText("Resuming from the last checkpoint…" if resumed else "Starting the worker…")
        self.resume_button.setVisible(False)
        self.resume_button.setText("Resume")
        self.cancel_button.setEnabled(True)
        self.cancel_button.setVisible(True)
        self._started = time.monotonic()
        same = self.job is not None and self.job.params == self.params
        job_id = self.job.job_id if same else self._job_id  # a resume runs again in the job's own folder
        self._job_id = None
        self.job = self.services.jobs.start("quantize", self.params, job_id=job_id)
        self.resume_box.setVisible(False)
        self.job.event.connect(self._on_event)
        self.job.finished.connect(self._on_finished)
        self.go(3)

    def cancel(self) -> None:
        """Ask the job to stop at its next checkpoint."""
        if self.job is not None and self.job.running:
            self.job.cancel()
            self.cancel_button.setEnabled(False)
            self.run_status.setText("Stopping at the next checkpoint…")

    # -- a checkpoint of another run in the output's folder -------------------------------------------
    def _show_foreign(self, err: dict[str, Any] | None) -> None:
        """Offer Start over / Choose another folder for a foreign_checkpoint error (None: hide them)."""
        self._foreign = err
        for b in (self.start_over_button, self.other_folder_button):
            b.setVisible(err is not None)
        if err is None or self.params is None:
            return
        out = self.params["out"]
        self.resume_button.setVisible(False)  # trying again meets the same checkpoint
        self.run_title.setText("The output folder holds another quantization's unfinished work")
        folder = checkpoint_folder(out)
        reported = err.get("folder")
        ours = reported is None or Path(str(reported)).expanduser().resolve() == folder
        self.start_over_button.setVisible(ours)
        if ours:
            self.run_status.setText(
                f"The calibration checkpoint in {folder} was made by a different quantization (another model, budget, "
                "layout or settings), so this one cannot continue from it. Start over deletes that checkpoint and "
                f"calibrates from the beginning; Choose another folder keeps it and saves this model elsewhere than "
                f"{Path(out).name}.")
        else:  # not where this output keeps its checkpoint: never delete what the wizard did not make
            self.run_status.setText(f"{err.get('message', '')}. Choose another folder to save this model elsewhere.")

    def start_over(self) -> None:
        """After asking, delete the output's calibration checkpoint (only that folder) and run again."""
        if self._foreign is None or self.params is None or (self.job is not None and self.job.running):
            return
        folder = checkpoint_folder(self.params["out"])
        answer = QMessageBox.question(
            self, "Start over",
            f"Delete the calibration checkpoint in\n{folder}?\n\nThe blocks the other quantization calibrated "
            "there are lost; nothing else is deleted.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        if answer != QMessageBox.StandardButton.Yes:
            return
        try:
            delete_checkpoint(self.params["out"], self._foreign.get("folder"))
        except (OSError, ValueError) as exc:
            self.run_status.setText(f"Could not delete {folder}: {exc}. Choose another folder instead.")
            self.start_over_button.setVisible(False)
            return
        self.start()
        self.log_view.appendPlainText(f"[info] deleted the other run's checkpoint {folder}; starting over")
        self.run_status.setText("Starting over: the other quantization's checkpoint was deleted…")

    def choose_another_folder(self) -> None:
        """Back to the budget step with a new, unused output folder suggested in Save to, ready to change."""
        if self.params is None:
            return
        old = self.params["out"]
        self._out_edited = True
        self.out_edit.setText(str(unused_output(old)))
        self.go(2)
        self.out_note.setText(f"{old} keeps the other quantization's checkpoint. A new folder is suggested here; "
                              "change it if you like, then press Start quantizing.")
        self.out_note.setVisible(True)
        self.out_edit.setFocus()
        self.out_edit.selectAll()

    def _out_typed(self, _text: str) -> None:
        self._out_edited = True
        self.out_note.setVisible(False)

    def _row(self, stage: str, parent: str | None = None) -> StageRow:
        if stage not in self.stage_rows:
            row = StageRow(stage, parent)
            self.stages_box.addWidget(row)
            self.stage_rows[stage] = row
        return self.stage_rows[stage]

    def _reveal(self) -> None:
        """Keep the running stage's row in view (called again when a new row makes the list longer)."""
        row = self.stage_rows.get(self._current_part or self._current_stage or "")
        if row is not None:
            self.stages_scroll.ensureWidgetVisible(row)

    def _finish_part(self) -> None:
        if self._current_part:
            self.stage_rows[self._current_part].complete()
        self._current_part = None

    def _enter_stage(self, stage: str, total: int | None, parent: str | None = None) -> None:
        """A stage starts; the one before it is done only if this is not a part of it (the engine names the stage a
        part belongs to as its parent; the parent named again means its part is over, not the parent)."""
        if parent:
            if parent != self._current_stage:
                self._enter_stage(parent, None)
            if self._current_part != stage:
                self._finish_part()
            self._current_part = stage
            self._row(stage, parent).set_progress(0, total)
            self._reveal()
            self.run_status.setText(f"Stage: {parent} ({stage.removeprefix(parent + '-')})")
            return
        self._finish_part()
        if self._current_stage and self._current_stage != stage:
            self.stage_rows[self._current_stage].complete()
        self._current_stage = stage
        self._row(stage).set_progress(0, total)
        self._reveal()
        self.run_status.setText(f"Stage: {stage}")

    def _on_event(self, ev: dict) -> None:
        kind = ev.get("event")
        if kind == "stage":
            parent = ev.get("parent")
            self._enter_stage(str(ev.get("stage") or ""), ev.get("total"), str(parent) if parent else None)
        elif kind == "progress":
            stage = str(ev.get("stage") or "")
            if stage not in (self._current_stage, self._current_part):
                self._enter_stage(stage, ev.get("total"))
            self._row(stage).set_progress(ev.get("done"), ev.get("total"), ev.get("eta_s"))
        elif kind == "log":
            self.log_view.appendPlainText(f"[{ev.get('level', 'info')}] {ev.get('message', '')}")
        elif kind == "metric":
            name = ev.get("name")
            if name == "predicted_ppl_curve" and isinstance(ev.get("value"), list):
                self.curve = [(float(a), float(b)) for a, b in ev["value"]]
                self.curve_basis = str(ev.get("basis") or "")
                if self.source:
                    self.services.settings.set(f"quantize/curve/{self.source}", [list(p) for p in self.curve])
                    self.services.settings.set(f"quantize/curve_basis/{self.source}", self.curve_basis)
            elif name == "ppl":
                self.metrics[f"ppl_{ev.get('model', '')}"] = ev.get("value")
                self.log_view.appendPlainText(f"perplexity ({ev.get('model')}): {float(ev['value']):.2f}")
            else:
                self.metrics[str(name)] = ev.get("value")
        elif kind == "result":
            self.result = ev
        elif kind == "error":
            self.log_view.appendPlainText(f"[error] {ev.get('message', '')}\n{ev.get('hint', '')}".rstrip())

    def _on_finished(self, done: dict) -> None:
        status = done.get("status")
        self.cancel_button.setVisible(False)
        if self._current_stage and status == "ok":
            self._finish_part()
            self.stage_rows[self._current_stage].complete()
        if status == "ok" and self.result is not None:
            self.run_status.setText(f"Finished in {qb.format_eta(time.monotonic() - self._started)}.")
            self.show_results()
            return
        self.resume_button.setVisible(True)
        self.back_button.setVisible(True)
        if status == "cancelled":
            self.run_title.setText("Cancelled")
            self.run_status.setText("Stopped. Press Resume to continue from the last checkpoint; nothing done so "
                                    "far is lost.")
        else:
            err = self.job.errors[-1] if self.job and self.job.errors else {}
            if err.get("kind") == "foreign_checkpoint":
                self._show_foreign(err)
                return
            self.run_title.setText("The job stopped with an error")
            self.run_status.setText(f"{err.get('message', 'the worker ended unexpectedly')}. "
                                    f"{err.get('hint', '')} Press Resume to try again from the last checkpoint.")
            self.resume_button.setText("Try again")

    # -- results ----------------------------------------------------------------------------------
    def output_path(self) -> Path | None:
        """The finished model's folder."""
        if self.result and self.result.get("out"):
            return Path(self.result["out"])
        return None

    def show_results(self) -> None:
        """Fill the results step from the job's numbers and the saved folder, and show it."""
        out = self.output_path()
        assert out is not None and self.result is not None
        for b in (self.chat_button, self.finetune_button, self.export_button, self.open_button):
            b.setEnabled(True)
        from bitsmith.engine.model_summary import summarize

        try:
            self.summary = summarize(out)
        except Exception as exc:  # noqa: BLE001 - a damaged folder is reported, the numbers still show
            self.summary = None
            self.results_note.setText(f"Could not read {out}: {error_text(exc)}")
        self.results_title.setText(f"{qb.model_slug(self.source or '')} at {float(self.result['bpw']):.2f} bpw")
        self.ppl_before.setText(f"{float(self.result['ppl_fp']):.2f}")
        ratio = float(self.result["ppl"]) / float(self.result["ppl_fp"])
        self.ppl_after.setText(f"{float(self.result['ppl']):.2f}  ({(ratio - 1) * 100:+.1f} %)")
        if self.info is not None:
            before = (self.info.linear_params + self.info.other_params) * 2
            self.size_before.setText(f"{before / 2**20:,.0f} MB (16-bit)")
        after = self.summary["size_bytes"] if self.summary else qb.folder_bytes(out)
        self.size_after.setText(f"{after / 2**20:,.0f} MB")
        if self.summary:
            counts = ", ".join(f"{n} × {f}" for f, n in self.summary["format_counts"].items())
            self.results_note.setText(f"Saved to {out}  ·  layout: {counts}  ·  "
                                      f"{float(self.result.get('seconds', 0)):.0f} s")
            self.layout_chart.set_layers(self.summary["layers"])
        marker = None
        if self.curve:
            predicted = self.metrics.get("predicted_ppl")
            marker = (float(self.result["bpw"]), float(predicted)) if predicted else None
        self.curve_chart.title = self._curve_title("Predicted quality vs budget")
        self.curve_chart.measured = (float(self.result["bpw"]), float(self.result["ppl"]))
        self.curve_chart.set_points(self.curve, marker)
        self.export_bar.setVisible(False)
        self.export_status.setText("")
        self.go(4)

    def output_gone(self) -> bool:
        """Whether the finished model's folder has disappeared (deleted or moved outside Bitsmith); if so, say so and
        turn off the buttons that need it."""
        out = self.output_path()
        if out is None or out.exists():
            return False
        self.results_note.setText(f"The quantized model {out} is no longer there: it was moved or deleted outside "
                                  "Bitsmith. Quantize again to make it anew (Quantize another).")
        for b in (self.chat_button, self.finetune_button, self.export_button, self.open_button):
            b.setEnabled(False)
        return True

    def chat_with_it(self) -> None:
        """Open the chat page on the new model."""
        out = self.output_path()
        if out is None or self.services.open_page is None or self.output_gone():
            return
        chat = self.services.open_page("chat")
        use = getattr(chat, "use_model", None)
        if callable(use):
            use(str(out))

    def finetune_it(self) -> None:
        """Open the fine-tune page with the new model selected."""
        out = self.output_path()
        if out is None or self.services.open_page is None or self.output_gone():
            return
        use = getattr(self.services.open_page("finetune"), "use_model", None)
        if callable(use):
            use(str(out))

    def gguf_path(self) -> Path | None:
        """Where Export GGUF writes: next to the folder, <name>.gguf."""
        out = self.output_path()
        return out.with_name(out.name + ".gguf") if out else None

    def export_gguf(self) -> None:
        """Run the export job (exact mode) and show its progress."""
        target = self.gguf_path()
        if target is None or (self.export_job is not None and self.export_job.running) or self.output_gone():
            return
        self.export_bar.setVisible(True)
        self.export_bar.setRange(0, 0)
        self.export_status.setText(f"Exporting to {target.name}…")
        self.export_button.setEnabled(False)
        job = self.services.jobs.start("export", {"model": str(self.output_path()), "out": str(target),
                                                  "mode": "exact"})
        job.event.connect(self._on_export_event)
        job.finished.connect(self._on_export_finished)
        self.export_job = job

    def _on_export_event(self, ev: dict) -> None:
        if ev.get("event") == "progress" and ev.get("total"):
            self.export_bar.setRange(0, int(ev["total"]))
            self.export_bar.setValue(int(ev.get("done") or 0))

    def _on_export_finished(self, done: dict) -> None:
        self.export_button.setEnabled(True)
        self.export_bar.setVisible(False)
        if done.get("status") == "ok":
            target = self.gguf_path()
            size = target.stat().st_size / 2**20 if target and target.exists() else 0
            self.export_status.setText(f"Exported {target} ({size:,.0f} MB); llama.cpp and LM Studio can open it.")
        else:
            err = self.export_job.errors[-1] if self.export_job and self.export_job.errors else {}
            self.export_status.setText(f"Export failed: {err.get('message', done.get('status'))}. "
                                       f"{err.get('hint', '')}")

    def open_folder(self) -> None:
        """Show the model folder in the file manager."""
        out = self.output_path()
        if out is not None and not self.output_gone():
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(out)))

    def focus_target(self) -> QWidget:
        """Where the keyboard goes when the page is opened by its shortcut: the step's main control."""
        step = self.step()
        if step == 0:
            if self.resume_box.isVisible():
                return self.resume_unfinished_button
            return self.model_group.checkedButton() or self.bundled_radio
        if step == 3:
            for button in (self.cancel_button, self.resume_button, self.start_over_button, self.other_folder_button):
                if button.isVisible():
                    return button
            return self.resume_button
        if step == 4:
            return self.chat_button
        return self.next_button

    def on_shown(self) -> None:
        """Refresh what depends on the hardware, notice a model deleted while the page was away, and on the first step
        an unfinished quantization (another window may have left one)."""
        if self.step() in (1, 2) and not self.source_gone():
            self.go(self.step())
        elif self.step() == 4:
            self.output_gone()
        elif self.step() == 0:
            self.find_unfinished()
