"""The main window: pages by keyboard, placeholders for pages not built yet, status bar, remembered geometry."""

from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from bitsmith.app.services import Services
from bitsmith.app.window import PAGES, PlaceholderPage, describe_gpu, load_page, page_class_name


@pytest.fixture
def _window(open_window):  # noqa: ANN001, ANN202
    return lambda _qtbot=None: open_window()


def test_ctrl_number_switches_pages_and_the_last_page_is_remembered(qtbot, _window, home: Path) -> None:
    window = _window(qtbot)
    assert window.current_page_name() == "chat"  # the default
    for i, (name, _label) in enumerate(PAGES):
        qtbot.keyClick(QApplication.focusWidget() or window, Qt.Key(Qt.Key.Key_1 + i),
                       Qt.KeyboardModifier.ControlModifier)
        assert window.current_page_name() == name
        assert window.stack.currentWidget() is window.pages[name]
        assert window.sidebar.currentRow() == i
    window.close()
    again = _window(qtbot)
    assert again.current_page_name() == PAGES[-1][0]
    again.close()


def test_missing_pages_show_a_placeholder_and_the_chat_page_is_real(qtbot, _window, home: Path) -> None:
    window = _window(qtbot)
    for name, label in PAGES:
        window.show_page(name)
        page = window.pages[name]
        expected = f"bitsmith.app.pages.{name}"
        import importlib.util

        if importlib.util.find_spec(expected) is None:
            assert isinstance(page, PlaceholderPage) and f"The {label} page is not built yet" in page.text
        else:
            assert type(page).__name__ == page_class_name(name)
    assert type(window.pages["chat"]).__name__ == "ChatPage"
    window.close()


def test_a_page_that_fails_to_build_shows_what_happened(qtbot, _window, home: Path, monkeypatch) -> None:  # noqa: ANN001
    import bitsmith.app.pages.chat as chat_module

    def broken(services):  # noqa: ANN001, ANN202
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(chat_module, "ChatPage", broken)
    page = load_page("chat", "Chat", Services())
    qtbot.addWidget(page)
    assert isinstance(page, PlaceholderPage) and "RuntimeError: disk on fire" in page.text and "Restart" in page.text


def test_the_status_bar_shows_the_detected_hardware_and_ram(qtbot, _window, home: Path) -> None:
    window = _window(qtbot)
    services = window.services
    assert window.gpu_label.text() == "Detecting hardware…"
    with qtbot.waitSignal(services.hardware.profile_changed, timeout=60_000) as got:
        services.hardware.start()
    expected, _tip = describe_gpu(got.args[0])
    assert window.gpu_label.text() == expected != "Detecting hardware…"
    qtbot.waitUntil(lambda: window.ram_label.text().startswith("RAM ") and "GB free" in window.ram_label.text())
    assert window.jobs_label.text() == "No jobs running"
    window.close()


def test_describe_gpu_for_nvidia_apple_and_cpu() -> None:
    gib = 2**30
    gpu = {"index": 0, "name": "NVIDIA GeForce RTX 4090", "free_bytes": 20 * gib, "total_bytes": 24 * gib}
    nvidia = {"gpus": [gpu]}
    assert describe_gpu(nvidia)[0] == "NVIDIA GeForce RTX 4090 · 20.0 / 24.0 GB free"
    apple = {"gpus": [], "apple": {"chip": "Apple M2", "unified_memory_bytes": 16 * gib, "mps_usable": True}}
    assert describe_gpu(apple)[0] == "Apple M2 · 16 GB unified · GPU (MPS)"
    cpu, tip = describe_gpu({"gpus": [], "apple": None, "nvidia_reason": "NVML unavailable"})
    assert cpu == "CPU only" and "NVML unavailable" in tip and "CPU" in tip


def test_geometry_is_remembered(qtbot, _window, home: Path) -> None:
    window = _window(qtbot)
    window.resize(780, 520)  # the offscreen screen is 800x600; restoring clamps to the screen
    window.close()
    again = _window(qtbot)
    assert (again.width(), again.height()) == (780, 520)
    again.close()


def test_the_app_starts_and_quits_from_the_command_line(home: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "bitsmith.app", "--exit-when-shown", "--page", "jobs"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("shown_at=")


_NO_TORCH = """
import sys
from PySide6.QtWidgets import QApplication
app = QApplication([])
from bitsmith.app.services import Services
from bitsmith.app.window import PAGES, MainWindow
w = MainWindow(Services())
for name, _ in PAGES:
    w.show_page(name)
w.show()
app.processEvents()
print(sorted(m for m in ("torch", "transformers", "triton", "llama_cpp") if m in sys.modules))
w.close()
"""


def test_the_window_and_every_page_load_without_torch(home: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _NO_TORCH], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_unfinished_downloads_are_offered_at_start(qtbot, _window, home: Path) -> None:
    import json

    first = _window(qtbot)
    assert not first.downloads_button.isVisible()  # nothing unfinished
    first.close()
    saved = [{"model": "acme/tiny-chat", "dest": str(home / "models" / "acme--tiny-chat"), "status": "downloading",
              "done_bytes": 1000, "total_bytes": 4000, "job_id": None, "error": None}]
    (home / "downloads.json").write_text(json.dumps({"downloads": saved}))
    window = _window(qtbot)
    assert window.current_page_name() != "models"
    assert window.downloads_button.isVisible() and window.downloads_button.text().startswith("1 unfinished download")
    qtbot.mouseClick(window.downloads_button, Qt.MouseButton.LeftButton)
    assert window.current_page_name() == "models" and not window.downloads_button.isVisible()
    panel = window.pages["models"].downloads_panel
    assert panel.isVisible() and panel.resume_all_button.isVisible()
    assert panel.table.item(0, 0).text() == "acme/tiny-chat" and panel.table.item(0, 1).text() == "Interrupted"
    window.close()


def test_settings_that_cannot_be_saved_are_said_in_the_status_bar(open_window, home, monkeypatch) -> None:  # noqa: ANN001
    from bitsmith.app import services as services_mod

    window = open_window("chat")

    def full(*_a, **_k) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(services_mod, "write_json_atomic", full)
    window.services.settings.set("chat/n_ctx", 4096)
    assert window.services.settings.get("chat/n_ctx") == 4096  # it applies for this session
    assert "Settings not saved" in window.statusBar().currentMessage()
    assert "No space left on device" in window.statusBar().currentMessage()
