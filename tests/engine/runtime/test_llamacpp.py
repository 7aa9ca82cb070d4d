"""The llama.cpp backend: chat over a GGUF with its own template, and clear errors for bad files."""

import builtins
import random
from pathlib import Path

import numpy as np
import pytest

from bitsmith.engine.errors import BadInputError, UnsupportedModelError
from bitsmith.engine.runtime.llamacpp import LlamaCppBackend
from bitsmith.engine.runtime.params import SamplingParams
from bitsmith.engine.runtime.session import ChatSession

pytest.importorskip("llama_cpp")


@pytest.fixture(scope="module")
def backend(bundled_gguf: Path) -> LlamaCppBackend:
    return LlamaCppBackend(bundled_gguf, n_ctx=1024)


def test_renders_the_gguf_template_like_the_hf_tokenizer(backend: LlamaCppBackend, smollm_tok) -> None:
    tok = smollm_tok
    msgs = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": f"Count to {random.randint(2, 9)}"},
            {"role": "assistant", "content": "1 2"}, {"role": "user", "content": "Go on, please."}]
    assert backend.render(msgs) == tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True,
                                                           return_dict=False)
    assert backend.describe()["n_gpu_layers"] == 0 and backend.has_chat_template


@pytest.mark.slow
def test_chat_turns_reuse_the_prompt_and_end_at_end_of_turn(backend: LlamaCppBackend) -> None:
    s = ChatSession(backend, system="Answer in one short sentence.")
    first = s.ask("What color is the sky?", SamplingParams(temperature=0, max_tokens=40))
    assert first.strip() and s.last.reason in ("eos", "max_tokens")
    s.ask("Why?", SamplingParams(temperature=0, max_tokens=8))
    assert s.last.completion_tokens <= 8 and len(s.history()) == 5
    # the second answer is what a fresh model gives for the same conversation
    fresh = ChatSession(backend, system=s.system, messages=s.messages[:-2])
    backend.llm.reset()
    assert fresh.ask("Why?", SamplingParams(temperature=0, max_tokens=8)) == s.last.text


@pytest.mark.slow
def test_seeded_sampling_replays(backend: LlamaCppBackend) -> None:
    params = SamplingParams(temperature=1.0, seed=random.randrange(2**31), max_tokens=8)
    assert ChatSession(backend).ask("Hi!", params) == ChatSession(backend).ask("Hi!", params)


def test_a_file_that_is_not_gguf_or_is_damaged(tmp_path: Path, bundled_gguf: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(np.random.bytes(4096))
    with pytest.raises(BadInputError, match="not a GGUF file"):
        LlamaCppBackend(junk)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(bundled_gguf.read_bytes()[:-1000])  # an interrupted download
    with pytest.raises(BadInputError, match="truncated") as info:
        LlamaCppBackend(cut)
    assert "again" in info.value.hint
    with pytest.raises(BadInputError, match="does not exist"):
        LlamaCppBackend(tmp_path / "missing.gguf")
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(BadInputError, match="not a .gguf"):
        LlamaCppBackend(tmp_path / "model.bin")


def test_an_architecture_llama_cpp_does_not_know(tmp_path: Path) -> None:
    import gguf

    path = tmp_path / "odd.gguf"
    w = gguf.GGUFWriter(str(path), "frobnicator")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_tensor("token_embd.weight", np.zeros((8, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnsupportedModelError, match="cannot run architecture 'frobnicator'") as info:
        LlamaCppBackend(path)
    assert "--backend native" in info.value.hint


def test_a_missing_llama_cpp_install_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch, bundled_gguf: Path) -> None:
    real_import = builtins.__import__

    def no_llama(name: str, *args: object, **kwargs: object) -> object:
        if name == "llama_cpp":
            raise ImportError("No module named 'llama_cpp'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_llama)
    with pytest.raises(UnsupportedModelError, match="not installed") as info:
        LlamaCppBackend(bundled_gguf)
    assert "pip install llama-cpp-python" in info.value.hint and "--backend native" in info.value.hint


def test_a_context_beyond_the_model_limit(bundled_gguf: Path) -> None:
    with pytest.raises(BadInputError, match="8192"):
        LlamaCppBackend(bundled_gguf, n_ctx=100_000)


@pytest.mark.slow
def test_greedy_regenerate_replays(backend: LlamaCppBackend) -> None:
    """Asking the same thing again on a warm cache (what the app's Regenerate does) gives the same greedy answer."""
    params = SamplingParams(temperature=0, max_tokens=12)
    answers = {ChatSession(backend).ask("Name a colour.", params) for _ in range(3)}
    assert len(answers) == 1
