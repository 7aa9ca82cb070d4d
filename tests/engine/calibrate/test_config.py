"""CalibConfig: presets per device, validation with clear messages, JSON round trip."""

from __future__ import annotations

import json

import pytest

from bitsmith.engine.calibrate.config import CPU_PRESETS, GPU_PRESETS, CalibConfig
from bitsmith.engine.errors import BadInputError


def test_presets() -> None:
    gpu = CalibConfig.preset("default", "cuda")
    assert (gpu.iters, gpu.samples, gpu.seq_len, gpu.batch_size) == (200, 128, 2048, 8)  # AutoRound's
    assert gpu.resolved_lr == pytest.approx(1 / 200) and gpu.optimizer == "signsgd" and gpu.target == "fp"
    for name in ("demo", "default", "best"):
        cpu, acc = CalibConfig.preset(name, "cpu"), CalibConfig.preset(name, "cuda:0")
        assert cpu == CPU_PRESETS[name] and acc == GPU_PRESETS[name]
        assert cpu.iters * cpu.samples * cpu.seq_len < acc.iters * acc.samples * acc.seq_len
    assert CalibConfig.preset("demo", "cpu", iters=3).iters == 3
    with pytest.raises(BadInputError, match="unknown calibration preset 'fast'"):
        CalibConfig.preset("fast")


def test_json_round_trip_and_validation() -> None:
    config = CalibConfig.preset("best", "cpu")
    assert CalibConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(BadInputError, match="unknown calibration settings"):
        CalibConfig.from_dict({"iterations": 3})
    for bad, match in [
        ({"iters": -1}, "iters=-1"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"optimizer": "sgd"}, "optimizer='sgd'"),
        ({"target": "both"}, "target='both'"),
        ({"clip_min": 1.5}, "clip_min=1.5"),
        ({"lr": 0}, "lr=0"),
        ({"seq_len": 1}, "seq_len=1"),
    ]:
        with pytest.raises(BadInputError, match=match):
            CalibConfig(**bad)
    assert CalibConfig(optimizer="adam").resolved_lr == pytest.approx(5e-3)
    assert CalibConfig(amp=False).use_amp("cpu") is False and CalibConfig(amp=True).use_amp("cpu") is True


def test_token_cap_weights() -> None:
    import torch

    from bitsmith.engine.calibrate.loss import block_loss, loss_terms, token_weights

    target = torch.randn(2, 10, 16)
    target[0, 0] *= 200.0  # a massive-activation token
    out = target * (1 + 0.1 * torch.randn_like(target))  # relative errors: the big token dominates MSE
    assert token_weights(target, None) is None and token_weights(target, 1e6) is None
    torch.testing.assert_close(block_loss(out, target, None), torch.nn.functional.mse_loss(out, target))
    w = token_weights(target, 5.0)
    rms = target.square().mean(-1).sqrt()
    limit = 5.0 * rms[0].median()
    assert w[0, 0] == pytest.approx(float((limit / rms[0, 0]) ** 2), rel=1e-5)
    assert bool((w[1] == 1).all()) and bool((w[0, 1:] == 1).all())
    s, c = loss_terms(out, target, 5.0)
    assert float(block_loss(out, target, 5.0)) == pytest.approx(s / c, rel=1e-5)
    assert float(block_loss(out, target, 5.0)) < float(block_loss(out, target, None)) / 10
    with pytest.raises(BadInputError, match="token_cap"):
        CalibConfig(token_cap=0.5)
