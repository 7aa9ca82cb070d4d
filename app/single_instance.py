"""One app per user and data folder: a second launch brings the first window to the front and exits.

Two windows on one data folder would fight over settings.json and the chat database. The first instance holds
a QLockFile in the data folder and listens on a QLocalServer whose name is derived from the user and that
folder. A later launch finds the lock held, connects, sends one JSON line (`{"activate": true, "page": ...}`),
waits for "ok" and exits. Qt treats a lock whose process is gone as stale and removes it, and the first
instance replaces a socket file left behind, so a crashed app never blocks the next start.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QLockFile, QObject, Qt, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket
from PySide6.QtWidgets import QWidget

log = logging.getLogger(__name__)

LOCK_FILE = "bitsmith-app.lock"
CONNECT_MS = 1000
ANSWER_MS = 3000
STARTUP_WAIT_S = 5.0  # the first instance takes the lock a moment before it listens


def server_name(data_dir: str | Path) -> str:
    """The local server's name for this user and data folder (short: Unix socket paths are limited)."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (some containers): the uid still separates users
        user = str(getattr(os, "getuid", lambda: "user")())
    key = f"{user}\0{Path(data_dir).expanduser().resolve()}"
    return f"bitsmith-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


class SingleInstance(QObject):
    """The guard (see the module docstring): `acquire()` once at start, then `hand_over()` if it said False."""

    activated = Signal(dict)  # a later launch asked this one to come to the front (its message)

    def __init__(self, data_dir: str | Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.data_dir = Path(data_dir)
        self.name = server_name(self.data_dir)
        self.lock: QLockFile | None = None
        self.server: QLocalServer | None = None
        self.other_pid: int | None = None
        self._clients: set[QLocalSocket] = set()

    @property
    def lock_path(self) -> Path:
        """The lock file in the data folder."""
        return self.data_dir / LOCK_FILE

    def acquire(self) -> bool:
        """True when this is the first instance (it now holds the lock and listens); False when another runs."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("cannot create %s (%s): starting without the single-instance guard", self.data_dir, exc)
            return True
        lock = QLockFile(str(self.lock_path))
        lock.setStaleLockTime(0)  # stale only when its process is gone, never by age: the app runs for days
        if lock.tryLock(0):
            self.lock = lock
            self._listen()
            return True
        if lock.error() != QLockFile.LockError.LockFailedError:  # e.g. a read-only folder: run unguarded
            log.warning("cannot lock %s (%s): starting without the single-instance guard", self.lock_path,
                        lock.error().name)
            return True
        info = lock.getLockInfo()
        self.other_pid = int(info[0]) if isinstance(info, tuple) and info and isinstance(info[0], int) else None
        return False

    def _listen(self) -> None:
        server = QLocalServer(self)
        server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        if not server.listen(self.name):
            # We hold the lock, so a server of that name is a leftover of a crashed instance (a Unix socket file).
            QLocalServer.removeServer(self.name)
            if not server.listen(self.name):
                log.warning("cannot listen on %s: %s; a second launch will not find this window", self.name,
                            server.errorString())
                return
        server.newConnection.connect(self._on_connection)
        self.server = server

    def _on_connection(self) -> None:
        server = self.server
        while server is not None and server.hasPendingConnections():
            sock = server.nextPendingConnection()
            self._clients.add(sock)
            sock.readyRead.connect(self._on_message)
            sock.disconnected.connect(self._on_disconnected)

    def _on_disconnected(self) -> None:
        sock = self.sender()
        if isinstance(sock, QLocalSocket) and sock in self._clients:
            self._clients.discard(sock)
            sock.deleteLater()

    def _on_message(self) -> None:
        sock = self.sender()
        if not isinstance(sock, QLocalSocket) or not sock.canReadLine():
            return
        try:
            message = json.loads(bytes(sock.readLine().data()).decode("utf-8", "replace"))
        except ValueError:
            message = {}
        sock.write(b"ok\n")
        sock.flush()
        self.activated.emit(message if isinstance(message, dict) else {})

    def notify(self, message: dict[str, Any], wait_s: float = STARTUP_WAIT_S) -> bool:
        """Send `message` to the running instance; True once it answered."""
        if sys.platform == "win32" and self.other_pid:
            try:  # let the first instance take the foreground (Windows refuses it to background processes)
                import ctypes

                ctypes.windll.user32.AllowSetForegroundWindow(self.other_pid)  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - the window then flashes in the taskbar instead
                pass
        deadline = time.monotonic() + wait_s
        while True:
            sock = QLocalSocket()
            sock.connectToServer(self.name)
            if sock.waitForConnected(CONNECT_MS):
                sock.write(json.dumps({"activate": True, **message}).encode("utf-8") + b"\n")
                sock.flush()
                sock.waitForBytesWritten(CONNECT_MS)
                answered = sock.waitForReadyRead(ANSWER_MS) and bytes(sock.readAll().data()).startswith(b"ok")
                sock.disconnectFromServer()
                return answered
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)

    def hand_over(self, message: dict[str, Any], wait_s: float = STARTUP_WAIT_S) -> int:
        """The second launch's whole job: ask the first to come to the front; the exit code (0 when it did)."""
        if self.notify(message, wait_s):
            print("Bitsmith is already running: its window was brought to the front.", file=sys.stderr)
            return 0
        who = f" (process {self.other_pid})" if self.other_pid else ""
        text = (f"Bitsmith is already running{who} with the data folder {self.data_dir}, but it does not answer. "
                "Close it, or end that process if it hung, then start Bitsmith again.")
        print(text, file=sys.stderr)
        from PySide6.QtGui import QGuiApplication

        if QGuiApplication.instance() is not None and QGuiApplication.platformName() not in ("offscreen", "minimal"):
            from PySide6.QtWidgets import QMessageBox

            QMessageBox.warning(None, "Bitsmith", text)
        return 1

    def release(self) -> None:
        """Stop listening and drop the lock (the app is quitting)."""
        for sock in self._clients:  # drop connections before their server goes (no signals from dying sockets)
            sock.readyRead.disconnect(self._on_message)
            sock.disconnected.disconnect(self._on_disconnected)
            sock.abort()
            sock.deleteLater()
        self._clients.clear()
        if self.server is not None:
            self.server.close()
            self.server.deleteLater()
            self.server = None
        if self.lock is not None:
            self.lock.unlock()
            self.lock = None


def bring_to_front(window: QWidget, message: dict[str, Any] | None = None, pages: Iterable[str] = ()) -> None:
    """Show `window` un-minimized, raised and active; open the page (one of `pages`) a second launch named."""
    window.setWindowState((window.windowState() & ~Qt.WindowState.WindowMinimized) | Qt.WindowState.WindowActive)
    window.show()
    window.raise_()
    window.activateWindow()
    page = (message or {}).get("page")
    show_page = getattr(window, "show_page", None)
    if isinstance(page, str) and page in set(pages) and callable(show_page):
        show_page(page)
