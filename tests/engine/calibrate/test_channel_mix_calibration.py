"""Block-wise calibration tunes the parts of channel-mix layers, keeps their permutations, and resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from bitsmith.engine.calibrate.config import CalibConfig
from bitsmith.engine.calibrate.pipeline import calibrate_model, quantize_model_rtn
from bitsmith.engine.errors import BadInputError, CancelledError
from bitsmith.engine.model import find_blocks
from bitsmith.engine.quant.linear import QuantLinear
from bitsmith.engine.quant.mix import ChannelMix, parse_format
from bitsmith.engine.quant.mixed_linear import ChannelMixLinear

CONFIG = CalibConfig(iters=15, batch_size=4, samples=8, seq_len=32)
MIXES = {96: "int4_g32:32+int2_g32:64", 200: "int4_g64:64+int2_g32:136"}  # hidden 96, intermediate 200


def _layout(model: nn.Module, seed: int) -> dict[str, str | ChannelMix]:
    """v_proj and down_proj of every block as channel-mixes with random permutations; the rest single formats."""
    gen = torch.Generator().manual_seed(seed)
    layout: dict[str, str | ChannelMix] = {}
    for b in find_blocks(model):
        for n, lin in b.linears.items():
            if n.endswith(("v_proj", "down_proj")):
                k = lin.in_features
                layout[f"{b.name}.{n}"] = parse_format(MIXES[k]).with_perm(torch.randperm(k, generator=gen).tolist())
            else:
                layout[f"{b.name}.{n}"] = "int4_g32"
    return layout


def _hidden(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.model(ids).last_hidden_state


def test_mixed_layers_are_calibrated_part_by_part(fresh_seed: int, tiny_llama, token_batch) -> None:
    ids = token_batch(CONFIG.samples, CONFIG.seq_len, fresh_seed)
    model = tiny_llama(fresh_seed, layers=2)
    fp = _hidden(model, ids)
    layout = _layout(model, fresh_seed)
    rtn = tiny_llama(fresh_seed, layers=2)
    quantize_model_rtn(rtn, layout, method="rtn")
    summary = calibrate_model(model, ids, layout, CONFIG, device="cpu")
    mods = dict(model.named_modules())
    for name, fmt in layout.items():
        if isinstance(fmt, ChannelMix):
            assert isinstance(mods[name], ChannelMixLinear) and mods[name].mix == fmt
            assert mods[name].perm.tolist() == list(fmt.perm)
        else:
            assert isinstance(mods[name], QuantLinear)
    for r in summary.blocks:
        assert r.loss_after < r.loss_before
        assert r.formats["mlp.down_proj"] == MIXES[200] and r.formats["self_attn.v_proj"] == MIXES[96]
    json.dumps(summary.to_dict())
    # the tuned parts are better than round-to-nearest of the same layout on the calibration tokens
    err_cal = float((_hidden(model, ids) - fp).square().mean())
    err_rtn = float((_hidden(rtn, ids) - fp).square().mean())
    print(f"hidden-state MSE: calibrated {err_cal:.4g}, rtn {err_rtn:.4g}")
    assert err_cal < 0.8 * err_rtn
    # the mixed layers' codes moved: calibration reached the parts, not only the single-format layers
    name = "model.layers.0.mlp.down_proj"
    assert not torch.equal(mods[name].parts[1].qweight, dict(rtn.named_modules())[name].parts[1].qweight)


def test_resume_with_channel_mixes_is_exact(fresh_seed: int, tiny_llama, token_batch, tmp_path) -> None:
    ids = token_batch(CONFIG.samples, CONFIG.seq_len, fresh_seed)
    full = tiny_llama(fresh_seed, layers=2)
    layout = _layout(full, fresh_seed)
    calibrate_model(full, ids, layout, CONFIG)
    expected = full.state_dict()

    def cancel_after_one(stage: str, done: int, total: int) -> None:
        if stage == "calibrate" and done >= 1:
            raise CancelledError("cancelled by the test")

    with pytest.raises(CancelledError):
        calibrate_model(tiny_llama(fresh_seed, layers=2), ids, layout, CONFIG, tmp_path, cancel_after_one)
    assert json.loads((tmp_path / "progress.json").read_text())["blocks_done"] == 1
    resumed = tiny_llama(fresh_seed, layers=2)
    summary = calibrate_model(resumed, ids, layout, CONFIG, tmp_path)
    assert [r.resumed for r in summary.blocks] == [True, False]
    got = resumed.state_dict()
    assert got.keys() == expected.keys()
    for k in expected:
        assert torch.equal(got[k], expected[k]), k
    # the same mixes with other permutations are another run: the checkpoint is refused
    other = {n: (f.with_perm(list(reversed(f.perm))) if isinstance(f, ChannelMix) else f) for n, f in layout.items()}
    with pytest.raises(BadInputError, match="different run"):
        calibrate_model(tiny_llama(fresh_seed, layers=2), ids, other, CONFIG, tmp_path)
