"""Light and dark: the "system" theme follows the desktop when it switches (Qt's colour-scheme signal, or a platform
ThemeChange read from the platform's palette); a chosen theme stays. And high-DPI: at QT_SCALE_FACTOR=2 every page
renders at twice the pixels with nothing clipped."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication

from bitsmith.app import theme


@pytest.fixture
def restore_theme():  # noqa: ANN201
    """Leave the application as the other tests expect it: the platform's palette, no style sheet."""
    yield
    app = QApplication.instance()
    app.setProperty("bitsmith_dark", None)
    app.setStyleSheet("")
    app.setPalette(QPalette())


def _window_lightness() -> int:
    return QApplication.instance().palette().color(QPalette.ColorRole.Window).lightness()


def _code_colour(block) -> str:  # noqa: ANN001
    """The colour the code block gives a keyword."""
    return next(f for p, f in block.highlighter.rules if p.pattern.startswith(r"\b(")).foreground().color().name()


def test_the_system_theme_follows_the_desktop_switching_light_and_dark(qtbot, open_window, home: Path,  # noqa: ANN001
                                                                       monkeypatch, restore_theme) -> None:
    from bitsmith.app.chat.widgets import CodeBlock

    app = QApplication.instance()
    window = open_window("settings")
    settings_page = window.pages["settings"]
    assert settings_page.theme_combo.currentData() == "system"
    theme.apply_theme(app, "light")
    block = CodeBlock("def f():\n    return 1", "python")
    qtbot.addWidget(block)
    light_keyword = _code_colour(block)
    assert _window_lightness() > 128 and not theme.is_dark()
    hints = app.styleHints()

    # The desktop reports its scheme (Windows, macOS, GNOME, KDE): Qt's signal switches the app.
    monkeypatch.setattr(theme, "color_scheme", lambda: Qt.ColorScheme.Dark)
    with qtbot.waitSignal(window.theme_follower.changed, timeout=5000) as switched:
        hints.colorSchemeChanged.emit(Qt.ColorScheme.Dark)
    assert switched.args == [True] and theme.is_dark() and _window_lightness() < 128
    assert _code_colour(block) != light_keyword  # open code blocks are re-coloured for the dark background
    monkeypatch.setattr(theme, "color_scheme", lambda: Qt.ColorScheme.Light)
    with qtbot.waitSignal(window.theme_follower.changed, timeout=5000):
        hints.colorSchemeChanged.emit(Qt.ColorScheme.Light)
    assert not theme.is_dark() and _window_lightness() > 128 and _code_colour(block) == light_keyword

    # A desktop that reports no scheme only changes its palette and sends ThemeChange: the platform's palette decides
    # (this offscreen platform's is light), not the dark palette the app set itself.
    theme.apply_theme(app, "dark")
    assert _window_lightness() < 128
    monkeypatch.setattr(theme, "color_scheme", lambda: Qt.ColorScheme.Unknown)
    with qtbot.waitSignal(window.theme_follower.changed, timeout=5000) as switched:
        QApplication.sendEvent(window.windowHandle(), QEvent(QEvent.Type.ThemeChange))
    assert switched.args == [False] and not theme.is_dark() and _window_lightness() > 128

    # A theme the user chose stays whatever the desktop does.
    settings_page.theme_combo.setCurrentIndex(settings_page.theme_combo.findData("dark"))
    assert window.services.settings.get("theme") == "dark" and theme.is_dark()
    monkeypatch.setattr(theme, "color_scheme", lambda: Qt.ColorScheme.Light)
    hints.colorSchemeChanged.emit(Qt.ColorScheme.Light)
    QApplication.sendEvent(window.windowHandle(), QEvent(QEvent.Type.ThemeChange))
    qtbot.wait(50)
    assert theme.is_dark() and _window_lightness() < 128
    # Back to "system": the desktop's light scheme applies at once.
    settings_page.theme_combo.setCurrentIndex(settings_page.theme_combo.findData("system"))
    assert not theme.is_dark() and _window_lightness() > 128
    window.close()


