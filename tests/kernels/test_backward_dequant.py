"""The backward-to-input kernel and the dequantize kernel against the torch reference (interpreter, CPU)."""

import pytest
import torch
from kernel_testing import DEVICE, FORMATS, SHAPES, TOL, poisoned, rel_err

from bitsmith.kernels import reference
from bitsmith.kernels.backward import matmul_backward_input
from bitsmith.kernels.dequant import dequantize_kernel

M_DTYPES = [(1, torch.float32), (3, torch.float16), (16, torch.float32), (80, torch.float16)]
CASES = [(bits, group, *SHAPES[(i + j) % len(SHAPES)], m, dtype)
         for i, (bits, group) in enumerate(FORMATS) for j, (m, dtype) in enumerate(M_DTYPES)]


@pytest.mark.parametrize("bits,group,n,k,m,dtype", CASES)
def test_backward_input(make, bits, group, n, k, m, dtype) -> None:
    w = make.weight(n, k, bits, group, dtype)
    dy = make.act(m, n, dtype=dtype)
    out = poisoned(m, k, dtype=dtype)
    got = matmul_backward_input(dy, *w.args, out=out)
    assert got is out
    err = rel_err(out, reference.matmul_backward_input(dy.float(), *w.args))
    assert err < TOL[dtype], f"dX int{bits}/g{group} N={n} K={k} M={m} {dtype}: rel err {err:.2e}"


def test_backward_input_group_576(make) -> None:
    w = make.weight(40, 576, 4, 576)
    dy = make.act(5, 40)
    out = matmul_backward_input(dy, *w.args, out=poisoned(5, 576))
    assert rel_err(out, reference.matmul_backward_input(dy, *w.args)) < TOL[torch.float32]


@pytest.mark.parametrize("bits,group", [*FORMATS, (8, 100), (4, 576), (4, 100), (3, 128), (3, 30)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_dequantize_kernel(make, bits, group, dtype) -> None:
    n, k = SHAPES[(bits + group) % len(SHAPES)]
    w = make.weight(n, k, bits, group, dtype)
    out = poisoned(n, k, dtype=dtype)
    got = dequantize_kernel(*w.args, dtype, out=out)
    ref = reference.dequantize(*w.args)
    if dtype == torch.float32:
        assert torch.equal(got, ref), "float32 dequantization must match the reference bit for bit"
    else:
        assert rel_err(got, ref) < TOL[dtype]


@pytest.mark.skipif(DEVICE != "cpu", reason="checks the interpreter's limits; compiled kernels take bfloat16")
def test_dequantize_kernel_rejects_bfloat16_under_interpreter(make) -> None:
    w = make.weight(8, 64, 4, 64)
    with pytest.raises(ValueError, match="bfloat16"):
        dequantize_kernel(*w.args, torch.bfloat16)
