"""Forward kernels (GEMV, split-K GEMM, dequantize-then-dot GEMM) against the torch reference.

Runs under the Triton interpreter on the CPU: float32 and float16 activations, both base formats and
INT8, K not a multiple of the group or of the codes per word, N not a multiple of the block, outputs
and split-K workspaces poisoned with NaN first. Bounds are in kernel_testing.py.
"""

import pytest
import torch
from kernel_testing import FORMATS, SHAPES, TOL, poisoned, rel_err

from bitsmith.kernels import reference
from bitsmith.kernels.gemm_dequant import gemm_dequant
from bitsmith.kernels.gemm_splitk import gemm_splitk
from bitsmith.kernels.gemv import gemv

# (M, dtype): every M the issue names, alternating dtypes; each format meets both shapes across the
# M values (the interpreter's bill grows with every case).
M_DTYPES = [(1, torch.float16), (3, torch.float32), (16, torch.float16), (80, torch.float32)]
GEMV_M_DTYPES = [(1, torch.float16), (1, torch.float32), (3, torch.float16), (4, torch.float32)]


def cases(m_dtypes):
    return [(bits, group, *SHAPES[(i + j) % len(SHAPES)], m, dtype)
            for i, (bits, group) in enumerate(FORMATS) for j, (m, dtype) in enumerate(m_dtypes)]


def _check(kernel, make, bits, group, n, k, m, dtype, **kwargs) -> None:
    w = make.weight(n, k, bits, group, dtype)
    x = make.act(m, k, dtype=dtype)
    out = poisoned(m, n, dtype=dtype)
    got = kernel(x, *w.args, out=out, **kwargs)
    assert got is out
    ref = reference.matmul(x.float(), *w.args)
    err = rel_err(out, ref)
    assert err < TOL[dtype], f"{kernel.__name__} int{bits}/g{group} N={n} K={k} M={m} {dtype}: rel err {err:.2e}"


@pytest.mark.parametrize("bits,group,n,k,m,dtype", cases(GEMV_M_DTYPES))
def test_gemv(make, bits, group, n, k, m, dtype) -> None:
    _check(gemv, make, bits, group, n, k, m, dtype)


@pytest.mark.parametrize("group", [128, 64, 30])
@pytest.mark.parametrize("m,dtype", [(1, torch.float16), (4, torch.float32)])
def test_gemv_three_bit(make, group, m, dtype) -> None:
    # bit planes, 32 codes per unit of three words: groups of 128 or 64 hold whole units, 30 makes units straddle
    _check(gemv, make, 3, group, 72, 600, m, dtype)
    _check(gemv, make, 3, group, 40, 577, m, dtype, split_k=3)


@pytest.mark.parametrize("bits,group,n,k,m,dtype", cases(M_DTYPES))
def test_gemm_splitk(make, bits, group, n, k, m, dtype) -> None:
    _check(gemm_splitk, make, bits, group, n, k, m, dtype)


@pytest.mark.parametrize("bits,group,n,k,m,dtype", cases(M_DTYPES))
def test_gemm_dequant(make, bits, group, n, k, m, dtype) -> None:
    _check(gemm_dequant, make, bits, group, n, k, m, dtype)


@pytest.mark.parametrize("bits,group", FORMATS)
def test_gemm_dequant_every_candidate_config(make, bits, group) -> None:
    """Each configuration the tuner may pick (both ways of unpacking codes) computes the same product."""
    from bitsmith.kernels.gemm_dequant import candidates

    n, k, m = 72, 576, 20
    configs = candidates(m, n, k, bits, group)
    assert {c["UNPACK"] for c in configs} == {0, 1}
    for config in configs:
        _check(gemm_dequant, make, bits, group, n, k, m, torch.float16, config=config)


SPLIT_CONFIGS = {
    gemv: dict(BLOCK_N=64, BLOCK_KW=16, num_warps=4, num_stages=1, waves=1),
    gemm_splitk: dict(BLOCK_M=16, BLOCK_N=64, BLOCK_KW=16, num_warps=4, num_stages=1, waves=1),
}


@pytest.mark.parametrize("kernel", [gemv, gemm_splitk])
@pytest.mark.parametrize("split", [1, 3])
def test_split_k_writes_every_partial(make, kernel, split) -> None:
    """A forced split (1: straight to the output; 3: partials in a poisoned workspace, then reduced)."""
    n, k, m = 40, 380, 2  # 48 packed rows at INT4: three K blocks of 16 words
    w = make.weight(n, k, 4, 128)
    x = make.act(m, k)
    workspace = poisoned(3 * m * n + 7)
    out = poisoned(m, n)
    kernel(x, *w.args, out=out, split_k=split, workspace=workspace, config=SPLIT_CONFIGS[kernel])
    assert rel_err(out, reference.matmul(x, *w.args)) < TOL[torch.float32]
    if split > 1:
        assert not torch.isnan(workspace[: split * m * n]).any(), "a split left its partials unwritten"


def test_group_not_a_power_of_two(make) -> None:
    """Group 576 (one group per row here) and INT8 with group 100 (not a multiple of 16)."""
    for kernel, bits, group, k in [(gemv, 4, 576, 576), (gemm_splitk, 8, 100, 300), (gemm_dequant, 4, 576, 576)]:
        _check(kernel, make, bits, group, 24, k, 3, torch.float32)


def test_rows_with_a_gap_between_them(make) -> None:
    """x may be a row-strided view (a slice of a wider tensor); only the last stride must be 1."""
    w = make.weight(24, 200, 4, 128)
    wide = make.act(6, 300)
    x = wide[:, 50:250]
    for kernel in (gemv, gemm_splitk, gemm_dequant):
        out = kernel(x[:3] if kernel is gemv else x, *w.args)
        ref = reference.matmul((x[:3] if kernel is gemv else x).contiguous(), *w.args)
        assert rel_err(out, ref) < TOL[torch.float32]


def test_gemv_rejects_large_batches(make) -> None:
    w = make.weight(16, 64, 4, 64)
    with pytest.raises(ValueError, match="M<=4"):
        gemv(make.act(5, 64), *w.args)
