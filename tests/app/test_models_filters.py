"""The Models page's Hub search filters by family and licence, driven through the combo boxes against the local
fake Hub (tests/engine/hub_server.py), and the rules that read a model's family from its name and tags."""

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from bitsmith.app.pages.model_filters import SearchFilter, family_of
from bitsmith.app.pages.models import ModelsPage
from bitsmith.app.services import Services

_spec = importlib.util.spec_from_file_location("bitsmith_app_test_hub_server_filters",
                                               Path(__file__).parents[1] / "engine" / "hub_server.py")
hub_server = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = hub_server
_spec.loader.exec_module(hub_server)
_spec = importlib.util.spec_from_file_location("bitsmith_app_fake_models_filters",
                                               Path(__file__).with_name("fake_models.py"))
fake_models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake_models)

# repo id: (licence, tags) — what the real Hub says about models of each family
REPOS = {
    "Qwen/Qwen2.5-0.5B-Instruct": ("apache-2.0", ["qwen2", "conversational"]),
    "meta-llama/Llama-3.2-1B-Instruct": ("llama3.2", ["llama", "facebook", "meta"]),
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("apache-2.0", ["llama"]),  # Llama-shaped, but SmolLM by name
    "microsoft/Phi-3-mini-4k-instruct": ("mit", ["phi3", "nlp"]),
    "google/gemma-2-2b-it": ("gemma", ["gemma2"]),
    "mistralai/Mistral-7B-Instruct-v0.3": ("apache-2.0", ["mistral"]),
    "cognitivecomputations/dolphin-2.9-llama3-8b": ("llama3", ["llama"]),  # "dolphin" holds "phi": not a Phi
    "someone/my-chat-model": ("apache-2.0", ["qwen2", "base_model:Qwen/Qwen2.5-7B"]),  # a Qwen fine-tune
    "acme/llama-chat": ("llama3.1", ["llama"]),
}


@pytest.fixture
def family_hub(tmp_path, monkeypatch):  # noqa: ANN001, ANN201
    import huggingface_hub.constants as hf_constants

    fake = hub_server.FakeHub()
    files = fake_models.llama_files(2, 256, 512, 4, 4, 1000)
    for i, (repo, (licence, tags)) in enumerate(REPOS.items()):
        fake.add(repo, files, downloads=1000 - i, license=licence, tags=tags)
    fake.start()
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    yield fake
    fake.stop()


def test_family_comes_from_the_name_then_the_base_model_then_the_architecture() -> None:
    assert family_of("Qwen/Qwen2.5-7B-Instruct") == "qwen" and family_of("Qwen/QwQ-32B") == "qwen"
    assert family_of("HuggingFaceTB/SmolLM2-1.7B-Instruct", ["llama"]) == "smollm"
    assert family_of("TinyLlama/TinyLlama-1.1B-Chat-v1.0") == "llama"
    assert family_of("microsoft/phi-2") == "phi" and family_of("microsoft/Phi-4-mini-instruct") == "phi"
    assert family_of("cognitivecomputations/dolphin-2.9-llama3-8b") == "llama"  # not "phi" inside "dolphin"
    assert family_of("mistralai/Mixtral-8x7B-Instruct-v0.1") == "mistral"
    assert family_of("google/gemma-3-1b-it") == "gemma"
    assert family_of("someone/assistant", ["base_model:finetune:google/gemma-2-9b"]) == "gemma"
    assert family_of("someone/assistant", ["text-generation", "phi3"]) == "phi"
    assert family_of("someone/assistant", ["qwen2_moe"]) == "qwen"
    assert family_of("someone/assistant", ["text-generation", "llama-factory"]) is None  # a tool, not an arch
    assert family_of("EleutherAI/pythia-70m", ["gpt_neox"]) is None


def test_search_filter_asks_the_hub_what_it_can_and_filters_the_rest() -> None:
    model = SimpleNamespace(id="someone/my-chat-model", tags=["qwen2"], license="Apache-2.0")
    assert SearchFilter().keeps(model) and SearchFilter("qwen", "open").keeps(model)
    assert not SearchFilter("llama").keeps(model) and not SearchFilter(licence="mit").keeps(model)
    assert not SearchFilter(licence="open").keeps(SimpleNamespace(id="a/b", tags=[], license=None))
    # No text: the family's name is the Hub's search text, and the Hub filters one licence itself.
    assert SearchFilter("qwen", "apache-2.0").hub_query(None) == "qwen"
    assert SearchFilter("qwen", "apache-2.0").hub_licence() == "apache-2.0"
    assert SearchFilter(licence="apache-2.0").fetch_limit(25) == 25 and SearchFilter().fetch_limit(25) == 25
    # A family or a licence group is applied here, so more results are fetched than shown.
    assert SearchFilter("qwen").hub_query("chat") == "chat" and SearchFilter("qwen").fetch_limit(25) == 100
    assert SearchFilter(licence="llama").hub_licence() is None and SearchFilter(licence="llama").fetch_limit(25) == 100
    assert SearchFilter().describe() == "" and SearchFilter("phi", "mit").describe() == "Phi models, licence: MIT"


