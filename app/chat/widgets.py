"""The message view: bubbles with Markdown text, code blocks with a Copy button and simple highlighting."""

from __future__ import annotations

import re
from dataclasses import dataclass

from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QFontDatabase, QSyntaxHighlighter, QTextCharFormat
from PySide6.QtWidgets import (
    QApplication,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ..theme import is_dark
from .store import Message


@dataclass(frozen=True)
class Segment:
    """A piece of a message: Markdown text, or a fenced code block (lang may be empty)."""

    kind: str  # "text" or "code"
    text: str
    lang: str = ""


_FENCE = re.compile(r"^(\s{0,3})(`{3,}|~{3,})\s*([\w+#.-]*)\s*$")


def split_markdown(text: str) -> list[Segment]:
    """Split text into Markdown and fenced code blocks; an unclosed fence (still streaming) runs to the end."""
    out: list[Segment] = []
    buf: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            buf.append(lines[i])
            i += 1
            continue
        fence, lang = m.group(2), m.group(3)
        if buf and "\n".join(buf).strip():
            out.append(Segment("text", "\n".join(buf).strip("\n")))
        buf = []
        code: list[str] = []
        i += 1
        while i < len(lines):
            close = lines[i].strip()
            if close.startswith(fence[0] * len(fence)) and set(close) == {fence[0]}:
                i += 1
                break
            code.append(lines[i])
            i += 1
        out.append(Segment("code", "\n".join(code), lang))
    if buf and "\n".join(buf).strip():
        out.append(Segment("text", "\n".join(buf).strip("\n")))
    return out


_KEYWORDS = (
    "and as assert async await break case class const continue def del elif else enum except export false "
    "False finally fn for from func function if impl import in interface is let loop match mod mut new nil "
    "None not null or package pass pub raise return self static struct switch this throw true True try type "
    "use var void while with yield int float str bool char double long"
).split()


class CodeHighlighter(QSyntaxHighlighter):
    """Language-agnostic highlighting: keywords, strings, numbers and comments (# and //)."""

    def __init__(self, document: object, dark: bool) -> None:
        super().__init__(document)
        self.set_dark(dark)

    def set_dark(self, dark: bool) -> None:
        """Colours for a dark or a light background (the theme can switch while a chat is open)."""
        self.dark = dark

        def fmt(color: str, bold: bool = False, italic: bool = False) -> QTextCharFormat:
            f = QTextCharFormat()
            f.setForeground(QColor(color))
            if bold:
                f.setFontWeight(QFont.Weight.Bold)
            f.setFontItalic(italic)
            return f

        self.rules = [
            (re.compile(r"\b(" + "|".join(map(re.escape, _KEYWORDS)) + r")\b"),
             fmt("#c792ea" if dark else "#7a3e9d", bold=True)),
            (re.compile(r"\b\d+(\.\d+)?\b"), fmt("#f78c6c" if dark else "#b35a00")),
            (re.compile(r"\"[^\"\\]*(\\.[^\"\\]*)*\"|'[^'\\]*(\\.[^'\\]*)*'"), fmt("#c3e88d" if dark else "#2e7d32")),
            (re.compile(r"(#|//).*$"), fmt("#7f8796" if dark else "#8a8f98", italic=True)),
        ]
        self.rehighlight()

    def highlightBlock(self, text: str) -> None:  # noqa: N802 - Qt's name
        """Apply the rules to one line."""
        for pattern, f in self.rules:
            for m in pattern.finditer(text):
                self.setFormat(m.start(), m.end() - m.start(), f)


class CodeBlock(QFrame):
    """A fenced code block: a header with its language and a Copy button, then the code (no wrapping)."""

    def __init__(self, code: str, lang: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("codeblock")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 6)
        layout.setSpacing(2)
        head = QHBoxLayout()
        self.lang_label = QLabel(lang or "code")
        self.lang_label.setObjectName("muted")
        self.copy_button = QPushButton("Copy")
        self.copy_button.setFlat(True)
        self.copy_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.copy_button.setToolTip("Copy this code block")
        self.copy_button.clicked.connect(self.copy)
        head.addWidget(self.lang_label)
        head.addStretch(1)
        head.addWidget(self.copy_button)
        layout.addLayout(head)
        self.editor = QPlainTextEdit()
        self.editor.setReadOnly(True)
        self.editor.setFrameShape(QFrame.Shape.NoFrame)
        self.editor.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.editor.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.editor.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.editor.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.editor.setStyleSheet("background: transparent;")
        self.highlighter = CodeHighlighter(self.editor.document(), is_dark())
        layout.addWidget(self.editor)
        self.set_code(code, lang)

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt's name
        """Re-colour the code when the theme switches between light and dark."""
        if event.type() == QEvent.Type.PaletteChange and self.highlighter.dark != is_dark():
            self.highlighter.set_dark(is_dark())
        super().changeEvent(event)

    def set_code(self, code: str, lang: str) -> None:
        """Show new code (called while an answer streams)."""
        self.lang_label.setText(lang or "code")
        if self.editor.toPlainText() != code:
            self.editor.setPlainText(code)
        lines = max(1, code.count("\n") + 1)
        metrics = self.editor.fontMetrics()
        scroll = self.editor.horizontalScrollBar().sizeHint().height()
        self.editor.setFixedHeight(lines * metrics.lineSpacing() + 12 + scroll)

    def code(self) -> str:
        """The block's text."""
        return self.editor.toPlainText()

    def copy(self) -> None:
        """Put the code on the clipboard and say so briefly."""
        QApplication.clipboard().setText(self.code())
        self.copy_button.setText("Copied")
        QTimer.singleShot(1200, self.copy_button, lambda: self.copy_button.setText("Copy"))  # dies with it


def _text_label(markdown: str) -> QLabel:
    label = QLabel()
    label.setTextFormat(Qt.TextFormat.MarkdownText)
    label.setWordWrap(True)
    label.setOpenExternalLinks(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
    label.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
    label.setText(markdown)
    return label


class MessageWidget(QFrame):
    """One message bubble: who, the content (Markdown and code blocks), facts and actions."""

    copy_requested = Signal(int)
    edit_requested = Signal(int)
    regenerate_requested = Signal(int)

    def __init__(self, message: Message, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.message = message
        self.setObjectName(f"bubble_{message.role}")
        self.setFrameShape(QFrame.Shape.NoFrame)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(12, 8, 12, 8)
        outer.setSpacing(4)
        who = QLabel({"user": "You", "assistant": "Assistant"}.get(message.role, message.role.capitalize()))
        font = who.font()
        font.setBold(True)
        who.setFont(font)
        outer.addWidget(who)
        self.body = QVBoxLayout()
        self.body.setSpacing(6)
        outer.addLayout(self.body)
        self._segments: list[Segment] = []
        self._widgets: list[QWidget] = []
        footer = QHBoxLayout()
        self.meta_label = QLabel()
        self.meta_label.setObjectName("muted")
        footer.addWidget(self.meta_label, 1)
        self.copy_button = self._action("Copy", "Copy the whole message", self.copy_requested)
        footer.addWidget(self.copy_button)
        self.edit_button = self._action("Edit", "Edit this message and send it again", self.edit_requested)
        self.regen_button = self._action("Regenerate", "Answer this again", self.regenerate_requested)
        footer.addWidget(self.edit_button)
        footer.addWidget(self.regen_button)
        self.edit_button.setVisible(message.role == "user")
        self.regen_button.setVisible(False)
        outer.addLayout(footer)
        self.update_message(message)

    def _action(self, text: str, tip: str, signal: Signal) -> QPushButton:
        button = QPushButton(text)
        button.setFlat(True)
        button.setToolTip(tip)
        button.setCursor(Qt.CursorShape.PointingHandCursor)
        button.clicked.connect(lambda: signal.emit(self.message.id))
        return button

    def update_message(self, message: Message) -> None:
        """Show the message's current text, status and facts."""
        self.message = message
        self.set_text(message.content)
        self.meta_label.setText(describe_meta(message))

    def append_text(self, text: str) -> None:
        """Add streamed text."""
        self.message.content += text
        self.set_text(self.message.content)

    def set_text(self, text: str) -> None:
        """Render text as segments, reusing the widgets of unchanged segments (cheap while streaming)."""
        segments = split_markdown(text) or [Segment("text", "")]
        for i, seg in enumerate(segments):
            if i < len(self._segments) and self._segments[i] == seg:
                continue
            if i < len(self._widgets) and self._segments[i].kind == seg.kind:
                widget = self._widgets[i]
                if isinstance(widget, CodeBlock):
                    widget.set_code(seg.text, seg.lang)
                else:
                    widget.setText(seg.text)  # type: ignore[attr-defined]
            else:
                for old in self._widgets[i:]:
                    old.deleteLater()
                del self._widgets[i:]
                widget = CodeBlock(seg.text, seg.lang) if seg.kind == "code" else _text_label(seg.text)
                self._widgets.append(widget)
                self.body.addWidget(widget)
        for old in self._widgets[len(segments):]:
            old.deleteLater()
        del self._widgets[len(segments):]
        self._segments = segments

    def code_blocks(self) -> list[CodeBlock]:
        """The code blocks shown in this message."""
        return [w for w in self._widgets if isinstance(w, CodeBlock)]

    def set_actions(self, regenerate: bool, enabled: bool) -> None:
        """Show Regenerate on the last answer; disable edits while an answer streams."""
        self.regen_button.setVisible(regenerate and self.message.role == "assistant")
        self.regen_button.setEnabled(enabled)
        self.edit_button.setEnabled(enabled)


def describe_meta(message: Message) -> str:
    """The small line under an answer: tokens, speed, and anything unusual about how it ended."""
    meta = message.meta
    parts: list[str] = []
    if message.status == "streaming":
        parts.append("writing…")
    if meta.get("completion_tokens"):
        parts.append(f"{meta['completion_tokens']} tokens")
    if meta.get("decode_tok_s"):
        parts.append(f"{meta['decode_tok_s']:.1f} tok/s")
    if meta.get("model"):
        parts.append(str(meta["model"]))
    reasons = {"max_tokens": "hit the max-tokens limit", "context_full": "context full",
               "stop_string": "", "eos": "", "stopped": "stopped"}
    reason = reasons.get(str(meta.get("reason", "")), "")
    if message.status == "stopped" and reason != "stopped":
        reason = "stopped"
    if message.status == "interrupted":
        reason = "interrupted (the app or the model process ended mid-answer)"
    if message.status == "error":
        reason = "failed: " + str(meta.get("error", "unknown error"))
    if reason:
        parts.append(reason)
    return " · ".join(parts)


class MessageView(QScrollArea):
    """A scrolling column of MessageWidgets that follows the newest text while the user is at the bottom."""

    copy_requested = Signal(int)
    edit_requested = Signal(int)
    regenerate_requested = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        inner = QWidget()
        self.column = QVBoxLayout(inner)
        self.column.setContentsMargins(16, 12, 16, 12)
        self.column.setSpacing(10)
        self.column.addStretch(1)
        self.setWidget(inner)
        self.widgets: dict[int, MessageWidget] = {}
        self.empty_label = QLabel("Type a message below to start. Enter sends, Shift+Enter adds a line.")
        self.empty_label.setObjectName("muted")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.column.insertWidget(0, self.empty_label)
        self._follow = True
        self.verticalScrollBar().rangeChanged.connect(self._on_range)
        self.verticalScrollBar().valueChanged.connect(self._on_scroll)

    def _on_scroll(self, value: int) -> None:
        self._follow = value >= self.verticalScrollBar().maximum() - 24

    def _on_range(self, _lo: int, hi: int) -> None:
        if self._follow:
            self.verticalScrollBar().setValue(hi)

    def clear(self) -> None:
        """Remove every message."""
        for w in self.widgets.values():
            w.deleteLater()
        self.widgets.clear()
        self.empty_label.show()

    def add(self, message: Message) -> MessageWidget:
        """Append a message at the bottom."""
        widget = MessageWidget(message)
        widget.copy_requested.connect(self.copy_requested)
        widget.edit_requested.connect(self.edit_requested)
        widget.regenerate_requested.connect(self.regenerate_requested)
        self.column.insertWidget(self.column.count() - 1, widget)
        self.widgets[message.id] = widget
        self.empty_label.hide()
        self._follow = True
        return widget

    def set_messages(self, messages: list[Message]) -> None:
        """Show exactly these messages."""
        self.clear()
        for m in messages:
            self.add(m)
        self.empty_label.setVisible(not messages)
        self._follow = True
        QTimer.singleShot(0, lambda: self.verticalScrollBar().setValue(self.verticalScrollBar().maximum()))
