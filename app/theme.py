"""Light and dark themes: Fusion with a palette that follows the system's colour scheme (or the user's choice).

With the theme on "system", `SystemThemeFollower` applies the light or dark palette again whenever the desktop
switches: Qt's colorSchemeChanged where the platform reports a scheme (Windows, macOS, GNOME, KDE), else the
ThemeChange event the platform sends its windows when its palette changes (the main window passes it on), read
from the platform's own palette. No application-wide event filter: a Python filter would run for every event.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, Qt, QTimer, Signal
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


def color_scheme() -> Any:
    """The desktop's colour scheme as Qt reports it (Qt.ColorScheme; Unknown where the platform does not say)."""
    scheme = getattr(QGuiApplication.styleHints(), "colorScheme", None)
    return scheme() if scheme is not None else Qt.ColorScheme.Unknown


def platform_palette(app: QApplication) -> QPalette:
    """The platform's own palette: the application's palette is ours once a theme is applied, so it is cleared for
    a moment to let Qt resolve the platform's (what a ThemeChange brought), then read."""
    if app.property("bitsmith_dark") is None:
        return app.palette()
    ours = app.palette()
    app.setPalette(QPalette())
    platform = app.palette()
    app.setPalette(ours)
    return platform


def system_is_dark(app: QApplication | None = None) -> bool:
    """Whether the desktop asks for a dark scheme: its colour scheme where Qt knows it, else its palette's lightness."""
    value = color_scheme()
    if value == Qt.ColorScheme.Dark:
        return True
    if value == Qt.ColorScheme.Light:
        return False
    app = app or QApplication.instance()
    palette = platform_palette(app) if isinstance(app, QApplication) else QGuiApplication.palette()
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


def apply_theme(app: QApplication, theme: str = "system") -> bool:
    """Apply Fusion with the light or dark palette; returns True when dark was chosen."""
    dark = system_is_dark(app) if theme not in ("light", "dark") else theme == "dark"
    if app.style().name().lower() != "fusion":
        app.setStyle("Fusion")
    app.setProperty("bitsmith_dark", dark)  # before the palette: widgets repainting for it ask is_dark()
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
    return dark


def is_dark(app: QApplication | None = None) -> bool:
    """Whether the theme applied last is dark."""
    app = app or QApplication.instance()
    return bool(app.property("bitsmith_dark")) if app is not None else False


class SystemThemeFollower(QObject):
    """Applies the "system" theme again when the desktop switches between light and dark (see the module docstring);
    with the theme set to light or dark it does nothing."""

    changed = Signal(bool)  # dark

    def __init__(self, app: QApplication, theme_setting: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.app, self.theme_setting = app, theme_setting  # theme_setting() -> "system" / "light" / "dark"
        self._timer = QTimer(self)  # several notices in a row (one per window) make one check
        self._timer.setSingleShot(True)
        self._timer.setInterval(0)
        self._timer.timeout.connect(self.check)
        hints = app.styleHints()
        if hasattr(hints, "colorSchemeChanged"):
            hints.colorSchemeChanged.connect(self.desktop_changed)  # a method: disconnected when this is deleted

    def desktop_changed(self, _scheme: Any = None) -> None:
        """The desktop's scheme or theme changed (Qt's signal, or a window's ThemeChange): check on the next turn."""
        if not self._timer.isActive():
            self._timer.start()

    def check(self) -> bool:
        """Follow the desktop now if the theme is "system" and its darkness changed; True when it switched."""
        if self.theme_setting() != "system":
            return False
        dark = system_is_dark(self.app)
        if self.app.property("bitsmith_dark") is not None and dark == is_dark(self.app):
            return False
        apply_theme(self.app, "system")
        self.changed.emit(dark)
        return True
