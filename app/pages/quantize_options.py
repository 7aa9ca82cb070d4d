"""The Quantize wizard's advanced options: the layout search mode and how the model is loaded.

Each choice maps to the engine's quantize request keys as `bitsmith quantize` sends them: "mode" (--mode,
layer-mix or channel-mix) and "stream" (--stream / --no-stream, None to let the engine decide). Collapsed
by default; the toggle says when a choice differs from the engine's default, so a hidden setting is never a
surprise.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QFormLayout, QToolButton, QVBoxLayout, QWidget

# (value sent, label, what it trades); the first is the engine's default.
MODES: tuple[tuple[str, str, str], ...] = (
    ("layer-mix", "Per layer (layer-mix)",
     "One format per whole layer: the simplest layout; every layer exports to GGUF exactly."),
    ("channel-mix", "Per channel group (channel-mix)",
     "A layer may split its input channels between two formats: finer use of the budget, but split layers store a "
     "permutation and are re-quantized (lossy) in a GGUF export."),
)
LOADINGS: tuple[tuple[bool | None, str, str], ...] = (
    (None, "Automatic",
     "Block by block only when the whole model would not fit in RAM (a folder with safetensors files)."),
    (False, "Whole model in memory",
     "Load every weight at once: the usual path; needs RAM for the whole model in 32-bit floats."),
    (True, "Block by block (streamed, less RAM)",
     "Read one decoder block at a time from the safetensors files: far less RAM, more reading from disk; a .gguf "
     "file is converted in full first."),
)


def _combo(name: str, items: tuple[tuple[Any, str, str], ...]) -> QComboBox:
    combo = QComboBox()
    combo.setAccessibleName(name)
    for _value, label, tip in items:  # values stay in `items`: a QVariant would blur None, False and 0
        combo.addItem(label)
        combo.setItemData(combo.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
    combo.currentIndexChanged.connect(lambda i: combo.setToolTip(items[i][2] if i >= 0 else ""))
    combo.setToolTip(items[0][2])
    return combo


class AdvancedOptions(QWidget):
    """A toggle ("Advanced") over the layout-search and loading choices; `params()` gives their request keys."""

    changed = Signal()

    def __init__(self) -> None:
        super().__init__()
        v = QVBoxLayout(self)
        v.setContentsMargins(0, 0, 0, 0)
        self.toggle = QToolButton()
        self.toggle.setCheckable(True)
        self.toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.toggle.setAutoRaise(True)
        self.toggle.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.toggle.setAccessibleName("Advanced options")
        self.toggle.setToolTip("Layout search and model loading (Space shows or hides them)")
        self.toggle.toggled.connect(self._expand)
        v.addWidget(self.toggle)
        self.panel = QWidget()
        form = QFormLayout(self.panel)
        form.setContentsMargins(22, 0, 0, 0)
        self.mode_combo = _combo("Layout search", MODES)
        self.loading_combo = _combo("Loading", LOADINGS)
        form.addRow("Layout search", self.mode_combo)
        form.addRow("Loading", self.loading_combo)
        self.panel.setVisible(False)
        v.addWidget(self.panel)
        for combo in (self.mode_combo, self.loading_combo):
            combo.currentIndexChanged.connect(lambda _i: self._changed())
        self._label()

    def _expand(self, on: bool) -> None:
        self.toggle.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)
        self.panel.setVisible(on)
        self._label()

    def _changed(self) -> None:
        self._label()
        self.changed.emit()

    def _label(self) -> None:
        """"Advanced", plus the choices that differ from the defaults while the panel is closed."""
        chosen = [c.currentText() for c in (self.mode_combo, self.loading_combo) if c.currentIndex() > 0]
        hidden = chosen and not self.toggle.isChecked()
        self.toggle.setText("Advanced" + (f": {', '.join(chosen)}" if hidden else ""))

    def params(self) -> dict[str, Any]:
        """The quantize request keys: "mode" and "stream" (None: the engine decides)."""
        return {"mode": MODES[self.mode_combo.currentIndex()][0],
                "stream": LOADINGS[self.loading_combo.currentIndex()][0]}

    def set_params(self, params: dict[str, Any]) -> None:
        """Show a request's choices (an unfinished job being resumed); missing keys are the defaults."""
        mode = params.get("mode") or MODES[0][0]
        stream = params.get("stream")
        stream = None if stream in (None, "auto") else bool(stream)
        self.mode_combo.setCurrentIndex(next((i for i, m in enumerate(MODES) if m[0] == mode), 0))
        self.loading_combo.setCurrentIndex(next(i for i, m in enumerate(LOADINGS) if m[0] is stream))
