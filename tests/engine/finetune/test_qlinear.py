"""QSFTLinear: forward and gradients against autograd on the dequantized weight, dW blocks, write-back."""

from __future__ import annotations

import random

import pytest
import torch

from bitsmith.engine.finetune import qlinear
from bitsmith.engine.finetune.qlinear import QSFTLinear, unwrap_model, wrap_model
from bitsmith.engine.quant.linear import QuantLinear
from bitsmith.kernels import reference

SPECS = ["int4_g32", "int2_g16", "int2_g16_zf", "int4_g48_dq8", "int2_g16_zq8", "int8_g64", "int2_g16_dq4_zf",
         "int3_g32", "int3_g64_dq8"]


class Recorder:
    """A code stepper that records the dW^T blocks it is given."""

    def __init__(self) -> None:
        self.blocks: list[tuple[int, int, torch.Tensor]] = []

    def step_rows(self, layer, r0, r1, dwt, codes, scales) -> None:  # noqa: ANN001
        self.blocks.append((r0, r1, dwt.clone()))


def _layer(spec: str, k: int, n: int, bias: bool = True) -> QuantLinear:
    lin = torch.nn.Linear(k, n, bias=bias)
    return QuantLinear.from_linear(lin, spec)


@pytest.mark.parametrize("spec", SPECS)
def test_gradients_match_autograd_through_the_dequantized_weight(spec: str, monkeypatch) -> None:
    k, n = random.choice([(100, 24), (96, 40), (130, 17)])
    monkeypatch.setattr(qlinear, "BLOCK_ELEMENTS", k * random.randint(3, 9))  # several column blocks
    base = _layer(spec, k, n)
    layer = QSFTLinear(base, backend="torch")
    rec = Recorder()
    layer.code_optimizer = rec
    x = torch.randn(2, 7, k, requires_grad=True)
    w = torch.randn(2, 7, n)
    (layer(x) * w).sum().backward()

    s = layer.log_scales.detach().exp().requires_grad_(True)
    z = layer.current_zeros().detach().float().clone().requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    dense = reference.dequantize(base.qweight, s, z, base.spec.bits, base.spec.group_size, k)  # differentiable
    y2 = x2 @ dense.t() + base.bias.float()
    (y2 * w).sum().backward()
    assert torch.allclose(x.grad, x2.grad, atol=1e-5)
    assert torch.allclose(layer.log_scales.grad, s.grad * s.detach(), atol=1e-5, rtol=1e-4)
    if layer.zeros is not None:
        assert torch.allclose(layer.zeros.grad, z.grad, atol=1e-5, rtol=1e-4)
    else:
        assert not spec.endswith(("_zf", "_zq8"))
    dwt = torch.cat([b for _, _, b in rec.blocks], dim=1)
    assert [r0 for r0, _, _ in rec.blocks] == sorted({r0 for r0, _, _ in rec.blocks}) and rec.blocks[-1][1] == n
    assert torch.allclose(dwt, x.detach().reshape(-1, k).t() @ w.reshape(-1, n), atol=1e-5)


def test_forward_equals_quantlinear_and_nothing_changes_without_a_stepper() -> None:
    base = _layer("int4_g32", 64, 48)
    before = base.qweight.clone()
    layer = QSFTLinear(base, backend="torch")
    x = torch.randn(5, 64)
    assert torch.allclose(layer(x), base(x), atol=1e-6)
    layer(x.requires_grad_()).sum().backward()
    assert torch.equal(base.qweight, before)


def test_write_back_is_exact_for_untouched_fp16_stats_and_keeps_the_format() -> None:
    model = torch.nn.Sequential(_layer("int4_g32", 64, 32), _layer("int2_g16_zf", 32, 16),
                                _layer("int4_g32_dq8_zq8", 64, 8))
    stored = [{k: v.clone() for k, v in m.state_dict().items()} for m in model]
    wrapped = wrap_model(model)
    assert set(wrapped) == {"0", "1", "2"} and all(isinstance(m, QSFTLinear) for m in model)
    assert unwrap_model(model) == 3
    for m, before in zip(model, stored, strict=True):
        assert isinstance(m, QuantLinear)
        after = m.state_dict()
        assert after.keys() == before.keys()
        for key in before:
            assert after[key].dtype == before[key].dtype and after[key].shape == before[key].shape
            if not m.spec.double_quant_scales:
                assert torch.equal(after[key], before[key]), key


def test_write_back_stores_trained_statistics() -> None:
    base = _layer("int2_g16_zf", 48, 24)
    layer = QSFTLinear(base)
    with torch.no_grad():
        layer.log_scales.add_(torch.randn_like(layer.log_scales) * 0.1)
        layer.zeros.add_(torch.randn_like(layer.zeros) * 0.3)
    want_s, want_z = layer.log_scales.exp().half(), layer.zeros.detach().half()
    out = layer.unwrap()
    assert torch.equal(out.scales, want_s) and torch.equal(out.zeros, want_z)
    dq = QSFTLinear(_layer("int4_g16_dq8", 48, 24))
    with torch.no_grad():
        dq.log_scales.mul_(1.0 + 0.05 * torch.rand_like(dq.log_scales))
    target = dq.log_scales.detach().exp()
    got = dq.unwrap().scales.float()
    assert ((got - target).abs() / target).max() < 0.02  # 8-bit log-domain codes re-fitted to the new scales


@pytest.mark.parametrize("spec", ["int4_g32", "int2_g32_zf"])
def test_kernel_path_matches_the_torch_path(spec: str) -> None:
    """Under TRITON_INTERPRET the CUDA path (forward and dX by bitsmith.kernels) runs on the CPU."""
    pytest.importorskip("triton")
    base = _layer(spec, 64, 32, bias=False)
    grads = []
    for backend in ("torch", "kernels"):
        layer = QSFTLinear(base, backend=backend)
        x = torch.randn(3, 64, generator=torch.Generator().manual_seed(1)).requires_grad_()
        y = layer(x)
        (y * torch.arange(32.0)).sum().backward()
        grads.append((y.detach(), x.grad, layer.log_scales.grad))
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_bf16_compute_on_the_cpu_is_close_to_fp32() -> None:
    base = _layer("int4_g32", 96, 40)
    out = []
    for dtype in (None, torch.bfloat16):
        layer = QSFTLinear(base, backend="torch")
        layer.compute_dtype = dtype
        rec = Recorder()
        layer.code_optimizer = rec
        x = torch.randn(6, 96, generator=torch.Generator().manual_seed(3)).requires_grad_()
        y = layer(x)
        (y * torch.linspace(-1, 1, 40)).sum().backward()
        out.append((y.detach(), x.grad, layer.log_scales.grad, rec.blocks[0][2]))
    for a, b in zip(*out, strict=True):
        assert a.dtype == b.dtype == torch.float32
        assert (a - b).norm() <= 0.02 * a.norm()
