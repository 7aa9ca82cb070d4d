"""The code optimizer (residuals, whole-step moves, range, unbiased rounding, ranking), in-backward Adam, schedule."""

from __future__ import annotations

import random

import pytest
import torch

from bitsmith.engine.finetune.optim import (
    CodeOptimizer,
    InBackwardAdam,
    lr_factor,
    pack_residual,
    scatter_codes,
    unpack_residual,
)
from bitsmith.engine.finetune.qlinear import QSFTLinear, unpack_t
from bitsmith.engine.quant.linear import QuantLinear
from bitsmith.kernels.pack import pack_codes


def _layer(spec: str = "int4_g32", k: int = 64, n: int = 24) -> QSFTLinear:
    return QSFTLinear(QuantLinear.from_linear(torch.nn.Linear(k, n, bias=False), spec), name="l")


@pytest.mark.parametrize("bits", [4, 8])
def test_residual_pack_roundtrip(bits: int) -> None:
    k, n = random.randint(1, 40), random.randint(1, 9)
    values = torch.randint(0, 1 << bits, (k, n), dtype=torch.int32)  # offset form: residual + half a step
    assert torch.equal(unpack_residual(pack_residual(values, bits), bits, k), values)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_scatter_codes_equals_repacking(bits: int) -> None:
    k, n = random.randint(5, 70), random.randint(2, 12)
    maxq = (1 << bits) - 1
    old = torch.randint(0, maxq + 1, (k, n), dtype=torch.int32)
    packed = pack_codes(old.t(), bits)
    moved = torch.rand(k, n) < 0.3
    new = torch.where(moved, torch.randint(0, maxq + 1, (k, n), dtype=torch.int32), old)
    r0 = random.randint(0, n - 1)  # a block of columns r0: within the packed words
    block = packed.clone()
    scatter_codes(block, r0, old[:, r0:], new[:, r0:], moved[:, r0:], bits)
    expect = torch.cat([old[:, :r0], new[:, r0:]], dim=1)
    assert torch.equal(block, pack_codes(expect.t(), bits))


def _step(opt: CodeOptimizer, layer: QSFTLinear, dwt: torch.Tensor) -> None:
    base = layer.base
    codes = unpack_t(base.qweight, base.spec.bits, base.in_features)
    opt.step_rows(layer, 0, base.out_features, dwt.clone(), codes, base.scales.float())


@pytest.mark.parametrize("residual_bits", [0, 4, 8])
def test_codes_stay_in_range_and_move_by_whole_steps(residual_bits: int) -> None:
    layer = _layer("int2_g16")
    opt = CodeOptimizer(lr=50.0, residual_bits=residual_bits)  # absurdly large: everything pushed to the edges
    before = unpack_t(layer.base.qweight, 2, 64)
    sign = torch.where(torch.rand(64, 24) < 0.5, -1.0, 1.0)
    for _ in range(3):
        _step(opt, layer, sign)
    after = unpack_t(layer.base.qweight, 2, 64)
    assert after.min() >= 0 and after.max() <= 3
    assert torch.equal(after[sign > 0], torch.zeros_like(after[sign > 0]))  # gradient > 0: codes go down
    assert torch.equal(after[sign < 0], torch.full_like(after[sign < 0], 3))
    assert (after != before).any()


def test_small_consistent_updates_accumulate_in_the_residual() -> None:
    layer = _layer("int4_g32")
    opt = CodeOptimizer(lr=0.1, residual_bits=4, seed=random.randint(0, 1000))
    before = unpack_t(layer.base.qweight, 4, 64).clone()
    g = torch.ones(64, 24)  # same direction everywhere: after normalisation u = 1, so 0.1 step per update
    _step(opt, layer, g)
    assert opt.take_counts()[0] < 0.05 * before.numel()  # 0.1 step: almost nothing crosses the half step yet
    for _ in range(11):
        _step(opt, layer, g)
    after = unpack_t(layer.base.qweight, 4, 64)
    moved = (before - after)[before > 0]
    # 12 updates of 0.1 step = 1.2 steps down from the middle of the bin: one whole step for most codes
    assert moved.float().mean() > 0.8 and moved.max() <= 2 and moved.min() >= 0


