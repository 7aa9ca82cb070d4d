"""The GGUF → HF-folder cache survives two processes converting the same file at once."""

from pathlib import Path

import pytest
import transformers

from bitsmith.engine import model as model_mod


class _Tok:
    def save_pretrained(self, folder: Path) -> None:
        (Path(folder) / "tokenizer.json").write_text("{}")


@pytest.fixture
def fake_gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BITSMITH_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: _Tok())
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: object())
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF")
    return path


def _writer(mine: str):
    def save(_model: object, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(mine)
    return save


def test_a_conversion_that_finishes_second_keeps_the_first_and_cleans_up(fake_gguf: Path, monkeypatch) -> None:
    def racing(model: object, folder: Path) -> None:
        _writer("second")(model, folder)
        final = folder.parent / folder.name.split(".")[0]  # the other process renames its copy in meanwhile
        _writer("first")(model, final)

    monkeypatch.setattr(model_mod, "_save_plain", racing)
    folder = model_mod.gguf_to_hf_folder(fake_gguf)
    assert (folder / "config.json").read_text() == "first"
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary folder left behind


def test_a_conversion_is_written_once_then_cached(fake_gguf: Path, monkeypatch) -> None:
    monkeypatch.setattr(model_mod, "_save_plain", _writer("mine"))
    folder = model_mod.gguf_to_hf_folder(fake_gguf)
    assert (folder / "config.json").read_text() == "mine" and (folder / "tokenizer.json").is_file()
    assert model_mod.gguf_to_hf_folder(fake_gguf) == folder  # cached: no second conversion
