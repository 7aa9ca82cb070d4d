"""The Models page: Hub search as you type against the local fake Hub (tests/engine/hub_server.py) with a fit
badge per result from the planner, offline mode, the local library with delete-with-confirmation, the details
pane of a result, and downloads run by real worker processes (pause, resume, cancel, surviving a restart)."""

import importlib.util
import json
import random
import socket
import sys
import threading
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from bitsmith.app.downloads import DOWNLOADS_FILE, RateMeter, read_downloads
from bitsmith.app.pages.model_format import human_bytes, human_eta, progress_text
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


# -- details pane and downloads -------------------------------------------------------------------------------

CHAT = "acme/tiny-chat"
GATED = "acme/gated-chat"
GGUF = "acme/gguf-chat"
GOOD_TOKEN = "hf_good_" + "x" * 20
CUT = 256 * 1024  # the fake Hub drops each transfer of the weights after this many bytes: the worker waits 1 s
# and resumes with a Range request, which keeps a download slow enough to pause it half-way


@pytest.fixture
def chat_files() -> dict[str, bytes]:
    files = llama_files(2, 256, 512, 4, 4, 1000)
    files["model.safetensors"] += random.Random(7).randbytes(3 * 2**20)  # header + weights: 3 MB to fetch
    files["tokenizer.json"] = json.dumps({"model": {"vocab": {f"t{i}": i for i in range(2000)}}}).encode()
    files["README.md"] = hub_server.TINY_README.encode()
    files["pytorch_model.bin"] = b"\0" * 5000  # a pickle copy of the weights: never downloaded
    return files


@pytest.fixture
def dl_hub(fake_hub, chat_files, tmp_path, monkeypatch):  # noqa: ANN001, ANN201
    """The fake Hub with downloadable repos, and worker processes (which inherit os.environ) pointed at it."""
    fake_hub.add(CHAT, chat_files, downloads=3, license="apache-2.0")
    fake_hub.add(GATED, {k: v for k, v in chat_files.items() if k != "pytorch_model.bin"}, gated="manual",
                 tokens={GOOD_TOKEN}, license="llama3", downloads=2)
    fake_hub.add(GGUF, {"config.json": chat_files["config.json"], "chat-q4.gguf": b"GGUF" + bytes(2000)}, downloads=1)
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr("bitsmith.app.pages.settings.keyring_backend", lambda: None)  # no token from this machine
    return fake_hub


def _search(qtbot, page: ModelsPage, text: str, n: int) -> None:  # noqa: ANN001
    page.search_edit.setText(text)
    page.search()
    qtbot.waitUntil(lambda: not page.searching and page.hub_table.rowCount() == n, timeout=60_000)


def _select(qtbot, page: ModelsPage, model_id: str) -> None:  # noqa: ANN001
    row = next(i for i, m in enumerate(page.results) if m.id == model_id)
    page.hub_table.selectRow(row)
    qtbot.waitUntil(lambda: page.details.model_id == model_id and not page.details.loading, timeout=30_000)


def _weights_bytes_on_disk(page: ModelsPage) -> int:
    staging = page.downloads.dest_for(CHAT).parent / f".{CHAT.replace('/', '--')}.partial"
    return sum(p.stat().st_size for p in staging.rglob("*.part"))


def _small_bytes(files: dict[str, bytes]) -> int:
    return sum(len(files[n]) for n in ("config.json", "tokenizer.json", "README.md"))


def _saved(home: Path) -> dict[str, str]:
    data = json.loads((home / DOWNLOADS_FILE).read_text())
    return {d["model"]: d["status"] for d in data["downloads"]}


