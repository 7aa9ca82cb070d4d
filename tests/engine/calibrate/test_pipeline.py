"""calibrate_model over a whole tiny Llama: layout handling, reports, checkpoints, exact resume, errors."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from bitsmith.engine.calibrate.config import CalibConfig
from bitsmith.engine.calibrate.pipeline import calibrate_model, calibration_windows, quantize_model_rtn
from bitsmith.engine.errors import BadInputError, CancelledError
from bitsmith.engine.model import find_blocks
from bitsmith.engine.quant import layer_bits, parse_spec
from bitsmith.engine.quant.linear import QuantLinear

CONFIG = CalibConfig(iters=15, batch_size=4, samples=8, seq_len=32)


def _layout(model: nn.Module) -> dict[str, str]:
    """Mixed formats; the k_proj of every block is left out (stays nn.Linear); lm_head is included."""
    layout = {
        f"{b.name}.{n}": ("int2_g64" if "mlp" in n else "int4_g64")
        for b in find_blocks(model)
        for n in b.linears
        if not n.endswith("k_proj")
    }
    layout["lm_head"] = "int4_g64"
    return layout


def _hidden(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Final hidden states (before lm_head, which both compared models quantize the same way)."""
    with torch.no_grad():
        return model.model(ids).last_hidden_state


def test_calibrate_whole_model(fresh_seed: int, tiny_llama, token_batch) -> None:
    config = CONFIG.with_(samples=16, seq_len=64)  # enough tokens that 15 iterations generalise
    ids = token_batch(config.samples, config.seq_len, fresh_seed)
    held = token_batch(4, 48, fresh_seed + 7)
    model = tiny_llama(fresh_seed)
    ref, fp_calib = _hidden(model, held), _hidden(model, ids)
    layout = _layout(model)
    baselines = {m: tiny_llama(fresh_seed) for m in ("rtn", "hqq")}
    for method, base in baselines.items():
        quantize_model_rtn(base, layout, method=method)
    events: list[tuple[str, int, int]] = []
    reports = []
    summary = calibrate_model(
        model, ids, layout, config, on_progress=lambda *e: events.append(e), on_block=reports.append, device="cpu"
    )
    # every layout linear is a QuantLinear of its format, the rest are untouched
    mods = dict(model.named_modules())
    for name, fmt in layout.items():
        assert isinstance(mods[name], QuantLinear) and mods[name].spec == parse_spec(fmt), name
    for b in find_blocks(model):
        assert isinstance(b.module.self_attn.k_proj, nn.Linear)
    assert summary.uncalibrated == {"lm_head": "int4_g64"}
    # reports: one per block, loss lowered by tuning in each
    assert [r.index for r in summary.blocks] == [0, 1, 2] and reports == summary.blocks
    for r in summary.blocks:
        assert r.loss_after < r.loss_before and len(r.formats) == 6
    json.dumps(summary.to_dict())
    calib = [e for e in events if e[0] == "calibrate"]
    assert calib == [("calibrate", i, 3) for i in range(4)]
    assert [e for e in events if e[0] == "capture"][-1] == ("capture", 16, 16)
    # end to end, the calibrated model is far closer to full precision than RTN and HQQ on the calibration
    # tokens (seen 0.23-0.30 x RTN, 0.40-0.48 x HQQ) and closer than RTN on held-out tokens (0.55-0.66 x).
    # On held-out random tokens of a random model it only about ties HQQ (0.85-1.19 x: 1024 tokens of
    # noise over-fit); the slow SmolLM2 test checks held-out perplexity on real text instead.
    err = {m: float((_hidden(base, ids) - fp_calib).square().mean()) for m, base in baselines.items()}
    err_cal = float((_hidden(model, ids) - fp_calib).square().mean())
    held_rtn = float((_hidden(baselines["rtn"], held) - ref).square().mean())
    held_cal = float((_hidden(model, held) - ref).square().mean())
    print(f"hidden-state MSE on calibration tokens: calibrated {err_cal:.4g}, {err}; held-out {held_cal:.4g} "
          f"vs rtn {held_rtn:.4g}")
    assert err_cal < 0.6 * err["hqq"] and err_cal < 0.4 * err["rtn"] and held_cal < 0.8 * held_rtn


def test_target_q_also_works(fresh_seed: int, tiny_llama, token_batch) -> None:
    model = tiny_llama(fresh_seed, layers=2)
    layout = {f"{b.name}.{n}": "int4_g64" for b in find_blocks(model) for n in b.linears}
    summary = calibrate_model(model, token_batch(8, 32, fresh_seed), layout, CONFIG.with_(target="q"))
    assert all(r.loss_after < r.loss_before for r in summary.blocks)


