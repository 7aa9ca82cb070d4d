"""Streaming mode: blocks read from sharded safetensors one at a time give what the fully loaded model gives."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from bitsmith.engine.errors import BadInputError, UnsupportedModelError
from bitsmith.engine.eval.perplexity import perplexity
from bitsmith.engine.model import _save_plain, load_model
from bitsmith.engine.quant.store import round_kept_


def _tiny_folder(dest: Path, tie: bool = True, plain: bool = False) -> Path:
    """A random tiny Llama saved as two safetensors shards with an index (`plain`: one file written as the GGUF
    cache writes it, which keeps only `lm_head.weight` of the tied pair), and a byte-level BPE tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([Path(__file__).read_text()], trainer)  # this file: fast, and any text will do
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(dest)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=320, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=tie,
    )
    model = LlamaForCausalLM(cfg)
    if plain:
        _save_plain(model, dest)
        return dest
    total = sum(p.numel() for p in model.parameters()) * 4
    model.save_pretrained(dest, max_shard_size=int(total * 0.6))
    assert len(list(dest.glob("*.safetensors"))) == 2 and (dest / "model.safetensors.index.json").is_file()
    return dest


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    return _tiny_folder(tmp_path_factory.mktemp("sharded"))


def _reference(folder: Path) -> nn.Module:
    model, _ = load_model(str(folder))
    round_kept_(model)
    return model


@pytest.mark.parametrize("tie, plain", [(True, False), (False, False), (True, True)])
def test_streamed_logits_equal_a_full_load(tmp_path: Path, tie: bool, plain: bool) -> None:
    from safetensors import safe_open

    from bitsmith.engine.model_stream import open_streamed
    from bitsmith.engine.stream_forward import streamed_logits

    torch.set_num_threads(1)
    folder = _tiny_folder(tmp_path / "m", tie=tie, plain=plain)
    if plain:  # the embedding is stored only under lm_head's name, as in the bundled model's cached folder
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            assert "lm_head.weight" in f.keys() and "model.embed_tokens.weight" not in f.keys()
    streamed = open_streamed(str(folder))
    model = streamed.model
    assert all(p.is_meta for b in streamed.blocks for p in b.module.parameters())
    assert not model.get_input_embeddings().weight.is_meta and not model.lm_head.weight.is_meta
    assert (model.lm_head.weight is model.get_input_embeddings().weight) == tie
    assert not any(b.is_meta for b in model.buffers())  # rotary inv_freq is real
    ids = torch.randint(0, model.config.vocab_size, (3, 40), generator=torch.Generator().manual_seed(0))
    expected = _reference(folder)(ids).logits
    torch.testing.assert_close(streamed_logits(streamed, ids), expected, rtol=1e-5, atol=1e-5)
    assert streamed.loads == len(streamed.blocks) and streamed.peak_full_precision == 1
    assert streamed.full_precision_blocks() == 0  # every block went back to meta


def test_streamed_perplexity_and_measurement_equal_the_full_model(sharded: Path) -> None:
    """Several passes (a budget of two windows) still give the same windows, scores and Fisher table."""
    from bitsmith.engine.model_stream import open_streamed
    from bitsmith.engine.search.measure import measure_model
    from bitsmith.engine.search.measure_stream import measure_streamed
    from bitsmith.engine.stream_forward import streamed_perplexity

    torch.set_num_threads(1)
    ref = _reference(sharded)
    streamed = open_streamed(str(sharded))
    hidden = ref.config.hidden_size
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, ref.config.vocab_size, (300,), generator=gen)
    want = perplexity(ref, tokens, 64, 48)
    got = streamed_perplexity(streamed, tokens, 64, 48, budget=2 * 64 * hidden * 4)
    assert (got.windows, got.tokens, got.window, got.stride) == (want.windows, want.tokens, 64, 48)
    assert got.nll == pytest.approx(want.nll, rel=1e-6)

    windows = torch.randint(0, ref.config.vocab_size, (5, 32), generator=gen).tolist()
    formats = ("int4_g128", "int2_g64")
    a = measure_model(ref, windows, formats, "rtn")
    before = streamed.loads
    per_window = (len(streamed.blocks) + 2) * 32 * hidden * 4
    b = measure_streamed(streamed, windows, formats, "rtn", budget=2 * per_window)
    assert streamed.loads - before == 3 * 2 * len(streamed.blocks)  # 3 passes, each forward + backward
    assert [m.name for m in b.layers] == [m.name for m in a.layers] and len(a.layers) == 2 * 7
    for x, y in zip(a.layers, b.layers):
        assert x.bits == y.bits and (x.out_features, x.in_features) == (y.out_features, y.in_features)
        for f in formats:
            assert y.errors[f] == pytest.approx(x.errors[f], rel=1e-4)
            assert y.group_errors[f] == pytest.approx(x.group_errors[f], rel=1e-4, abs=1e-12)
    assert (b.samples, b.seq_len, b.signal, b.unit) == (a.samples, a.seq_len, a.signal, a.unit)
    assert streamed.peak_full_precision == 1 and streamed.full_precision_blocks() == 0
    assert all(p.requires_grad and p.grad is None for p in streamed.model.parameters())


