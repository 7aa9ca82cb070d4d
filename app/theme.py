"""Light and dark themes: Fusion with a palette that follows the system's colour scheme (or the user's choice)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

THEMES = ("system", "light", "dark")

_DARK = {
    QPalette.ColorRole.Window: "#1f2126", QPalette.ColorRole.WindowText: "#e6e6e6",
    QPalette.ColorRole.Base: "#17181c", QPalette.ColorRole.AlternateBase: "#24262c",
    QPalette.ColorRole.Text: "#e6e6e6", QPalette.ColorRole.Button: "#2a2d33",
    QPalette.ColorRole.ButtonText: "#e6e6e6", QPalette.ColorRole.Highlight: "#3d7be0",
    QPalette.ColorRole.HighlightedText: "#ffffff", QPalette.ColorRole.ToolTipBase: "#2a2d33",
    QPalette.ColorRole.ToolTipText: "#e6e6e6", QPalette.ColorRole.PlaceholderText: "#8a8f98",
    QPalette.ColorRole.Link: "#6ea8ff", QPalette.ColorRole.Mid: "#3a3d44", QPalette.ColorRole.Dark: "#111214",
}
_LIGHT = {
    QPalette.ColorRole.Window: "#f4f5f7", QPalette.ColorRole.WindowText: "#1d1f23",
    QPalette.ColorRole.Base: "#ffffff", QPalette.ColorRole.AlternateBase: "#eef0f3",
    QPalette.ColorRole.Text: "#1d1f23", QPalette.ColorRole.Button: "#e9ebef",
    QPalette.ColorRole.ButtonText: "#1d1f23", QPalette.ColorRole.Highlight: "#2f6fd6",
    QPalette.ColorRole.HighlightedText: "#ffffff", QPalette.ColorRole.ToolTipBase: "#ffffff",
    QPalette.ColorRole.ToolTipText: "#1d1f23", QPalette.ColorRole.PlaceholderText: "#80858f",
    QPalette.ColorRole.Link: "#2160c4", QPalette.ColorRole.Mid: "#c9ccd2", QPalette.ColorRole.Dark: "#9da1a8",
}

_STYLE = """
QListWidget#sidebar { border: none; background: %(side)s; font-size: 14px; padding-top: 8px; }
QListWidget#sidebar::item { padding: 9px 16px; border-radius: 6px; margin: 1px 8px; }
QListWidget#sidebar::item:selected { background: %(hl)s; color: white; }
QFrame#bubble_user { background: %(user)s; border-radius: 10px; }
QFrame#bubble_assistant { background: %(bot)s; border-radius: 10px; }
QFrame#codeblock { background: %(code)s; border: 1px solid %(mid)s; border-radius: 6px; }
QLabel#muted { color: %(muted)s; }
QLabel#banner { background: %(warn)s; color: %(warntext)s; border-radius: 6px; padding: 8px; }
QLabel#placeholder_title { font-size: 20px; font-weight: 600; }
"""


def system_is_dark() -> bool:
    """Whether the desktop asks for a dark scheme (Qt 6.5+ colorScheme, else the default palette's lightness)."""
    hints = QGuiApplication.styleHints()
    scheme = getattr(hints, "colorScheme", None)
    if scheme is not None:
        value = scheme()
        if value == Qt.ColorScheme.Dark:
            return True
        if value == Qt.ColorScheme.Light:
            return False
    return QGuiApplication.palette().color(QPalette.ColorRole.Window).lightness() < 128


def apply_theme(app: QApplication, theme: str = "system") -> bool:
    """Apply Fusion with the light or dark palette; returns True when dark was chosen."""
    dark = system_is_dark() if theme not in ("light", "dark") else theme == "dark"
    app.setStyle("Fusion")
    palette = QPalette()
    for role, color in (_DARK if dark else _LIGHT).items():
        palette.setColor(role, QColor(color))
    disabled = QColor("#6b6f77" if dark else "#a0a4ab")
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.WindowText, QPalette.ColorRole.ButtonText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, disabled)
    app.setPalette(palette)
    colors = {
        "side": "#191b1f" if dark else "#e8eaee", "hl": "#3d7be0" if dark else "#2f6fd6",
        "user": "#27406b" if dark else "#dde8fb", "bot": "#26282e" if dark else "#ffffff",
        "code": "#15161a" if dark else "#f6f7f9", "mid": "#3a3d44" if dark else "#d5d8de",
        "muted": "#8a8f98" if dark else "#6b7079", "warn": "#5a3b12" if dark else "#fff1d6",
        "warntext": "#ffe2b0" if dark else "#5a3b12",
    }
    app.setStyleSheet(_STYLE % colors)
    app.setProperty("bitsmith_dark", dark)
    return dark


def is_dark(app: QApplication | None = None) -> bool:
    """Whether the theme applied last is dark."""
    app = app or QApplication.instance()
    return bool(app.property("bitsmith_dark")) if app is not None else False