def test_stochastic_rounding_is_unbiased_without_a_residual() -> None:
    layer = _layer("int8_g64", 128, 256)
    opt = CodeOptimizer(lr=0.3, residual_bits=0, seed=random.randint(0, 1000))
    before = unpack_t(layer.base.qweight, 8, 128).clone()
    _step(opt, layer, -torch.ones(128, 256))
    moved = (unpack_t(layer.base.qweight, 8, 128) - before)[before < 255].float()
    assert moved.min() >= 0 and moved.max() <= 1
    assert moved.mean().item() == pytest.approx(0.3, abs=0.02)


def test_max_move_frac_ranks_and_caps_moves() -> None:
    layer = _layer("int4_g32")
    opt = CodeOptimizer(lr=2.0, residual_bits=4, max_move_frac=0.05)
    g = torch.randn(64, 24)
    _step(opt, layer, g)
    moved, seen = opt.take_counts()
    assert moved == int(0.05 * seen)  # more wanted to move; the strongest signals won


def test_non_finite_gradient_stops_moves() -> None:
    layer = _layer()
    before = layer.base.qweight.clone()
    opt = CodeOptimizer(lr=1.0)
    g = torch.randn(64, 24)
    g[random.randrange(64), random.randrange(24)] = float("nan")
    _step(opt, layer, g)
    assert opt.bad and torch.equal(layer.base.qweight, before)


def test_in_backward_adam_matches_torch_adam() -> None:
    torch.manual_seed(random.randint(0, 1000))
    w1 = torch.nn.Parameter(torch.randn(5, 3))
    w2 = torch.nn.Parameter(w1.detach().clone())
    b16 = torch.nn.Parameter(torch.randn(3).to(torch.bfloat16))  # a 16-bit parameter gets an fp32 master
    ours = InBackwardAdam([("g", [("w", w1), ("b", b16)], 0.01)])
    ref = torch.optim.Adam([w2], lr=0.01, eps=1e-8)
    for _ in range(5):
        x = torch.randn(4, 5)
        ((x @ w1).square().sum() + (b16.float() * x[0, :3]).sum()).backward()
        ref.zero_grad()
        (x @ w2).square().sum().backward()
        ref.step()
        assert w1.grad is None  # applied and freed inside the backward
    assert torch.allclose(w1, w2, atol=1e-5)
    assert ours.state["b"]["master"].dtype == torch.float32 and b16.dtype == torch.bfloat16
    ours.close()


def test_in_backward_adam_accumulates_micro_batches() -> None:
    w = torch.nn.Parameter(torch.zeros(3))
    adam = InBackwardAdam([("g", [("w", w)], 0.1)], accumulate=2)
    adam.micro = 0
    (w * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.equal(w.detach(), torch.zeros(3)) and w.grad is not None  # kept for the next micro-batch
    adam.micro = 1
    (w * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert w.grad is None and torch.allclose(w.detach(), torch.full((3,), -0.1), atol=1e-6)


def test_lr_schedule_warms_up_then_decays_by_cosine() -> None:
    total, warm = 100, 10
    f = [lr_factor(s, total, warm, 0.1) for s in range(total)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0) and f[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert f[-1] == pytest.approx(0.1, abs=0.01) and lr_factor(55, total, warm, 0.1) == pytest.approx(0.55)


def test_residual_decay_filters_noise_but_keeps_consistent_signal() -> None:
    def moves(decay: float, consistent: bool) -> int:
        layer = _layer("int4_g32", 64, 48)
        opt = CodeOptimizer(lr=0.15, residual_bits=4, decay=decay, seed=5)
        gen = torch.Generator().manual_seed(11)
        sign = torch.where(torch.rand(64, 48, generator=gen) < 0.5, -1.0, 1.0)
        total = 0
        for _ in range(30):
            noise = torch.where(torch.rand(64, 48, generator=gen) < 0.5, -1.0, 1.0)
            _step(opt, layer, sign if consistent else noise)
            total += opt.take_counts()[0]
        return total

    noise_plain, noise_leaky = moves(0.0, False), moves(0.2, False)
    assert noise_leaky < 0.4 * noise_plain  # random-sign gradients move codes far less once the residual leaks
    assert moves(0.2, True) > 0.5 * moves(0.0, True)  # a steady gradient still does
    with pytest.raises(ValueError, match="decay"):
        CodeOptimizer(lr=0.1, decay=1.0)
