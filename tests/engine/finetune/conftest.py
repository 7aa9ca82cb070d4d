"""Fixtures for the fine-tuning tests: a fixed BITSMITH_HOME (the bundled model is converted once and reused),
one CPU thread (the CI box is small and shared), fresh seeds, a tokenizer, and tiny quantized Llama models."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

HOME = Path(os.environ.get("BITSMITH_TEST_HOME", Path(tempfile.gettempdir()) / "bitsmith-finetune-tests"))


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BITSMITH_HOME", str(HOME))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    seed = torch.seed()
    print(f"torch seed: {seed} (replay with torch.manual_seed)")
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def bundled_folder() -> Path:
    """The bundled SmolLM2-135M-Instruct as a cached HF folder (converted from its GGUF once per machine)."""
    from bitsmith.engine.model import bundled_model_path, gguf_to_hf_folder

    old = os.environ.get("BITSMITH_HOME")
    os.environ["BITSMITH_HOME"] = str(HOME)
    try:
        return gguf_to_hf_folder(bundled_model_path())
    finally:
        if old is None:
            os.environ.pop("BITSMITH_HOME", None)
        else:
            os.environ["BITSMITH_HOME"] = old


@pytest.fixture(scope="session")
def tokenizer(bundled_folder: Path):  # noqa: ANN201 - a transformers tokenizer
    """SmolLM2's tokenizer (it has a chat template)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(bundled_folder)


def _tiny_llama(vocab: int = 96, layers: int = 2, specs: dict[str, str] | None = None, seed: int = 0,
               tie: bool = True):  # noqa: ANN201 - LlamaForCausalLM
    """A small random Llama whose block linears are QuantLinears (RTN), with mixed formats by linear name."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from bitsmith.engine.quant.linear import QuantLinear
    from bitsmith.engine.quant.store import set_submodule

    specs = specs or {"q_proj": "int2_g16", "k_proj": "int4_g32", "v_proj": "int4_g32", "o_proj": "int2_g16_zf",
                      "gate_proj": "int2_g16", "up_proj": "int4_g48_dq8", "down_proj": "int4_g48"}
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=112, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=tie, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    torch.random.set_rng_state(gen_state)
    for name, mod in list(model.named_modules()):
        if isinstance(mod, torch.nn.Linear) and ".layers." in f".{name}":
            set_submodule(model, name, QuantLinear.from_linear(mod, specs[name.rsplit(".", 1)[-1]]))
    return model.eval()


@pytest.fixture()
def tiny_folder(tmp_path: Path, tokenizer) -> Path:  # noqa: ANN001
    """A saved Bitsmith folder of a tiny quantized Llama with SmolLM2's tokenizer (fast to load and train)."""
    from bitsmith.engine.quant.store import round_kept_, save_quantized

    model = _tiny_llama(vocab=len(tokenizer), specs={"q_proj": "int2_g64", "k_proj": "int4_g32",
                                                    "v_proj": "int4_g32", "o_proj": "int2_g64",
                                                    "gate_proj": "int2_g16", "up_proj": "int4_g32",
                                                    "down_proj": "int4_g48"})
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    round_kept_(model)
    return save_quantized(model, tokenizer, tmp_path / "tiny-q", source={"model": "tiny"}, recipe={"method": "rtn"})


def _write_jsonl(path: Path, rows: list) -> Path:
    import json

    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def make_tiny():  # noqa: ANN201
    """tiny_llama(vocab=96, layers=2, specs=None, seed=0, tie=True): a small random Llama with QuantLinears."""
    return _tiny_llama


@pytest.fixture()
def write_jsonl():  # noqa: ANN201
    """write_jsonl(path, rows): rows are dicts, or raw strings for malformed lines."""
    return _write_jsonl
