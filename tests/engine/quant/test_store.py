"""The saved folder reloads bit for bit, is written atomically, and reads GreenBitAI-style strategies."""

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from bitsmith.engine.errors import BadInputError
from bitsmith.engine.model import find_blocks
from bitsmith.engine.quant.linear import QuantLinear
from bitsmith.engine.quant.store import (
    STRATEGY_FILE,
    is_quantized_folder,
    layout_from_strategy,
    load_quantized,
    model_bpw,
    round_kept_,
    save_quantized,
    set_submodule,
)

FORMATS = ("int4_g128", "int2_g64", "int2_g64_dq8")


def _tokenizer() -> PreTrainedTokenizerFast:
    vocab = {f"t{i}": i for i in range(100)} | {"<unk>": 100}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def _quantized_model(tie: bool) -> LlamaForCausalLM:
    torch.manual_seed(torch.seed() % 2**31)
    cfg = LlamaConfig(
        vocab_size=101, hidden_size=96, intermediate_size=200, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=tie,
    )
    model = LlamaForCausalLM(cfg).eval()
    i = 0
    for block in find_blocks(model):
        for name, lin in block.linears.items():
            set_submodule(model, f"{block.name}.{name}", QuantLinear.from_linear(lin, FORMATS[i % 3], "hqq"))
            i += 1
    round_kept_(model)
    return model


@pytest.mark.parametrize("tie", [True, False])
def test_round_trip_is_bit_exact(tmp_path, tie: bool) -> None:
    model = _quantized_model(tie)
    ids = torch.randint(0, 101, (2, 17))
    with torch.no_grad():
        before = model(ids).logits
    out = save_quantized(model, _tokenizer(), tmp_path / "m", source={"id": "tiny"}, metrics={"ppl": 1.0})
    assert is_quantized_folder(out)
    assert not (out / "pytorch_model.bin").exists() and (out / "model.safetensors").is_file()
    loaded = load_quantized(out)
    with torch.no_grad():
        after = loaded.model(ids).logits
    assert torch.equal(before, after)
    assert loaded.meta["source"] == {"id": "tiny"} and loaded.meta["metrics"] == {"ppl": 1.0}
    assert loaded.meta["layout"] == {n: m.spec.name for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    if tie:
        assert loaded.model.lm_head.weight.data_ptr() == loaded.model.model.embed_tokens.weight.data_ptr()


def test_bpw_report_counts_quantized_and_kept(tmp_path) -> None:
    model = _quantized_model(tie=True)
    bpw = model_bpw(model)
    assert 2.0 < bpw["quantized_linears"] < 4.5
    assert "model.embed_tokens.weight" in bpw["kept_16bit"]
    assert "lm_head.weight" not in bpw["kept_16bit"]  # tied: counted once
    stored = sum(
        t.numel() * t.element_size() * 8 for m in model.modules() if isinstance(m, QuantLinear)
        for k, t in m.state_dict().items() if k != "bias"
    )
    assert bpw["quantized_linears"] == pytest.approx(stored / bpw["quantized_weights"])


def test_overwrite_is_atomic_and_keeps_nothing_half_written(tmp_path, monkeypatch) -> None:
    model = _quantized_model(tie=True)
    out = save_quantized(model, _tokenizer(), tmp_path / "m", metrics={"run": 1})
    import bitsmith.engine.quant.store as store

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", broken)
    with pytest.raises(store.DiskFullError, match="disk is full"):
        save_quantized(model, _tokenizer(), out, metrics={"run": 2})
    assert json.loads((out / "bitsmith.json").read_text())["metrics"] == {"run": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_greenbitai_style_strategy_is_understood(tmp_path) -> None:
    model = _quantized_model(tie=True)
    out = save_quantized(model, _tokenizer(), tmp_path / "m")
    ours = json.loads((out / STRATEGY_FILE).read_text())
    assert set(ours["measurement"]["model.layers.0"]) >= {"q_proj", "down_proj"}
    assert layout_from_strategy(ours, model) == {
        n: m.spec.name for n, m in model.named_modules() if isinstance(m, QuantLinear)
    }
    theirs = {"measurement": {"model.layers.1": {"q_proj": {"bits": [2], "bits_prop": [1], "group_size": {"2": 64}}}}}
    assert layout_from_strategy(theirs, model) == {"model.layers.1.self_attn.q_proj": "int2_g64"}


def test_not_a_bitsmith_folder_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(BadInputError, match="not a Bitsmith model folder"):
        load_quantized(tmp_path)
    model = _quantized_model(tie=True)
    out = save_quantized(model, _tokenizer(), tmp_path / "m")
    meta = json.loads((out / "bitsmith.json").read_text())
    meta["format_version"] = 99
    (out / "bitsmith.json").write_text(json.dumps(meta))
    with pytest.raises(BadInputError, match="newer Bitsmith"):
        load_quantized(out)