def test_streamed_calibration_resumes_a_normal_run_exactly(sharded: Path, tmp_path: Path) -> None:
    """A calibration cancelled after block 0 on the fully loaded model resumes on the streamed one (same
    fingerprint) and ends with the very tensors of an uninterrupted normal run."""
    from bitsmith.engine.calibrate import CalibConfig, calibrate_model
    from bitsmith.engine.errors import CancelledError
    from bitsmith.engine.model import find_blocks
    from bitsmith.engine.model_stream import open_streamed

    torch.set_num_threads(1)
    config = CalibConfig(iters=4, batch_size=4, samples=4, seq_len=32)
    ids = torch.randint(0, 320, (4, 32), generator=torch.Generator().manual_seed(2))
    full = _reference(sharded)
    layout = {f"{b.name}.{n}": ("int4_g128", "int2_g64")[i % 2]
              for b in find_blocks(full) for i, n in enumerate(b.linears)}
    torch.manual_seed(0)
    calibrate_model(full, ids, layout, config)
    expected = full.state_dict()

    def cancel_after_first_block() -> None:
        if (tmp_path / "progress.json").is_file():
            raise CancelledError("cancelled by the test")

    torch.manual_seed(0)
    with pytest.raises(CancelledError):
        calibrate_model(_reference(sharded), ids, layout, config, tmp_path, check_cancel=cancel_after_first_block)
    streamed = open_streamed(str(sharded))
    torch.manual_seed(0)
    summary = calibrate_model(streamed.model, ids, layout, config, tmp_path,
                              materialise=lambda i: streamed.materialise(i, keep=True))
    assert [r.resumed for r in summary.blocks] == [True, False]
    assert streamed.is_complete() and streamed.peak_full_precision == 1 and streamed.full_precision_blocks() == 0
    # the full-precision linears that QuantLinears replaced are freed, though the layout still names their modules
    norms = sum(p.numel() * 4 for b in streamed.blocks for n, p in b.module.named_parameters() if "norm" in n)
    assert streamed.held_bytes() == norms
    got = streamed.model.state_dict()
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def _quantize(source: Path, home: Path, out: Path, stream: bool | None, monkeypatch) -> tuple[list[dict], list]:
    from bitsmith.engine import model_stream
    from bitsmith.engine.jobs import JobContext
    from bitsmith.engine.pipeline.quantize import run_quantize

    monkeypatch.setenv("BITSMITH_HOME", str(home))
    opened = []
    real_open = model_stream.open_streamed

    def spy(*args, **kwargs):
        streamed = real_open(*args, **kwargs)
        opened.append(streamed)
        counts: list[int] = []
        streamed.counts = counts
        for b in streamed.blocks:  # an independent count at every block call, besides the materialiser's own
            b.module.register_forward_pre_hook(lambda m, a: counts.append(streamed.full_precision_blocks()))
        return streamed

    monkeypatch.setattr(model_stream, "open_streamed", spy)
    events: list[dict] = []
    params = {"source": str(source), "bpw": 3.0, "out": str(out), "preset": "demo", "stream": stream}
    run_quantize(JobContext(events.append, home), params)
    return events, opened


