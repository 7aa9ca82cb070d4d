"""One app per user and data folder: a second `python -m bitsmith.app` hands over to the first and exits; a lock
left by a crashed app does not block the next start; a holder that does not answer is named, not waited on."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from PySide6.QtCore import Qt

from bitsmith.app.single_instance import LOCK_FILE, SingleInstance, bring_to_front, server_name


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "BITSMITH_HOME": str(home), "QT_QPA_PLATFORM": "offscreen"}


def test_a_second_launch_brings_the_first_to_the_front_and_exits(qtbot, home: Path) -> None:  # noqa: ANN001
    first = SingleInstance(home)
    assert first.acquire() and first.lock_path.is_file() and first.server is not None
    try:
        with qtbot.waitSignal(first.activated, timeout=60_000) as got:
            second = subprocess.Popen([sys.executable, "-m", "bitsmith.app", "--page", "chat"], env=_env(home),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = second.communicate(timeout=60)
        assert second.returncode == 0, err
        assert "already running" in err and "front" in err
        assert got.args[0] == {"activate": True, "page": "chat"}
    finally:
        first.release()
    assert not first.lock_path.exists()


def test_bring_to_front_restores_a_minimized_window_and_opens_the_page(qtbot, open_window) -> None:  # noqa: ANN001
    from bitsmith.app.window import PAGES

    window = open_window("models")
    window.showMinimized()
    qtbot.waitUntil(lambda: window.isMinimized(), timeout=5000)
    bring_to_front(window, {"activate": True, "page": "chat"}, [name for name, _ in PAGES])
    assert not window.isMinimized() and window.isVisible() and window.current_page_name() == "chat"
    bring_to_front(window, {"page": "no-such-page"}, [name for name, _ in PAGES])  # ignored, no error
    assert window.current_page_name() == "chat"
    assert not window.windowState() & Qt.WindowState.WindowMinimized


_CRASH = textwrap.dedent("""
    import os, sys
    from PySide6.QtCore import QCoreApplication
    from bitsmith.app.single_instance import SingleInstance
    app = QCoreApplication([])
    guard = SingleInstance(sys.argv[1])
    print(guard.acquire(), guard.server is not None, flush=True)
    os._exit(9)  # no clean-up: the lock file (and on Unix the socket file) stay behind, as after a crash
""")


def test_a_stale_lock_from_a_crashed_app_does_not_block_the_start(home: Path) -> None:
    out = subprocess.run([sys.executable, "-c", _CRASH, str(home)], env=_env(home), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 9 and out.stdout.split() == ["True", "True"], out.stderr
    assert (home / LOCK_FILE).is_file()  # left behind by the dead process
    guard = SingleInstance(home)
    try:
        assert guard.acquire() and guard.server is not None and guard.server.isListening()
        assert guard.server.serverName() == server_name(home)
    finally:
        guard.release()


_HUNG = textwrap.dedent("""
    import sys, time
    from PySide6.QtCore import QLockFile
    lock = QLockFile(sys.argv[1])
    assert lock.tryLock(0)
    print("locked", flush=True)
    time.sleep(120)  # holds the lock, never answers
""")


def test_a_holder_that_does_not_answer_is_named_and_the_launch_gives_up(home: Path) -> None:
    home.mkdir(parents=True)
    hung = subprocess.Popen([sys.executable, "-c", _HUNG, str(home / LOCK_FILE)], stdout=subprocess.PIPE, text=True)
    try:
        assert hung.stdout.readline().strip() == "locked"
        guard = SingleInstance(home)
        assert not guard.acquire() and guard.other_pid == hung.pid
        started = time.monotonic()
        assert guard.hand_over({}, wait_s=0.5) == 1
        assert time.monotonic() - started < 10
    finally:
        hung.kill()
        hung.wait(30)


def test_each_user_and_data_folder_has_its_own_lock(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import getpass

    monkeypatch.setattr(getpass, "getuser", lambda: "alice")
    alice = server_name(tmp_path / "a")
    monkeypatch.setattr(getpass, "getuser", lambda: "bob")
    assert server_name(tmp_path / "a") != alice  # the same folder name for another user: another server
    monkeypatch.undo()
    a, b = SingleInstance(tmp_path / "a"), SingleInstance(tmp_path / "b")
    try:
        assert a.acquire() and b.acquire()  # two data folders: two apps may run
        assert a.name != b.name and a.name == server_name(tmp_path / "a")
        again = SingleInstance(tmp_path / "a")
        assert not again.acquire() and again.other_pid == os.getpid()
    finally:
        a.release()
        b.release()