def test_details_pane_shows_card_files_sizes_licence_and_fit(qtbot, home: Path, dl_hub, chat_files,  # noqa: ANN001
                                                              gpu_profile) -> None:
    page = _page(qtbot, gpu_profile())
    _search(qtbot, page, "chat", 3)
    _select(qtbot, page, CHAT)
    d = page.details
    assert d.title.text() == CHAT and d.error is None
    assert "A tiny Llama model with random weights" in d.summary.text() and "Usage" not in d.summary.text()
    facts = d.facts.text()
    result = next(m for m in page.results if m.id == CHAT)
    assert f"Parameters: <b>{result.params / 1e6:,.0f} M</b>" in facts and "Licence: <b>apache-2.0</b>" in facts
    assert "Gated: no" in facts
    total = sum(len(b) for b in chat_files.values())
    fetched = total - len(chat_files["pytorch_model.bin"])
    assert f"All files: <b>{human_bytes(total)}</b> in {len(chat_files)}" in facts
    assert f"Download: <b>{human_bytes(fetched)}</b> in {len(chat_files) - 1} files" in facts
    assert fit_badge(result.fit, result.fit_note)[0] in facts and result.fit is not None
    rows = {d.files.item(i, 0).text(): (d.files.item(i, 1).text(), d.files.item(i, 2).text())
            for i in range(d.files.rowCount())}
    assert rows["model.safetensors"] == (human_bytes(len(chat_files["model.safetensors"])), "✓")
    assert rows["pytorch_model.bin"] == (human_bytes(5000), "")  # a pickle: listed, not fetched
    assert d.download_button.isVisible() and d.download_button.isEnabled()
    assert not d.pause_button.isVisible() and not d.resume_button.isVisible() and not d.cancel_button.isVisible()
    # A GGUF-only repo: the pane says why it cannot be downloaded and offers no button.
    _select(qtbot, page, GGUF)
    assert "cannot download this model" in d.status.text() and "GGUF" in d.status.text()
    assert not d.download_button.isEnabled()


