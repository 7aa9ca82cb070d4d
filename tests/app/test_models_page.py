"""The Models page: Hub search as you type against the local fake Hub (tests/engine/hub_server.py) with a fit
badge per result from the planner, offline mode, and the local library with delete-with-confirmation."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from bitsmith.app.pages.models import ModelsPage, fit_badge
from bitsmith.app.services import Services

_spec = importlib.util.spec_from_file_location("bitsmith_app_test_hub_server",
                                               Path(__file__).parents[1] / "engine" / "hub_server.py")
hub_server = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = hub_server
_spec.loader.exec_module(hub_server)
_spec = importlib.util.spec_from_file_location("bitsmith_app_fake_models", Path(__file__).with_name("fake_models.py"))
fake_models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake_models)
SHAPES, llama_files = fake_models.SHAPES, fake_models.llama_files

@pytest.fixture
def fake_hub(tmp_path, monkeypatch):  # noqa: ANN001, ANN201
    import huggingface_hub.constants as hf_constants

    fake = hub_server.FakeHub()
    for i, (repo, shape) in enumerate(SHAPES.items()):
        fake.add(repo, llama_files(*shape), downloads=1000 - i, tags=["llama"])
    fake.add("other/mistral-like", llama_files(2, 256, 512, 4, 4, 1000), downloads=5)
    fake.start()
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    yield fake
    fake.stop()


def _page(qtbot, profile: dict | None = None) -> ModelsPage:  # noqa: ANN001
    services = Services()
    services.hardware.profile = profile
    page = ModelsPage(services)
    qtbot.addWidget(page)
    page.show()
    return page


def test_search_as_you_type_shows_a_fit_badge_per_result(qtbot, home: Path, fake_hub, gpu_profile) -> None:  # noqa: ANN001
    from bitsmith.engine.hardware import HardwareProfile
    from bitsmith.engine.modelinfo import ModelInfo
    from bitsmith.engine.plan import plan_model

    profile = gpu_profile()
    page = _page(qtbot, profile)
    assert not page.banner.isVisible() and page.search_edit.isEnabled()
    page.budget_spin.setValue(2.5)
    qtbot.keyClicks(page.search_edit, "llama")
    assert page.timer.isActive()  # debounced: one search after typing stops
    qtbot.waitUntil(lambda: page.hub_table.rowCount() == 2 and not page.searching, timeout=60_000)
    searches = [r for r in fake_hub.log if r["path"] == "/api/models"]
    assert len(searches) == 1, searches
    ids = [page.hub_table.item(i, 0).text() for i in range(2)]
    assert ids == ["acme/llama-8b-instruct", "acme/llama-70b-instruct"]
    hw = HardwareProfile.from_dict(profile)
    for i, repo in enumerate(ids):
        files = llama_files(*SHAPES[repo])
        header = json.loads(files["model.safetensors"][8:])
        info = ModelInfo.from_config(json.loads(files["config.json"]),
                                     {k: (v["shape"], v["dtype"]) for k, v in header.items()}, repo)
        chat = plan_model(info, 2.5, hw).stages["chat"]
        assert page.results[i].fit.verdict == chat.verdict
        assert page.hub_table.item(i, 5).text() == fit_badge(page.results[i].fit)[0]
    assert page.hub_table.item(0, 5).text().startswith("GPU ✓")  # 8B at 2.5 bpw fits an 8 GB card
    assert not page.hub_table.item(1, 5).text().startswith("GPU")  # 70B does not
    assert page.hub_table.item(0, 1).text() == "8.0 B"
    # The budget is part of the search: at 16 bits the 8B model no longer fits the GPU.
    page.budget_spin.setValue(16.0)
    qtbot.waitUntil(lambda: not page.searching and page.results and page.results[0].fit.bpw == 16.0, timeout=60_000)
    assert not page.hub_table.item(0, 5).text().startswith("GPU")


def test_offline_mode_says_so_and_keeps_the_library(qtbot, home: Path, monkeypatch) -> None:  # noqa: ANN001
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    models = home / "models"
    models.mkdir(parents=True)
    (models / "demo.gguf").write_bytes(b"GGUF" + bytes(2 * 2**20))
    page = _page(qtbot)
    assert page.banner.isVisible() and "Offline" in page.banner.text()
    assert not page.search_edit.isEnabled()
    assert page.lib_table.rowCount() == 1 and page.lib_table.item(0, 0).text() == "demo.gguf"
    assert page.lib_table.item(0, 2).text() == "2 MB"


def test_library_lists_models_and_deletes_only_after_confirmation(qtbot, home: Path, monkeypatch) -> None:  # noqa: ANN001
    models = home / "models"
    hf = models / "acme--tiny"
    hf.mkdir(parents=True)
    (hf / "config.json").write_text("{}")
    (models / "a.gguf").write_bytes(b"GGUF" + bytes(1000))
    (models / ".half-done.partial").mkdir()
    page = _page(qtbot)
    names = [page.lib_table.item(i, 0).text() for i in range(page.lib_table.rowCount())]
    assert names == ["a.gguf", "acme/tiny"]
    assert not page.delete_button.isEnabled()
    page.lib_table.selectRow(0)
    asked: list[str] = []
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: asked.append(a[2]) or QMessageBox.StandardButton.No)
    qtbot.mouseClick(page.delete_button, Qt.MouseButton.LeftButton)
    assert "a.gguf" in asked[0] and (models / "a.gguf").exists()
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    qtbot.mouseClick(page.delete_button, Qt.MouseButton.LeftButton)
    assert not (models / "a.gguf").exists() and page.lib_table.rowCount() == 1
    opened: list[str] = []
    monkeypatch.setattr("bitsmith.app.pages.models.QDesktopServices.openUrl",
                        lambda url: opened.append(url.toLocalFile()))
    page.lib_table.selectRow(0)
    qtbot.mouseClick(page.open_button, Qt.MouseButton.LeftButton)
    assert Path(opened[0]) == hf
