"""On a CUDA GPU (run with BITSMITH_TEST_GPU=1 so Triton compiles instead of interpreting): every path in
float16 and bfloat16 on larger shapes, the backward and dequantize kernels, autograd, CUDA-graph capture,
and a speed sanity check. Skipped cleanly elsewhere."""

import os

import pytest
import torch
from kernel_testing import TOL, poisoned, rel_err

from bitsmith.kernels import reference
from bitsmith.kernels.dispatch import dequantize_kernel, quant_matmul, quant_matmul_autograd, run_path

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
                       reason="needs a CUDA GPU and BITSMITH_TEST_GPU=1 (Triton compiled, not interpreted)"),
]

DTYPES = [torch.float16, torch.bfloat16]
PATH_MS = [("gemv", 1), ("gemv", 3), ("splitk", 1), ("splitk", 16), ("splitk", 80), ("gemm", 16),
           ("gemm", 80), ("gemm", 300)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bits,group", [(4, 128), (2, 64), (8, 128)])
@pytest.mark.parametrize("n,k", [(1000, 576), (4096, 4096), (1024, 14336)])
def test_every_path(make, dtype, bits, group, n, k) -> None:
    w = make.weight(n, k, bits, group, torch.float16, "cuda")
    for path, m in PATH_MS:
        x = make.act(m, k, dtype=dtype, device="cuda")
        out = poisoned(m, n, dtype=dtype, device="cuda")
        run_path(path, x, *w.args, out=out)
        err = rel_err(out, reference.matmul(x.float(), *w.args))
        assert err < TOL[dtype], f"{path} M={m} int{bits} N={n} K={k} {dtype}: {err:.2e}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("group", [128, 60])
def test_three_bit_gemv_and_the_dense_path_above_it(make, dtype, group) -> None:
    w = make.weight(1000, 4096, 3, group, torch.float16, "cuda")
    for m in (1, 3, 4, 5, 80):
        x = make.act(m, 4096, dtype=dtype, device="cuda")
        err = rel_err(quant_matmul(x, *w.args), reference.matmul(x.float(), *w.args))
        assert err < TOL[dtype], f"int3/g{group} M={m} {dtype}: {err:.2e}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_and_dequantize(make, dtype) -> None:
    from bitsmith.kernels.backward import matmul_backward_input

    for bits, group in [(4, 128), (2, 64)]:
        w = make.weight(1000, 576, bits, group, torch.float16, "cuda")
        for m in (1, 3, 16, 80, 300):
            dy = make.act(m, 1000, dtype=dtype, device="cuda")
            out = poisoned(m, 576, dtype=dtype, device="cuda")
            matmul_backward_input(dy, *w.args, out=out)
            assert rel_err(out, reference.matmul_backward_input(dy.float(), *w.args)) < TOL[dtype]
        deq = dequantize_kernel(*w.args, dtype, out=poisoned(1000, 576, dtype=dtype, device="cuda"))
        assert rel_err(deq, reference.dequantize(*w.args)) < TOL[dtype]
    w = make.weight(1000, 576, 3, 128, torch.float16, "cuda")  # bit planes: the dequantize kernel only
    deq = dequantize_kernel(*w.args, dtype, out=poisoned(1000, 576, dtype=dtype, device="cuda"))
    assert rel_err(deq, reference.dequantize(*w.args)) < TOL[dtype]


def test_autograd_bf16(make) -> None:
    w = make.weight(512, 576, 4, 128, torch.float16, "cuda")
    x = make.act(4, 33, 576, dtype=torch.bfloat16, device="cuda").requires_grad_(True)
    seen = []
    y = quant_matmul_autograd(x, *w.args, weight_grad_hook=seen.append)
    gy = torch.randn_like(y)
    (y * gy).sum().backward()
    ref_dx = reference.matmul_backward_input(gy.float(), *w.args)
    assert rel_err(x.grad, ref_dx) < TOL[torch.bfloat16]
    ref_dw = gy.float().reshape(-1, 512).t() @ x.detach().float().reshape(-1, 576)
    assert rel_err(seen[0], ref_dw) < 1e-5


def test_cuda_graph_capture(make) -> None:
    """After a warm-up call (compilation, tuning), the paths replay inside a CUDA graph."""
    w = make.weight(4096, 4096, 4, 128, torch.float16, "cuda")
    xs = [make.act(m, 4096, dtype=torch.float16, device="cuda") for m in (1, 16, 256)]
    outs = [quant_matmul(x, *w.args) for x in xs]
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for x, out in zip(xs, outs, strict=True):
            quant_matmul(x, *w.args, out=out)
    for out in outs:
        out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    for x, out in zip(xs, outs, strict=True):
        assert rel_err(out, reference.matmul(x.float(), *w.args)) < TOL[torch.float16]


def test_speed_sanity(make) -> None:
    """At M=1 the fused GEMV reads 4x fewer bytes than cuBLAS fp16; it must at least beat dequant+matmul."""
    from triton.testing import do_bench

    w = make.weight(4096, 4096, 4, 128, torch.float16, "cuda")
    x = make.act(1, 4096, dtype=torch.float16, device="cuda")
    fused = do_bench(lambda: run_path("gemv", x, *w.args), return_mode="median")
    dense = do_bench(lambda: run_path("dense", x, *w.args), return_mode="median")
    assert fused < dense, f"GEMV {fused * 1e3:.1f} us is not faster than dequantize+matmul {dense * 1e3:.1f} us"


def test_the_tuned_path_is_eligible_and_correct(make) -> None:
    """quant_matmul times the eligible paths per shape on a GPU; whichever it keeps must be right."""
    from bitsmith.kernels.dispatch import eligible_paths
    from bitsmith.kernels.triton_utils import m_bucket, tuned_configs

    w = make.weight(2048, 1024, 4, 128, torch.float16, "cuda")
    for m in (1, 4, 16, 64, 256):
        x = make.act(m, 1024, dtype=torch.float16, device="cuda")
        out = quant_matmul(x, *w.args, out=poisoned(m, 2048, dtype=torch.float16, device="cuda"))
        assert rel_err(out, reference.matmul(x.float(), *w.args)) < TOL[torch.float16]
        picked = tuned_configs().get(("path", m_bucket(m), 2048, 1024, 4, 128, torch.float16, "cuda:0"))
        if picked is not None:
            assert picked["path"] in eligible_paths(m, 4, 128)