def test_resume_is_exact(fresh_seed: int, tiny_llama, token_batch, tmp_path) -> None:
    ids = token_batch(CONFIG.samples, CONFIG.seq_len, fresh_seed)
    full = tiny_llama(fresh_seed)
    layout = _layout(full)
    calibrate_model(full, ids, layout, CONFIG)
    expected = full.state_dict()

    state = {"blocks": 0, "cancels": 0}

    def on_progress(stage: str, done: int, total: int) -> None:
        if stage == "calibrate":
            state["blocks"] = done

    def check_cancel() -> None:
        if state["blocks"] >= 2:
            state["cancels"] += 1
            raise CancelledError("cancelled by the test")

    first = tiny_llama(fresh_seed)
    with pytest.raises(CancelledError):
        calibrate_model(first, ids, layout, CONFIG, tmp_path, on_progress, check_cancel)
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress["blocks_done"] == 2 and state["cancels"] == 1
    assert sorted(p.name for p in tmp_path.glob("block_*")) == ["block_0000.safetensors", "block_0001.safetensors"]

    resumed = tiny_llama(fresh_seed)  # a fresh process would load the original model again
    summary = calibrate_model(resumed, ids, layout, CONFIG, tmp_path)
    assert [r.resumed for r in summary.blocks] == [True, True, False] and summary.resumed_blocks == 2
    assert summary.blocks[0].loss_after == progress["reports"][0]["loss_after"]
    got = resumed.state_dict()
    assert got.keys() == expected.keys()
    for k in expected:
        assert torch.equal(got[k], expected[k]), k

    # the same model object, half quantized, cannot be resumed; another run's folder is refused
    with pytest.raises(BadInputError, match="already quantized"):
        calibrate_model(first, ids, layout, CONFIG, tmp_path)
    with pytest.raises(BadInputError, match="different run"):
        calibrate_model(tiny_llama(fresh_seed), ids, layout, CONFIG.with_(iters=3), tmp_path)


def test_nan_in_a_block_names_it_and_keeps_the_checkpoint(fresh_seed: int, tiny_llama, token_batch, tmp_path) -> None:
    model = tiny_llama(fresh_seed)
    with torch.no_grad():
        model.model.layers[1].post_attention_layernorm.weight[3] = float("nan")
    layout = {f"{b.name}.{n}": "int4_g64" for b in find_blocks(model) for n in b.linears}
    with pytest.raises(BadInputError, match=r"model\.layers\.1: the full-precision block's output has \d+ NaN"):
        calibrate_model(model, token_batch(8, 32, fresh_seed), layout, CONFIG, tmp_path)
    assert json.loads((tmp_path / "progress.json").read_text())["blocks_done"] == 1
    assert (tmp_path / "block_0000.safetensors").is_file()


def test_quantize_model_rtn_and_layout_errors(fresh_seed: int, tiny_llama) -> None:
    model = tiny_llama(fresh_seed, layers=2)
    blocks = find_blocks(model)
    layout = {f"{blocks[0].name}.mlp.down_proj": "int2_g64", f"{blocks[1].name}.self_attn.q_proj": "int4_g128_sym"}
    with pytest.raises(BadInputError, match="not linear layers of this model: model.layers.9.mlp"):
        quantize_model_rtn(model, {**layout, "model.layers.9.mlp": "int4_g128"})
    with pytest.raises(BadInputError, match="int5"):
        quantize_model_rtn(model, {f"{blocks[0].name}.mlp.up_proj": "int5_g128"})
    layout[f"{blocks[0].name}.mlp.up_proj"] = "int3_g128"
    done = quantize_model_rtn(model, layout)
    assert done == {k: parse_spec(v).name for k, v in layout.items()}
    down = blocks[0].module.mlp.down_proj
    assert isinstance(down, QuantLinear) and down.bpw == pytest.approx(layer_bits(96, 200, parse_spec("int2_g64")).bpw)
    with pytest.raises(BadInputError, match="already quantized"):
        quantize_model_rtn(model, layout)


def test_calibration_windows_cover_the_text() -> None:
    class Chars:  # a tokenizer whose tokens are characters
        def __call__(self, text: str) -> dict:
            return {"input_ids": [ord(c) for c in text]}

    text = "".join(chr(65 + i % 26) * 1000 for i in range(200))  # 200 000 characters in 26-letter stripes
    config = CalibConfig(samples=6, seq_len=50, seed=3)
    windows = calibration_windows(Chars(), config, text)
    assert len(windows) == 6 and all(len(w) == 50 for w in windows)
    assert windows == calibration_windows(Chars(), config, text)  # deterministic
    with pytest.raises(BadInputError, match="fewer than one sample"):
        calibration_windows(Chars(), config, "short text")
