"""A model with channel-mix layers saves, reloads bit for bit, reports its bits and layout, and densifies."""

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from bitsmith.engine.calibrate.pipeline import quantize_model_rtn
from bitsmith.engine.errors import BadInputError
from bitsmith.engine.model import find_blocks
from bitsmith.engine.model_summary import summarize
from bitsmith.engine.quant.dense import dense_copy
from bitsmith.engine.quant.mix import format_layer_bits, parse_format
from bitsmith.engine.quant.mixed_linear import ChannelMixLinear, quant_modules
from bitsmith.engine.quant.store import (
    CHANNEL_MIX_VERSION,
    FORMAT_VERSION,
    STRATEGY_FILE,
    layout_from_strategy,
    load_quantized,
    model_bpw,
    round_kept_,
    save_quantized,
)


def _tokenizer() -> PreTrainedTokenizerFast:
    vocab = {f"t{i}": i for i in range(100)} | {"<unk>": 100}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def _model(mixed: bool) -> tuple[LlamaForCausalLM, dict]:
    torch.manual_seed(torch.seed() % 2**31)
    cfg = LlamaConfig(
        vocab_size=101, hidden_size=256, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True, attention_bias=True,
    )
    model = LlamaForCausalLM(cfg).eval()
    round_kept_(model)
    layout = {}
    for b in find_blocks(model):
        for name, lin in b.linears.items():
            k = lin.in_features
            fmt = "int4_g128" if name.endswith(("q_proj", "o_proj")) else "int2_g64"
            if mixed and name.endswith(("k_proj", "down_proj", "gate_proj")):
                mix = parse_format(f"int4_g128:128+int2_g64_dq8:{k - 128}")
                fmt = mix.with_perm(torch.randperm(k).tolist())
            layout[f"{b.name}.{name}"] = fmt
    quantize_model_rtn(model, layout, method="rtn")
    return model, layout


def test_channel_mix_model_round_trips_bit_exactly(tmp_path) -> None:
    model, layout = _model(mixed=True)
    mixes = {n: m for n, m in quant_modules(model).items() if isinstance(m, ChannelMixLinear)}
    assert len(mixes) == 6 and all(m.bias is None or m.bias.dtype == torch.float32 for m in mixes.values())
    assert mixes["model.layers.0.self_attn.k_proj"].bias is not None  # attention_bias: added once, by the mix
    ids = torch.randint(0, 101, (2, 19))
    with torch.no_grad():
        before = model(ids).logits
    out = save_quantized(model, _tokenizer(), tmp_path / "m", recipe={"mode": "channel-mix"})
    meta = json.loads((out / "bitsmith.json").read_text())
    assert meta["format_version"] == CHANNEL_MIX_VERSION and meta["layout_mode"] == "channel-mix"
    assert meta["layout"] == {n: parse_format(f).name for n, f in layout.items()}
    loaded = load_quantized(out)
    with torch.no_grad():
        after = loaded.model(ids).logits
    assert torch.equal(before, after)
    for name, mod in mixes.items():
        back = loaded.model.get_submodule(name)
        assert isinstance(back, ChannelMixLinear) and torch.equal(back.perm, mod.perm)
        assert back.perm.tolist() == list(layout[name].perm)
    # the bits: every layer counted exactly, the permutations included
    want = sum(format_layer_bits(f, *loaded.meta["shapes"][n]).total for n, f in meta["layout"].items())
    weights = sum(a * b for a, b in loaded.meta["shapes"].values())
    assert meta["bpw"]["quantized_linears"] == pytest.approx(want / weights)
    assert model_bpw(loaded.model)["quantized_linears"] == meta["bpw"]["quantized_linears"]
    # quant_strategy.json: GreenBitAI's channel-mix shape (bits / bits_prop lists), read back exactly
    strategy = json.loads((out / STRATEGY_FILE).read_text())
    entry = strategy["measurement"]["model.layers.1"]["down_proj"]
    assert entry["bits"] == [4, 2] and entry["channels"] == [128, 256]
    assert entry["bits_prop"] == [pytest.approx(1 / 3, abs=1e-6), pytest.approx(2 / 3, abs=1e-6)]
    assert entry["group_size"] == {"4": 128, "2": 64}
    assert layout_from_strategy(strategy, loaded.model) == meta["layout"]
    # the summary `bitsmith inspect` prints
    summary = summarize(out)
    assert summary["layout_mode"] == "channel-mix"
    assert summary["format_counts"]["int4_g128+int2_g64_dq8 (channel-mix)"] == 6
    row = next(r for r in summary["layers"] if r["name"] == "model.layers.1.mlp.down_proj")
    assert [p["inputs"] for p in row["parts"]] == [128, 256] and row["bpw"] == pytest.approx(
        format_layer_bits(row["format"], 256, 384).bpw)
    # the dense copy CPU chat uses computes the same function
    with torch.no_grad():
        dense = dense_copy(loaded.model)(ids).logits
    assert not any(isinstance(m, ChannelMixLinear) for m in dense_copy(loaded.model).modules())
    torch.testing.assert_close(dense, before, rtol=1e-4, atol=1e-4)


def test_inspect_shows_the_share_of_each_format(tmp_path, capsys) -> None:
    import argparse

    from bitsmith.engine.commands.inspect_model import _run

    model, _ = _model(mixed=True)
    out = save_quantized(model, _tokenizer(), tmp_path / "m")
    assert _run(argparse.Namespace(model=str(out), layers=True, json=False)) == 0
    text = capsys.readouterr().out
    assert "channel-mix: " in text and "int4_g128+int2_g64_dq8 (channel-mix)" in text
    assert "int4_g128 ×33% + int2_g64_dq8 ×67%" in text  # down_proj: 128 of 384 inputs in INT4


def test_a_layer_mix_folder_stays_format_2(tmp_path) -> None:
    model, _ = _model(mixed=False)
    out = save_quantized(model, _tokenizer(), tmp_path / "m")
    meta = json.loads((out / "bitsmith.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION == 2 and meta["layout_mode"] == "layer-mix"


def test_a_greenbit_channel_mix_entry_without_a_format_is_a_clear_error() -> None:
    model, _ = _model(mixed=False)
    theirs = {"measurement": {"model.layers.0": {"q_proj": {"bits": [4, 2], "bits_prop": [0.25, 0.75],
                                                             "group_size": {"4": 128, "2": 64}}}}}
    with pytest.raises(BadInputError, match="channel-mix"):
        layout_from_strategy(theirs, model)
