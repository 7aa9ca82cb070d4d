"""Run a light blocking call (a Hub search, reading a GGUF header) on a pool thread; its result comes to the GUI."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal


class _Relay(QObject):
    """Carries a result from the pool thread to the GUI thread (queued signal)."""

    done = Signal(object)
    failed = Signal(object)


class _Task(QRunnable):
    def __init__(self, fn: Callable[[], Any], relay: _Relay) -> None:
        super().__init__()
        self.fn, self.relay = fn, relay

    def run(self) -> None:
        try:
            result = self.fn()
        except Exception as exc:  # noqa: BLE001 - reported to the caller, never lost
            exc.traceback_text = traceback.format_exc()  # type: ignore[attr-defined]
            signal, value = self.relay.failed, exc
        else:
            signal, value = self.relay.done, result
        try:
            signal.emit(value)
        except RuntimeError:  # the application is shutting down and the relay is gone: nobody is waiting
            pass


_alive: set[_Relay] = set()


def run_in_background(fn: Callable[[], Any], on_done: Callable[[Any], None],
                      on_error: Callable[[BaseException], None]) -> None:
    """Call `fn()` on Qt's global thread pool; `on_done(result)` or `on_error(exc)` runs on the GUI thread."""
    relay = _Relay()
    _alive.add(relay)

    def finish(callback: Callable[[Any], None], value: Any) -> None:
        _alive.discard(relay)
        callback(value)

    relay.done.connect(lambda value: finish(on_done, value))
    relay.failed.connect(lambda exc: finish(on_error, exc))
    QThreadPool.globalInstance().start(_Task(fn, relay))


def error_text(exc: BaseException) -> str:
    """A BitsmithError's message and hint (or the exception's own words) for a label."""
    hint = getattr(exc, "hint", None)
    text = str(exc) or type(exc).__name__
    return f"{text}. {hint}" if hint else text