HIDPI_PROBE = r"""
import json, os, sys
from PySide6.QtWidgets import (QAbstractButton, QAbstractSpinBox, QApplication, QComboBox, QLabel, QLineEdit,
                               QPlainTextEdit, QWidget)
app = QApplication([])
from bitsmith.app.services import Services
from bitsmith.app.theme import apply_theme
from bitsmith.app.window import PAGES, MainWindow

apply_theme(app, "light")
window = MainWindow(Services())
window.resize(1200, 800)
window.show()
for _ in range(5):
    app.processEvents()
report = {"dpr": window.devicePixelRatio(), "problems": [], "grab": None, "input_lines": None}
sidebar = window.sidebar
for i in range(sidebar.count()):
    item = sidebar.item(i)
    if sidebar.fontMetrics().horizontalAdvance(item.text()) + 32 > sidebar.visualItemRect(item).width():
        report["problems"].append(f"sidebar: {item.text()!r} clipped")
report["min_size"] = [0, 0]
for name, _ in PAGES:
    window.show_page(name)
    for _ in range(5):
        app.processEvents()
    need = window.minimumSizeHint()  # what a window manager keeps the window at, at least
    report["min_size"] = [max(report["min_size"][0], need.width()), max(report["min_size"][1], need.height())]
    window.resize(window.size().expandedTo(need))
    for _ in range(5):
        app.processEvents()
    page = window.pages[name]
    for w in page.findChildren(QWidget):
        if not w.isVisible() or isinstance(w.parent(), QAbstractSpinBox):
            continue
        what = f"{name}: {type(w).__name__} {getattr(w, 'text', lambda: '')()[:40]!r}"
        if isinstance(w, QLabel) and w.wordWrap():
            if w.heightForWidth(w.width()) > w.height() + 1:
                report["problems"].append(f"{what} {w.size().toTuple()} needs height {w.heightForWidth(w.width())}")
        elif isinstance(w, (QLabel, QAbstractButton, QComboBox, QLineEdit, QAbstractSpinBox)):
            need = w.minimumSizeHint()
            if isinstance(w, QAbstractButton) and not isinstance(w.parent(), QComboBox):
                need = w.sizeHint()  # a button's text is cut below its size hint
            if need.width() > w.width() + 1 or need.height() > w.height() + 1:
                report["problems"].append(f"{what} {w.size().toTuple()} < {need.toTuple()}")
    if name == "chat":
        box = page.input
        report["input_lines"] = box.viewport().height() / box.fontMetrics().lineSpacing()
window.resize(1200, 800)
for _ in range(5):
    app.processEvents()
image = window.grab().toImage()
report["grab"] = [image.width(), image.height()]
window.close()
print("REPORT " + json.dumps(report))
"""


@pytest.mark.parametrize("font_pt", [None, 16])
def test_every_page_is_unclipped_at_twice_the_pixel_density(home: Path, font_pt) -> None:  # noqa: ANN001
    """Each page at QT_SCALE_FACTOR=2 (a 4K screen at 200 %), and once more with a large user font on top (fixed
    pixel sizes are what break there): at the window's size (grown to its minimum where a page needs more, as a
    window manager does) every label, button and box gets at least its size hint, the sidebar's names fit, the
    chat's input shows three lines or more, and the window renders at twice its size in pixels."""
    env = {**os.environ, "QT_SCALE_FACTOR": "2", "QT_QPA_PLATFORM": "offscreen", "BITSMITH_HOME": str(home)}
    code = HIDPI_PROBE
    if font_pt:
        code = code.replace("app = QApplication([])\n", "app = QApplication([])\nf = app.font()\n"
                                                         f"f.setPointSizeF({font_pt})\napp.setFont(f)\n")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("REPORT "))[7:])
    assert report["dpr"] == 2.0 and report["grab"] == [2400, 1600]
    assert report["problems"] == []
    assert report["input_lines"] >= 3
    # The window never needs more than a 4K screen at 200 % offers (1920 x 1080 logical pixels); at the usual font
    # size it fits the 1200 x 800 it opens at.
    width, height = report["min_size"]
    assert width <= 1920 and height <= 1080 if font_pt else width <= 1200 and height <= 800, report["min_size"]
