"""Small QPainter charts: a line chart (quality curve, loss) with a marked point, and a per-layer bits bar chart."""

from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPalette, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

_MARGIN_L, _MARGIN_R, _MARGIN_T, _MARGIN_B = 56, 14, 26, 34
FORMAT_COLORS = {2: "#e07b39", 3: "#d6b23a", 4: "#2f8fd6", 8: "#4caf50", 16: "#8a8f98"}


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round tick values covering [lo, hi]."""
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    ticks, v = [], start
    while v <= hi + step * 1e-6:
        ticks.append(round(v, 10))
        v += step
    return ticks


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks between lo and hi (> 0) for a log axis, thinned to about six."""
    if lo <= 0 or hi <= lo:
        return [lo]
    ticks = [m * 10.0**e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
             for m in (1, 2, 5) if lo <= m * 10.0**e <= hi]
    while len(ticks) > 7:
        ticks = ticks[::2]
    return ticks


class LineChart(QWidget):
    """y over x as a line, with an optional highlighted point (e.g. the chosen budget on the quality curve)."""

    def __init__(self, title: str = "", x_label: str = "", y_label: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title, self.x_label, self.y_label = title, x_label, y_label
        self.points: list[tuple[float, float]] = []
        self.marker: tuple[float, float] | None = None
        self.measured: tuple[float, float] | None = None  # a measured point shown beside the predicted line
        self.log_y = False
        self.setMinimumSize(260, 170)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_points(self, points: list[tuple[float, float]], marker: tuple[float, float] | None = None) -> None:
        """Replace the data (finite points only) and redraw."""
        self.points = sorted((float(x), float(y)) for x, y in points if math.isfinite(x) and math.isfinite(y))
        self.marker = marker
        self.update()

    def add_point(self, x: float, y: float) -> None:
        """Append one point (a live loss curve)."""
        if math.isfinite(x) and math.isfinite(y):
            self.points.append((float(x), float(y)))
            self.update()

    def paintEvent(self, _event) -> None:  # noqa: N802, ANN001 - Qt's name
        """Axes, ticks, the line and the marker, in the palette's colours."""
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        text = pal.color(QPalette.ColorRole.WindowText)
        grid = pal.color(QPalette.ColorRole.Mid)
        line = pal.color(QPalette.ColorRole.Highlight)
        p.fillRect(self.rect(), pal.color(QPalette.ColorRole.Base))
        p.setPen(text)
        p.drawText(QRectF(0, 4, self.width(), 18), Qt.AlignmentFlag.AlignHCenter, self.title)
        plot = QRectF(_MARGIN_L, _MARGIN_T, self.width() - _MARGIN_L - _MARGIN_R,
                      self.height() - _MARGIN_T - _MARGIN_B)
        pts = [(x, y) for x, y in self.points if not self.log_y or y > 0]
        pts_all = pts + [m for m in (self.marker, self.measured) if m is not None]
        if not pts_all:
            p.setPen(pal.color(QPalette.ColorRole.PlaceholderText))
            p.drawText(plot, Qt.AlignmentFlag.AlignCenter, "No data yet")
            return
        fy = (lambda v: math.log(v)) if self.log_y else (lambda v: v)
        xs, ys = [x for x, _ in pts_all], [fy(y) for _, y in pts_all]
        x0, x1 = min(xs), max(xs)
        y0, y1 = min(ys), max(ys)
        if x1 - x0 < 1e-9:
            x0, x1 = x0 - 1, x1 + 1
        if y1 - y0 < 1e-9:
            y0, y1 = y0 - 1, y1 + 1
        pad = (y1 - y0) * 0.08
        y0, y1 = y0 - pad, y1 + pad

        def to_px(x: float, y: float) -> QPointF:
            return QPointF(plot.left() + (x - x0) / (x1 - x0) * plot.width(),
                           plot.bottom() - (fy(y) - y0) / (y1 - y0) * plot.height())

        font = p.font()
        font.setPointSizeF(max(font.pointSizeF() - 1, 7))
        p.setFont(font)
        for t in _nice_ticks(x0, x1, 6):
            px = plot.left() + (t - x0) / (x1 - x0) * plot.width()
            p.setPen(QPen(grid, 1, Qt.PenStyle.DotLine))
            p.drawLine(QPointF(px, plot.top()), QPointF(px, plot.bottom()))
            p.setPen(text)
            p.drawText(QRectF(px - 30, plot.bottom() + 2, 60, 14), Qt.AlignmentFlag.AlignHCenter, f"{t:g}")
        y_ticks = _log_ticks(math.exp(y0), math.exp(y1)) if self.log_y else _nice_ticks(y0, y1, 5)
        for t in y_ticks:
            if self.log_y and t <= 0:
                continue
            py = plot.bottom() - (fy(t) - y0) / (y1 - y0) * plot.height()
            if not plot.top() - 1 <= py <= plot.bottom() + 1:
                continue
            p.setPen(QPen(grid, 1, Qt.PenStyle.DotLine))
            p.drawLine(QPointF(plot.left(), py), QPointF(plot.right(), py))
            p.setPen(text)
            p.drawText(QRectF(0, py - 7, _MARGIN_L - 6, 14), Qt.AlignmentFlag.AlignRight, f"{t:g}")
        p.setPen(QPen(grid, 1))
        p.drawRect(plot)
        p.setPen(text)
        p.drawText(QRectF(plot.left(), self.height() - 16, plot.width(), 14), Qt.AlignmentFlag.AlignHCenter,
                   self.x_label)
        p.save()
        p.translate(12, plot.center().y())
        p.rotate(-90)
        p.drawText(QRectF(-plot.height() / 2, -8, plot.height(), 14), Qt.AlignmentFlag.AlignHCenter, self.y_label)
        p.restore()
        if len(pts) >= 2:
            path = QPainterPath(to_px(*pts[0]))
            for x, y in pts[1:]:
                path.lineTo(to_px(x, y))
            p.setPen(QPen(line, 2))
            p.drawPath(path)
        elif pts:
            p.setBrush(line)
            p.drawEllipse(to_px(*pts[0]), 3, 3)
        if self.marker is not None:
            mark = QColor("#e0533d")
            p.setPen(QPen(mark, 2))
            p.setBrush(mark)
            c = to_px(*self.marker)
            p.drawEllipse(c, 5, 5)
            p.drawText(QRectF(c.x() + 8, c.y() - 18, 200, 14), Qt.AlignmentFlag.AlignLeft,
                       f"{self.marker[0]:.2f} → {self.marker[1]:.1f}")
        if self.measured is not None:
            good = QColor("#2e9d58")
            p.setPen(QPen(good, 2))
            p.setBrush(good)
            c = to_px(*self.measured)
            p.drawRect(QRectF(c.x() - 5, c.y() - 5, 10, 10))
            p.drawText(QRectF(c.x() + 8, c.y() + 2, 220, 14), Qt.AlignmentFlag.AlignLeft,
                       f"measured after calibration: {self.measured[1]:.1f}")


class LayoutChart(QWidget):
    """Bits per weight of each quantized layer as a bar, coloured by format, in model order."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.layers: list[dict] = []
        self.setMinimumSize(260, 170)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_layers(self, layers: list[dict]) -> None:
        """Layers as model_summary gives them: name, format, bpw."""
        self.layers = list(layers)
        self.update()

    def paintEvent(self, _event) -> None:  # noqa: N802, ANN001 - Qt's name
        """One bar per layer; a legend of the formats used."""
        p = QPainter(self)
        pal = self.palette()
        text = pal.color(QPalette.ColorRole.WindowText)
        p.fillRect(self.rect(), pal.color(QPalette.ColorRole.Base))
        p.setPen(text)
        p.drawText(QRectF(0, 4, self.width(), 18), Qt.AlignmentFlag.AlignHCenter,
                   f"Per-layer layout ({len(self.layers)} linear layers)")
        plot = QRectF(_MARGIN_L, _MARGIN_T + 14, self.width() - _MARGIN_L - _MARGIN_R,
                      self.height() - _MARGIN_T - 14 - _MARGIN_B)
        if not self.layers:
            p.setPen(pal.color(QPalette.ColorRole.PlaceholderText))
            p.drawText(plot, Qt.AlignmentFlag.AlignCenter, "No layout yet")
            return
        top = max(5.0, max(float(layer.get("bpw", 0)) for layer in self.layers))
        width = plot.width() / len(self.layers)
        used: dict[str, QColor] = {}
        for i, layer in enumerate(self.layers):
            fmt = str(layer.get("format", ""))
            bits = int("".join(ch for ch in fmt.split("_")[0] if ch.isdigit()) or 16)
            color = QColor(FORMAT_COLORS.get(bits, "#9c6ade"))
            used[fmt] = color
            h = float(layer.get("bpw", 0)) / top * plot.height()
            x0, x1 = round(plot.left() + i * width), round(plot.left() + (i + 1) * width)
            p.fillRect(QRectF(x0, plot.bottom() - h, max(x1 - x0, 1), h), color)
        p.setPen(QPen(pal.color(QPalette.ColorRole.Mid), 1))
        p.drawRect(plot)
        p.setPen(text)
        for t in _nice_ticks(0, top, 4):
            py = plot.bottom() - t / top * plot.height()
            p.drawText(QRectF(0, py - 7, _MARGIN_L - 6, 14), Qt.AlignmentFlag.AlignRight, f"{t:g}")
        p.drawText(QRectF(plot.left(), self.height() - 16, plot.width(), 14), Qt.AlignmentFlag.AlignHCenter,
                   "layer (input → output)   ·   bar height: bits per weight")
        x = plot.left()
        for fmt, color in sorted(used.items()):
            p.fillRect(QRectF(x, _MARGIN_T - 2, 10, 10), color)
            p.drawText(QRectF(x + 14, _MARGIN_T - 5, 120, 14), Qt.AlignmentFlag.AlignLeft, fmt)
            x += 110