def _page(qtbot, profile: dict) -> ModelsPage:  # noqa: ANN001
    services = Services()
    services.hardware.profile = profile
    page = ModelsPage(services)
    qtbot.addWidget(page)
    page.show()
    return page


def _choose(qtbot, page: ModelsPage, family: str | None = None, licence: str | None = None,  # noqa: ANN001
            text: str = "") -> list[str]:
    """Pick the filters in the combo boxes and type the text, then search at once; the ids shown."""
    page.search_edit.setText(text)
    page.family_combo.setCurrentIndex(page.family_combo.findData(family))
    page.licence_combo.setCurrentIndex(page.licence_combo.findData(licence))
    page.timer.stop()
    page.search()
    qtbot.waitUntil(lambda: not page.searching, timeout=60_000)
    return [page.hub_table.item(i, 0).text() for i in range(page.hub_table.rowCount())]


def _last_search(hub) -> dict:  # noqa: ANN001
    return [r for r in hub.log if r["path"] == "/api/models"][-1]["query"]


def test_family_and_licence_filters_narrow_the_hub_search(qtbot, home: Path, family_hub, gpu_profile) -> None:  # noqa: ANN001
    page = _page(qtbot, gpu_profile())
    assert page.family_combo.itemText(0) == "Any family" and page.licence_combo.itemText(0) == "Any licence"
    assert len(_choose(qtbot, page)) == len(REPOS)
    page.family_combo.setCurrentIndex(1)  # choosing a filter searches again (debounced), like typing
    assert page.timer.isActive()

    # A family with nothing typed: the Hub is searched for the family's name.
    assert _choose(qtbot, page, family="qwen") == ["Qwen/Qwen2.5-0.5B-Instruct"]
    assert _last_search(family_hub)["search"] == ["qwen"]
    assert _choose(qtbot, page, family="phi") == ["microsoft/Phi-3-mini-4k-instruct"]  # not the dolphin
    assert _choose(qtbot, page, family="llama") == ["meta-llama/Llama-3.2-1B-Instruct",
                                                      "cognitivecomputations/dolphin-2.9-llama3-8b", "acme/llama-chat"]
    assert "3 models (Llama models)" in page.search_status.text()
    # A family with typed text: the text goes to the Hub, the family is read from names and tags here.
    assert _choose(qtbot, page, family="qwen", text="chat") == ["someone/my-chat-model"]
    assert _last_search(family_hub)["search"] == ["chat"] and _last_search(family_hub)["limit"] == ["100"]

    # One licence: the Hub filters it; the table's licence column agrees.
    shown = _choose(qtbot, page, licence="apache-2.0")
    assert _last_search(family_hub)["filter"] == ["license:apache-2.0"]
    assert shown == [r for r, (lic, _t) in REPOS.items() if lic == "apache-2.0"]
    assert {page.hub_table.item(i, 4).text() for i in range(len(shown))} == {"apache-2.0"}
    # A licence group: fetched without a Hub filter, kept here.
    assert _choose(qtbot, page, licence="open") == [r for r, (lic, _t) in REPOS.items() if lic in ("apache-2.0", "mit")]
    assert "filter" not in _last_search(family_hub)
    assert _choose(qtbot, page, licence="llama") == ["meta-llama/Llama-3.2-1B-Instruct",
                                                     "cognitivecomputations/dolphin-2.9-llama3-8b", "acme/llama-chat"]
    # Both, and nothing matches: said in plain words, and each shown model still gets its fit badge.
    assert _choose(qtbot, page, family="smollm", licence="llama") == []
    assert page.search_status.text().startswith("No SmolLM models, licence: Llama community licence found.")
    assert _choose(qtbot, page, family="gemma", licence="gemma") == ["google/gemma-2-2b-it"]
    assert page.results[0].fit is not None and page.hub_table.item(0, 5).text().startswith("GPU")
