"""quant_matmul_autograd: gradients to x, scales and zeros, and dW through the hook, against torch autograd
on the reference dequantization (gradcheck would be far too slow under the interpreter)."""

import pytest
import torch
from kernel_testing import TOL, rel_err

from bitsmith.kernels.dispatch import quant_matmul_autograd
from bitsmith.kernels.pack import unpack_codes


def _reference_grads(x, w, gy):
    """Gradients of sum(gy * (x @ deq(W).T)) by torch autograd on a float32 reference graph."""
    x = x.detach().float().requires_grad_(True)
    s = w.scales.detach().float().requires_grad_(True)
    z = w.zeros.detach().float().requires_grad_(True)
    q = unpack_codes(w.qweight, w.bits, w.in_features).float()
    gidx = torch.arange(w.in_features) // w.group_size
    deq = (q - z[gidx].t()) * s[gidx].t()
    deq.retain_grad()
    ((x @ deq.t()) * gy.float()).sum().backward()
    return x.grad, s.grad, z.grad, deq.grad


@pytest.mark.parametrize("bits,group,lead,dtype", [
    (4, 128, (1,), torch.float32),      # M = 1: GEMV forward, backward kernel at M = 1
    (2, 64, (2, 5), torch.float32),     # M = 10: split-K forward
    (4, 128, (3, 40), torch.float16),   # M = 120: large-M forward
])
def test_gradients_match_reference(make, bits, group, lead, dtype) -> None:
    n, k = 40, 200
    w = make.weight(n, k, bits, group, dtype)
    x = make.act(*lead, k, dtype=dtype).requires_grad_(True)
    w.scales.requires_grad_(True)
    w.zeros.requires_grad_(True)
    seen = []
    y = quant_matmul_autograd(x, *w.args, weight_grad_hook=seen.append)
    gy = make.act(*y.shape, dtype=dtype)
    (y * gy).sum().backward()
    ref_dx, ref_ds, ref_dz, ref_dw = _reference_grads(x, w, gy)
    tol = TOL[dtype] * 3  # the float16 gradients pass through two float16 roundings
    assert x.grad.dtype == dtype and x.grad.shape == x.shape
    assert rel_err(x.grad, ref_dx) < tol
    assert rel_err(w.scales.grad, ref_ds) < tol
    assert rel_err(w.zeros.grad, ref_dz) < tol
    assert len(seen) == 1, "the hook must be called once per backward"
    assert seen[0].dtype == torch.float32 and seen[0].shape == (n, k)
    assert rel_err(seen[0], ref_dw) < tol


def test_only_what_is_asked_for(make) -> None:
    w = make.weight(24, 128, 4, 128)
    x = make.act(3, 128).requires_grad_(True)
    y = quant_matmul_autograd(x, *w.args)
    y.sum().backward()
    assert x.grad is not None and w.scales.grad is None and w.zeros.grad is None

    x = make.act(3, 128)
    w.scales.requires_grad_(True)
    quant_matmul_autograd(x, *w.args).square().sum().backward()
    assert w.scales.grad is not None and w.zeros.grad is None


def test_hook_may_update_the_packed_weight_in_place(make) -> None:
    """dX is computed before the hook runs, so a Q-SFT step inside the hook cannot corrupt it."""
    w = make.weight(24, 128, 2, 64)
    x = make.act(4, 128).requires_grad_(True)
    original = w.qweight.clone()
    y = quant_matmul_autograd(x, *w.args, weight_grad_hook=lambda dw: w.qweight.zero_())
    gy = make.act(*y.shape)
    (y * gy).sum().backward()
    assert not w.qweight.any()
    w.qweight.copy_(original)
    ref_dx, _, _, _ = _reference_grads(x, w, gy)
    assert rel_err(x.grad, ref_dx) < TOL[torch.float32]