def test_a_stale_card_is_ignored_when_the_user_moved_on(qtbot, home: Path, dl_hub, monkeypatch) -> None:  # noqa: ANN001
    from PySide6.QtCore import QThreadPool

    from bitsmith.app import background
    from bitsmith.engine import hub

    pool = QThreadPool.globalInstance()
    threads = pool.maxThreadCount()
    pool.setMaxThreadCount(max(threads, 4))  # one pool thread is held below; the next card needs another
    real, release, calls = hub.model_card, threading.Event(), []

    def slow_for_gated(model_id, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(model_id)
        if model_id == GATED:
            release.wait(30)
        return real(model_id, *a, **k)

    monkeypatch.setattr(hub, "model_card", slow_for_gated)
    page = _page(qtbot)
    _search(qtbot, page, "chat", 3)
    page.hub_table.selectRow(next(i for i, m in enumerate(page.results) if m.id == GATED))
    qtbot.waitUntil(lambda: calls == [GATED], timeout=10_000)
    try:
        _select(qtbot, page, CHAT)  # answered while the first is still on its way
    finally:
        release.set()
    shown = page.details.info
    qtbot.waitUntil(lambda: not background._alive, timeout=30_000)  # the late answer for GATED was delivered
    pool.setMaxThreadCount(threads)
    assert calls == [GATED, CHAT]
    assert page.details.model_id == CHAT and page.details.info is shown and shown.card.id == CHAT
    assert page.details.title.text() == CHAT and "random weights" in page.details.summary.text()
    assert "Gated: no" in page.details.facts.text()


def test_card_errors_are_said_in_plain_words(qtbot, home: Path, dl_hub, monkeypatch) -> None:  # noqa: ANN001
    import huggingface_hub.constants as hf_constants

    page = _page(qtbot)
    _search(qtbot, page, "chat", 3)
    del dl_hub.repos[GGUF]  # gone from the Hub since the search
    _select(qtbot, page, GGUF)
    assert page.details.info is None and "not found on the Hub" in page.details.status.text()
    assert not page.details.download_button.isEnabled()
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    _select(qtbot, page, CHAT)
    assert "offline mode is on" in page.details.status.text() and "HF_HUB_OFFLINE" in page.details.status.text()
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    with socket.socket() as s:  # a port nobody listens on: the Hub is unreachable
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{s.getsockname()[1]}")
    _select(qtbot, page, GATED)
    assert "cannot reach the Hub" in page.details.status.text()
    assert "Traceback" not in page.details.status.text()


def test_gated_model_without_a_token_fails_in_plain_words_and_resumes_with_one(qtbot, home: Path, dl_hub,  # noqa: ANN001
                                                                               monkeypatch) -> None:
    page = _page(qtbot)
    _search(qtbot, page, "chat", 3)
    _select(qtbot, page, GATED)
    d = page.details
    assert "Gated: <b>yes</b>" in d.facts.text() and "no Hugging Face token is set" in d.status.text()
    qtbot.mouseClick(d.download_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.downloads.get(GATED) is not None and page.downloads.get(GATED).status == "failed",
                    timeout=60_000)
    entry = page.downloads.get(GATED)
    assert "is gated" in entry.error and "accept" in entry.error and "Traceback" not in entry.error
    assert entry.error in d.progress_label.text() and d.resume_button.isVisible()
    assert page.downloads_panel.isVisible() and "Failed" == page.downloads_panel.table.item(0, 1).text()
    assert _saved(home) == {GATED: "failed"}
    monkeypatch.setenv("HF_TOKEN", GOOD_TOKEN)  # the worker inherits it
    qtbot.mouseClick(d.resume_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.downloads.get(GATED) is None, timeout=60_000)
    assert "acme/gated-chat" in [m["name"] for m in page.library]
    assert _saved(home) == {}


def _chat_details_with_a_cut_download(qtbot, dl_hub, chat_files) -> tuple[ModelsPage, int]:  # noqa: ANN001
    """The chat model's details pane, its weights served in cut transfers (so a download can be caught half-way)."""
    dl_hub.cut_after("model.safetensors", CUT, times=100)
    small = _small_bytes(chat_files)
    page = _page(qtbot)
    _search(qtbot, page, "chat", 3)
    _select(qtbot, page, CHAT)
    return page, small


@pytest.mark.slow
def test_download_pauses_resumes_and_survives_a_restart(qtbot, home: Path, dl_hub, chat_files) -> None:  # noqa: ANN001
    page, small = _chat_details_with_a_cut_download(qtbot, dl_hub, chat_files)
    d = page.details
    qtbot.mouseClick(d.download_button, Qt.MouseButton.LeftButton)
    entry = page.downloads.get(CHAT)
    assert entry is not None and entry.running and _saved(home) == {CHAT: "downloading"}
    qtbot.waitUntil(lambda: entry.done_bytes >= small + CUT, timeout=60_000)
    assert d.pause_button.isVisible() and d.cancel_button.isVisible() and not d.download_button.isVisible()
    assert "Downloading: " in d.progress_label.text() and " of " in d.progress_label.text()
    assert 0 < d.progress.value() < 1000 and entry.total_bytes == sum(
        len(b) for n, b in chat_files.items() if n != "pytorch_model.bin")

    qtbot.mouseClick(d.pause_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: entry.status == "paused" and not entry.running, timeout=30_000)
    kept = _weights_bytes_on_disk(page)
    assert kept >= CUT and _saved(home) == {CHAT: "paused"}
    assert not page.downloads.dest_for(CHAT).exists()  # never a half model in the library
    assert d.resume_button.isVisible() and not d.pause_button.isVisible() and "Paused" in d.progress_label.text()

    gets_before = len(dl_hub.requests("GET", "model.safetensors"))
    qtbot.mouseClick(d.resume_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: entry.running and _weights_bytes_on_disk(page) > kept + CUT // 2, timeout=60_000)
    resumed = dl_hub.requests("GET", "model.safetensors")[gets_before]
    assert resumed["range"] == f"bytes={kept}-"  # picked up where the pause left it
    page.shutdown()  # the window closes mid-download
    page.services.shutdown()
    assert _saved(home) == {CHAT: "downloading"}
    assert [x.status for x in read_downloads(home)] == ["interrupted"]

    dl_hub.clear_knobs()
    kept = _weights_bytes_on_disk(page)
    again = _page(qtbot)  # the next start
    panel = again.downloads_panel
    assert panel.isVisible() and panel.resume_all_button.isVisible() and "interrupted" in panel.notice.text()
    assert panel.table.item(0, 0).text() == CHAT and panel.table.item(0, 1).text() == "Interrupted"
    assert CHAT not in [m["name"] for m in again.library]
    gets_before = len(dl_hub.requests("GET", "model.safetensors"))
    qtbot.mouseClick(panel.resume_all_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: again.downloads.get(CHAT) is None, timeout=60_000)
    assert dl_hub.requests("GET", "model.safetensors")[gets_before]["range"] == f"bytes={kept}-"
    dest = again.downloads.dest_for(CHAT)
    for name, data in chat_files.items():
        assert name == "pytorch_model.bin" or (dest / name).read_bytes() == data
    assert not (dest / "pytorch_model.bin").exists()
    assert CHAT in [m["name"] for m in again.library] and not panel.isVisible() and _saved(home) == {}
    assert not (dest.parent / f".{dest.name}.partial").exists()


@pytest.mark.slow
def test_cancel_asks_then_deletes_the_partial_files(qtbot, home: Path, dl_hub, chat_files, monkeypatch) -> None:  # noqa: ANN001
    page, small = _chat_details_with_a_cut_download(qtbot, dl_hub, chat_files)
    d = page.details
    staging = page.downloads.dest_for(CHAT).parent / f".{CHAT.replace('/', '--')}.partial"
    asked: list[str] = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or QMessageBox.StandardButton.No)
    # Running: "No" keeps it going; "Yes" stops the job and deletes what it fetched.
    qtbot.mouseClick(d.download_button, Qt.MouseButton.LeftButton)
    entry = page.downloads.get(CHAT)
    qtbot.waitUntil(lambda: entry.done_bytes >= small + CUT, timeout=60_000)
    qtbot.mouseClick(d.cancel_button, Qt.MouseButton.LeftButton)
    assert CHAT in asked[0] and "delete" in asked[0] and entry.running and entry.stop_reason is None
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    qtbot.mouseClick(d.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.downloads.get(CHAT) is None, timeout=30_000)
    assert not staging.exists() and not page.downloads.dest_for(CHAT).exists() and _saved(home) == {}
    assert d.download_button.isVisible() and not d.progress.isVisible() and not page.downloads_panel.isVisible()
    # Paused (no job running): Cancel deletes at once.
    qtbot.mouseClick(d.download_button, Qt.MouseButton.LeftButton)
    entry = page.downloads.get(CHAT)
    qtbot.waitUntil(lambda: entry.done_bytes >= small + CUT, timeout=60_000)
    page.downloads.pause(CHAT)
    qtbot.waitUntil(lambda: entry.status == "paused", timeout=30_000)
    assert staging.exists()
    qtbot.mouseClick(page.downloads_panel.cancel_button, Qt.MouseButton.LeftButton)
    assert page.downloads.get(CHAT) is None and not staging.exists() and _saved(home) == {}


def test_rate_meter_and_progress_text() -> None:
    now = [0.0]
    meter = RateMeter(window_s=5.0, clock=lambda: now[0])
    assert meter.add(0) is None
    now[0] = 1.0
    assert meter.add(2 * 2**20) == pytest.approx(2 * 2**20)
    for t in range(2, 12):  # the rate halves: the meter follows within its window
        now[0] = float(t)
        speed = meter.add(2 * 2**20 + (t - 1) * 2**20)
    assert speed == pytest.approx(2**20)
    now[0] = 13.0
    assert meter.add(100) is None  # started over: no rate from the old samples
    text = progress_text(512 * 2**20, 2**31, 25.3 * 2**20, 42)
    assert text == "512 MB of 2.0 GB (25 %) · 25.3 MB/s · about 42 s left"
    assert progress_text(3 * 2**20, None) == "3 MB"
    assert human_eta(3 * 3600 + 125) == "about 3 h 2 min left" and human_eta(None) == ""


def test_a_download_list_that_cannot_be_saved_is_said_on_the_page(qtbot, monkeypatch) -> None:  # noqa: ANN001
    from bitsmith.app import downloads as downloads_mod

    page = _page(qtbot)

    def full(*_a, **_k) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(downloads_mod, "write_json_atomic", full)
    page.downloads._save()
    assert page.banner.isVisible() and "Your downloads continue" in page.banner.text()
    assert "No space left on device" in page.banner.text() and page.downloads.write_error


# -- a paused download and the models folder moved (Settings page) --------------------------------------------

def _paused_half_way(qtbot, home: Path, dl_hub, chat_files):  # noqa: ANN001, ANN202
    """The chat model's download paused with part of its weights on disk; (page, entry, bytes kept)."""
    page, small = _chat_details_with_a_cut_download(qtbot, dl_hub, chat_files)
    qtbot.mouseClick(page.details.download_button, Qt.MouseButton.LeftButton)
    entry = page.downloads.get(CHAT)
    qtbot.waitUntil(lambda: entry.done_bytes >= small + CUT, timeout=60_000)
    qtbot.mouseClick(page.details.pause_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: entry.status == "paused" and not entry.running, timeout=30_000)
    kept = _weights_bytes_on_disk(page)
    assert kept >= CUT and entry.dest == str(home / "models" / "acme--tiny-chat")
    return page, entry, kept


def _settings_page(qtbot, page: ModelsPage, monkeypatch, answer: str):  # noqa: ANN001, ANN202
    import bitsmith.app.pages.settings as settings_module

    asked: list[tuple[str, str]] = []
    monkeypatch.setattr(settings_module, "ask_choice", lambda _p, _t, text, details, *_a: asked.append(
        (text, details)) or answer)
    settings = settings_module.SettingsPage(page.services)  # the same services: the same download list
    qtbot.addWidget(settings)
    return settings, asked


def _finish_in(qtbot, page: ModelsPage, dl_hub, chat_files, new: Path, kept: int) -> Path:  # noqa: ANN001
    """Resume from the Downloads list and check it continued from `kept` bytes into the new folder."""
    dl_hub.clear_knobs()
    gets_before = len(dl_hub.requests("GET", "model.safetensors"))
    qtbot.mouseClick(page.downloads_panel.resume_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.downloads.get(CHAT) is None, timeout=60_000)
    assert dl_hub.requests("GET", "model.safetensors")[gets_before]["range"] == f"bytes={kept}-"
    job = [j for j in page.services.jobs.jobs if j.kind == "download"][-1]
    dest = new.resolve() / "acme--tiny-chat"
    assert job.params["dest"] == str(dest)
    for name, data in chat_files.items():
        assert name == "pytorch_model.bin" or (dest / name).read_bytes() == data
    assert [m["path"] for m in page.library if m["name"] == CHAT] == [dest]
    assert not (dest.parent / ".acme--tiny-chat.partial").exists()
    return dest


@pytest.mark.slow
def test_a_paused_download_moves_with_the_models_folder_and_resumes_there(qtbot, home: Path, tmp_path: Path,  # noqa: ANN001
                                                                          dl_hub, chat_files, monkeypatch) -> None:
    page, entry, kept = _paused_half_way(qtbot, home, dl_hub, chat_files)
    old = home / "models"
    settings, asked = _settings_page(qtbot, page, monkeypatch, "Move")
    new = tmp_path / "disk2" / "models"
    settings.set_models_dir(str(new))
    qtbot.waitUntil(lambda: not settings.moving, timeout=10_000)
    assert "1 paused download(s) move too" in asked[0][1]
    assert page.services.models_dir() == new.resolve()
    assert (new / ".acme--tiny-chat.partial").is_dir() and not (old / ".acme--tiny-chat.partial").exists()
    assert entry.dest == str(new.resolve() / "acme--tiny-chat")
    assert json.loads((home / DOWNLOADS_FILE).read_text())["downloads"][0]["dest"] == entry.dest  # across restarts
    assert _weights_bytes_on_disk(page) == kept
    dest = _finish_in(qtbot, page, dl_hub, chat_files, new, kept)
    assert not (old / "acme--tiny-chat").exists() and sorted(p.name for p in old.iterdir()) in ([], [
        ".acme--tiny-chat.lock"])
    assert dest.is_dir()


@pytest.mark.slow
def test_a_paused_download_left_in_the_old_folder_moves_over_when_resumed(qtbot, home: Path, tmp_path: Path,  # noqa: ANN001
                                                                          dl_hub, chat_files, monkeypatch) -> None:
    import errno

    import bitsmith.app.move_models as mm
    from bitsmith.app.pages.model_downloads import status_text

    page, entry, kept = _paused_half_way(qtbot, home, dl_hub, chat_files)
    old = home / "models"
    settings, _asked = _settings_page(qtbot, page, monkeypatch, "Keep them there")
    new = tmp_path / "usb" / "models"
    settings.set_models_dir(str(new))
    assert page.services.models_dir() == new.resolve() and (old / ".acme--tiny-chat.partial").is_dir()

    def cross_device(src, dst):  # noqa: ANN001, ANN202
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(mm.os, "rename", cross_device)  # another disk: the partial files are copied over
    seen: list[str] = []
    page.downloads.changed.connect(lambda _id: seen.append(status_text(entry)))
    _finish_in(qtbot, page, dl_hub, chat_files, new, kept)
    assert "Moving to the new folder…" in seen and seen.index("Moving to the new folder…") < seen.index("Downloading")
    assert not (old / ".acme--tiny-chat.partial").exists() and not (old / "acme--tiny-chat").exists()