@pytest.mark.slow
def test_streamed_quantize_matches_the_normal_path(sharded: Path, tmp_path: Path, monkeypatch) -> None:
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    normal_events, none = _quantize(sharded, tmp_path / "h1", tmp_path / "q1", None, monkeypatch)
    assert none == []  # a model that fits is loaded whole, as before
    events, (streamed,) = _quantize(sharded, tmp_path / "h2", tmp_path / "q2", True, monkeypatch)
    assert any(e["event"] == "log" and "streaming" in e["message"] for e in events)
    meta1 = json.loads((tmp_path / "q1" / "bitsmith.json").read_text())
    meta2 = json.loads((tmp_path / "q2" / "bitsmith.json").read_text())
    assert meta2["layout"] == meta1["layout"] and set(meta1["layout"].values()) == {"int4_g128", "int2_g64"}
    assert meta2["bpw"] == meta1["bpw"]
    for key in ("heldout_ppl_fp", "heldout_ppl", "predicted_ppl"):
        assert meta2["metrics"][key] == pytest.approx(meta1["metrics"][key], rel=1e-6), key
    # same layout, same calibration code on the same (16-bit rounded) weights: the very same tensors
    w1, w2 = load_file(tmp_path / "q1" / "model.safetensors"), load_file(tmp_path / "q2" / "model.safetensors")
    assert w1.keys() == w2.keys()
    assert all(torch.equal(w1[key], w2[key]) for key in w1)
    # at no moment more than two blocks of full-precision weights (here: never more than one)
    assert streamed.counts and max(streamed.counts) <= 2 and streamed.peak_full_precision <= 2
    assert streamed.is_complete() and streamed.full_precision_blocks() == 0


def test_choosing_streaming(sharded: Path, monkeypatch) -> None:
    from bitsmith.engine import model_stream
    from bitsmith.engine.cli import build_parser

    assert model_stream.choose_streaming(str(sharded), True)[0] is True
    assert model_stream.choose_streaming(str(sharded), False)[0] is False
    need = model_stream.float32_bytes(sharded)
    assert need == 4 * sum(p.numel() for p in _reference(sharded).parameters())
    # the normal path holds the model and one ΔW² per format: 4 × the weights with two formats
    monkeypatch.setattr(model_stream, "available_ram", lambda: 4 * need)
    on, why = model_stream.choose_streaming(str(sharded), None, formats=2)
    assert on and "would not fit" in why
    monkeypatch.setattr(model_stream, "available_ram", lambda: 5 * need)
    assert model_stream.choose_streaming(str(sharded), None, formats=2)[0] is False
    assert model_stream.choose_streaming(str(sharded), None, formats=3)[0] is True
    assert model_stream.choose_streaming("nobody/not-downloaded", None)[0] is False
    parser = build_parser()
    base = ["quantize", "m", "--bpw", "3", "--out", "o"]
    assert parser.parse_args(base).stream is None
    assert parser.parse_args([*base, "--stream"]).stream is True
    assert parser.parse_args([*base, "--no-stream"]).stream is False


def test_bad_checkpoints_are_clear_errors(sharded: Path, tmp_path: Path) -> None:
    from bitsmith.engine.model_stream import open_streamed

    empty = tmp_path / "nothing"
    empty.mkdir()
    shutil.copy(sharded / "config.json", empty / "config.json")
    with pytest.raises(UnsupportedModelError, match="no safetensors"):
        open_streamed(str(empty))
    broken = tmp_path / "broken"
    shutil.copytree(sharded, broken)
    next(broken.glob("model-00002*.safetensors")).unlink()
    with pytest.raises(BadInputError, match="lacks shards"):
        open_streamed(str(broken))
    with pytest.raises(BadInputError, match="not downloaded") as exc:
        open_streamed("nobody/not-downloaded")
    assert "bitsmith download nobody/not-downloaded" in exc.value.hint
