"""SignRound on one block: beats plain RTN and HQQ, stores exactly what it tuned, fails clearly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bitsmith.engine.calibrate import signround
from bitsmith.engine.calibrate.capture import capture_block_inputs
from bitsmith.engine.calibrate.config import CalibConfig
from bitsmith.engine.calibrate.loss import block_loss
from bitsmith.engine.calibrate.runner import run_block
from bitsmith.engine.calibrate.signround import CalibrationError, LinearTuner, tune_block
from bitsmith.engine.errors import BadInputError, OutOfMemoryError
from bitsmith.engine.model import find_blocks
from bitsmith.engine.quant import layer_bits, parse_spec
from bitsmith.engine.quant.linear import QuantLinear
from bitsmith.kernels.pack import unpack_codes

FAST = CalibConfig(iters=30, batch_size=4, samples=12, seq_len=32)


def _setup(tiny_llama, token_batch, seed: int, index: int = 1, n: int = 12, length: int = 32):
    """(model, block, inputs, targets, args, kwargs) for one block of a tiny Llama on random tokens."""
    model = tiny_llama(seed)
    cap = capture_block_inputs(model, token_batch(n, length, seed))
    blocks = find_blocks(model)
    h = cap.hidden
    for b in blocks[:index]:
        h, _ = run_block(b.module, h, cap.block_args[b.index], cap.block_kwargs[b.index], device="cpu", batch=4)
    b = blocks[index]
    targets, _ = run_block(b.module, h, cap.block_args[index], cap.block_kwargs[index], device="cpu", batch=4)
    return model, b, h, targets, cap.block_args[index], cap.block_kwargs[index]


def _loss_with(block: nn.Module, linears: dict, make, inputs, targets, args, kwargs) -> float:
    """Block MSE after replacing each linear by make(name, linear); the block is restored afterwards."""
    saved = {}
    for name, lin in linears.items():
        parent, _, child = name.rpartition(".")
        holder = block.get_submodule(parent)
        saved[name] = (holder, child, getattr(holder, child))
        setattr(holder, child, make(name, lin))
    try:
        y, _ = run_block(block, inputs, args, kwargs, device="cpu", batch=4)
    finally:
        for holder, child, lin in saved.values():
            setattr(holder, child, lin)
    return float(block_loss(y, targets, FAST.token_cap))


@pytest.mark.parametrize("fmt", ["int4_g64", "int2_g64", "int4_g128_dq8"])
def test_tuning_beats_rtn_and_hqq(fresh_seed: int, tiny_llama, token_batch, fmt: str) -> None:
    _, b, x, y, args, kwargs = _setup(tiny_llama, token_batch, fresh_seed)
    linears = dict(b.linears)
    rtn = _loss_with(b.module, linears, lambda n, lin: QuantLinear.from_linear(lin, fmt, "rtn"), x, y, args, kwargs)
    hqq = _loss_with(b.module, linears, lambda n, lin: QuantLinear.from_linear(lin, fmt, "hqq"), x, y, args, kwargs)
    specs = {n: parse_spec(fmt) for n in linears}
    res = tune_block(b.module, specs, x, y, args, kwargs, FAST, index=1, name=b.name)
    print(f"{fmt}: rtn {rtn:.4g} hqq {hqq:.4g} start {res.loss_before:.4g} tuned {res.loss_after:.4g}")
    assert res.loss_after < 0.9 * min(rtn, hqq)
    assert res.loss_after < res.loss_before and not res.kept_start
    assert res.loss_before == pytest.approx(rtn, rel=0.25)  # the start is plain min-max rounding
    assert len(res.losses) == FAST.iters and 0 <= res.best_iter < FAST.iters
    # the block now holds the QuantLinears, and its loss is the reported one
    for n in linears:
        assert b.module.get_submodule(n) is res.linears[n]
    out, _ = run_block(b.module, x, args, kwargs, device="cpu", batch=4)
    assert float(block_loss(out, y, FAST.token_cap)) == pytest.approx(res.loss_after, rel=1e-5)


@pytest.mark.parametrize(
    "fmt", ["int4_g128", "int2_g64", "int2_g64_dq4", "int4_g64_zf", "int2_g64_dq8_zq8", "int4_g64_sym"]
)
def test_stored_form_is_what_was_tuned(fresh_seed: int, tiny_llama, fmt: str) -> None:
    spec = parse_spec(fmt)
    model = tiny_llama(fresh_seed)
    lin = find_blocks(model)[0].linears["mlp.down_proj"]  # K = 200: a short last group
    t = LinearTuner.create("down", lin, spec, CalibConfig(), "cpu")
    with torch.no_grad():  # move the parameters somewhere arbitrary inside their ranges
        t.v.uniform_(-0.5, 0.5)
        t.a_max.uniform_(0.5, 1.0)
        if t.a_min is not None:
            t.a_min.uniform_(0.5, 1.0)
    qw = t.quantized()
    q = QuantLinear.from_quantized(qw, lin.bias)
    with torch.no_grad():
        tuned = t.fake_weight()
    torch.testing.assert_close(q.dequantize(), tuned, rtol=0, atol=0)
    codes = unpack_codes(q.qweight, spec.bits, lin.in_features)
    assert int(codes.min()) >= 0 and int(codes.max()) <= spec.maxq
    if spec.integer_zeros:
        assert torch.equal(q.zeros, q.zeros.round()) and float(q.zeros.max()) <= spec.maxq
    # bpw: the spec's accounting equals the bytes actually stored
    stored_bits = sum(v.numel() * v.element_size() * 8 for k, v in q.state_dict().items() if k != "bias")
    lb = layer_bits(lin.out_features, lin.in_features, spec)
    assert stored_bits == lb.total and q.bpw == pytest.approx(lb.bpw)
    # a state-dict round trip gives the same weight
    again = QuantLinear.from_state_dict(q.state_dict(), spec, lin.in_features)
    torch.testing.assert_close(again.dequantize(), q.dequantize(), rtol=0, atol=0)


def test_adam_and_scale_stage(fresh_seed: int, tiny_llama, token_batch) -> None:
    _, b, x, y, args, kwargs = _setup(tiny_llama, token_batch, fresh_seed, index=0)
    specs = {n: parse_spec("int2_g64_zf") for n in b.linears}
    config = FAST.with_(optimizer="adam", iters=20, stats_iters=15)
    res = tune_block(b.module, specs, x, y, args, kwargs, config, name=b.name)
    assert res.loss_after < 0.9 * res.loss_before
    assert len(res.losses) == 35


def test_scales_only(fresh_seed: int, tiny_llama, token_batch) -> None:
    _, b, x, y, args, kwargs = _setup(tiny_llama, token_batch, fresh_seed, index=0)
    specs = {n: parse_spec("int4_g64") for n in b.linears}
    start = {n: LinearTuner.create(n, lin, specs[n], FAST, "cpu").quantized() for n, lin in b.linears.items()}
    res = tune_block(b.module, specs, x, y, args, kwargs, FAST.with_(iters=0, stats_iters=20), name=b.name)
    assert res.loss_after < res.loss_before and len(res.losses) == 20
    for n, qw in start.items():  # the min-max codes and integer zeros are kept; only the scales moved
        q = res.linears[n]
        assert torch.equal(q.qweight, qw.qweight) and torch.equal(q.zeros, qw.zeros)
    assert any(not torch.equal(res.linears[n].scales, qw.scales) for n, qw in start.items())


def test_nan_input_is_a_clear_error(fresh_seed: int, tiny_llama, token_batch) -> None:
    _, b, x, y, args, kwargs = _setup(tiny_llama, token_batch, fresh_seed)
    x = x.clone()
    x[3, 5, 7] = float("nan")
    specs = {n: parse_spec("int4_g64") for n in b.linears}
    with pytest.raises(BadInputError, match=r"model\.layers\.1: the quantized-stream input has 1 NaN"):
        tune_block(b.module, specs, x, y, args, kwargs, FAST, name=b.name)
    assert all(isinstance(b.module.get_submodule(n), nn.Linear) for n in specs)  # block unchanged


def test_nan_loss_is_a_clear_error(fresh_seed: int, tiny_llama, token_batch, monkeypatch) -> None:
    _, b, x, y, args, kwargs = _setup(tiny_llama, token_batch, fresh_seed)
    real = LinearTuner.fake_weight
    calls = {"n": 0}

    def poisoned(self):  # diverges after a few iterations
        calls["n"] += 1
        w = real(self)
        return w * float("nan") if calls["n"] > 7 * 8 else w

    monkeypatch.setattr(LinearTuner, "fake_weight", poisoned)
    specs = {n: parse_spec("int4_g64") for n in b.linears}
    with pytest.raises(CalibrationError, match=r"model\.layers\.1: the reconstruction loss became nan"):
        tune_block(b.module, specs, x, y, args, kwargs, FAST, name=b.name)
    assert all(isinstance(b.module.get_submodule(n), nn.Linear) for n in specs)


def test_out_of_memory_retries_then_fails(fresh_seed: int, tiny_llama, token_batch, monkeypatch) -> None:
    _, b, x, y, args, kwargs = _setup(tiny_llama, token_batch, fresh_seed)
    specs = {n: parse_spec("int4_g64") for n in b.linears}
    real_forward = type(b.module).forward
    limit = {"batch": 1}

    def forward(self, hidden, *a, **k):
        if hidden.shape[0] > limit["batch"]:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(self, hidden, *a, **k)

    monkeypatch.setattr(type(b.module), "forward", forward)
    res = tune_block(b.module, specs, x, y, args, kwargs, FAST.with_(iters=4), name=b.name)
    assert res.batch_size == 1 and res.loss_after <= res.loss_before and len(res.losses) == 4

    _, b, x, y, args, kwargs = _setup(tiny_llama, token_batch, fresh_seed)
    limit["batch"] = 0  # nothing fits
    with pytest.raises(OutOfMemoryError, match=r"model\.layers\.1 .*one calibration sample"):
        tune_block(b.module, specs, x, y, args, kwargs, FAST.with_(iters=4), name=b.name)


def test_round_ste_passes_gradients() -> None:
    x = torch.tensor([0.2, 1.7, -2.5], requires_grad=True)
    y = signround.round_ste(x)
    y.sum().backward()
    assert torch.equal(y.detach(), torch.round(x.detach())) and torch.equal(x.grad, torch.ones(3))
