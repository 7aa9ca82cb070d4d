"""quant_matmul: path choice, any leading dims, the torch path off-GPU, and clear errors for bad input."""

import pytest
import torch
from kernel_testing import TOL, poisoned, rel_err

from bitsmith.kernels import dispatch, reference
from bitsmith.kernels.dispatch import (
    choose_path,
    dequantize,
    eligible_paths,
    quant_matmul,
    quant_matmul_backward_input,
)

CPU = torch.device("cpu")


def test_paths_by_batch_size() -> None:
    assert [choose_path(m, CPU, 4, 128) for m in (1, 4, 5, 64, 65, 4096)] == [
        "gemv", "gemv", "splitk", "splitk", "gemm", "gemm"]
    assert choose_path(1, CPU, 4, 100) == "dense"  # a packed word would straddle two groups
    assert choose_path(500, CPU, 8, 100) == "splitk"  # words fit, K blocks of 16+ do not
    assert choose_path(1, torch.device("meta"), 4, 128) == "torch"


def test_tuner_times_dequantize_then_cublas_only_for_large_batches() -> None:
    # measured on an H100 (kernels.md): dequantize + cuBLAS beat the fused GEMM at M=64..256 on several shapes
    from bitsmith.kernels.dispatch import DENSE_MIN_M, eligible_paths

    assert "dense" not in eligible_paths(1, 4, 128) and "dense" not in eligible_paths(DENSE_MIN_M - 1, 2, 64)
    assert {"gemm", "dense"} <= set(eligible_paths(256, 4, 128))
    assert "dense" in eligible_paths(DENSE_MIN_M, 2, 64)


@pytest.mark.parametrize("lead", [(), (1,), (2, 3), (2, 40)])
def test_leading_dims_and_out(make, lead) -> None:
    w = make.weight(72, 200, 4, 128)
    x = make.act(*lead, 200)
    out = poisoned(*lead, 72)
    assert quant_matmul(x, *w.args, out=out) is out
    assert rel_err(out, reference.matmul(x, *w.args)) < TOL[torch.float32]
    y = quant_matmul(x, *w.args)
    assert y.shape == (*lead, 72) and y.dtype == x.dtype
    assert rel_err(y, out) < TOL[torch.float32]


def test_non_contiguous_activation(make) -> None:
    w = make.weight(24, 64, 2, 64)
    x = make.act(64, 6).t()  # [6, 64], last stride 6
    assert rel_err(quant_matmul(x, *w.args), reference.matmul(x.contiguous(), *w.args)) < TOL[torch.float32]


def test_group_that_straddles_words_uses_dense_path(make) -> None:
    w = make.weight(40, 250, 4, 100)
    x = make.act(2, 250, dtype=torch.float16)
    assert rel_err(quant_matmul(x, *w.args), reference.matmul(x.float(), *w.args)) < TOL[torch.float16]


@pytest.mark.parametrize("m", [1, 3, 5, 80])
def test_three_bit_codes_forward_and_backward(make, m) -> None:
    # the tensor-core kernels do not unpack bit planes: the GEMV serves batch <= 4 (576 inputs: the last group
    # of 128 is partial, 18 units of 32 codes), the Triton dequantize kernel then a matmul the rest
    w = make.weight(40, 576, 3, 128)
    path = "gemv" if m <= dispatch.GEMV_MAX_M else "dense"
    assert choose_path(m, CPU, 3, 128) == path and eligible_paths(m, 3, 128) == [path]
    x = make.act(m, 576)
    assert rel_err(quant_matmul(x, *w.args), reference.matmul(x, *w.args)) < TOL[torch.float32]
    dy = make.act(m, 40)
    ref = reference.matmul_backward_input(dy, *w.args)
    assert rel_err(quant_matmul_backward_input(dy, *w.args), ref) < TOL[torch.float32]
    assert rel_err(dequantize(*w.args, dtype=torch.float32), reference.dequantize(*w.args)) < TOL[torch.float32]


def test_backward_dispatch(make) -> None:
    w = make.weight(40, 250, 4, 100)  # no tensor-core tiling for this group: dense fallback
    dy = make.act(2, 3, 40)
    ref = reference.matmul_backward_input(dy, *w.args)
    assert rel_err(quant_matmul_backward_input(dy, *w.args), ref) < TOL[torch.float32]
    w = make.weight(40, 256, 2, 64)
    dy = make.act(7, 40)
    out = poisoned(7, 256)
    assert quant_matmul_backward_input(dy, *w.args, out=out) is out
    assert rel_err(out, reference.matmul_backward_input(dy, *w.args)) < TOL[torch.float32]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_torch_path_without_interpreter(make, monkeypatch, dtype) -> None:
    """On a CPU with no interpreter (or no GPU), quant_matmul dequantizes with torch and matmuls in x's dtype."""
    monkeypatch.delenv("TRITON_INTERPRET")
    assert choose_path(1, CPU, 4, 128) == "torch"
    w = make.weight(24, 200, 4, 128)
    x = make.act(2, 3, 200, dtype=dtype)
    y = quant_matmul(x, *w.args)
    assert y.dtype == dtype and y.shape == (2, 3, 24)
    assert rel_err(y, reference.matmul(x.float(), *w.args)) < TOL[dtype]


def test_empty_batch(make) -> None:
    w = make.weight(24, 64, 4, 64)
    assert quant_matmul(make.act(0, 64), *w.args).shape == (0, 24)


def _bad(make):
    w = make.weight(24, 100, 4, 64)
    return w, make.act(3, 100)


def test_rejects_bad_activation_dtype(make) -> None:
    w, x = _bad(make)
    with pytest.raises(ValueError, match="float64"):
        quant_matmul(x.double(), *w.args)
    with pytest.raises(ValueError, match="int32"):
        quant_matmul(x.int(), *w.args)
    with pytest.raises(ValueError, match="interpreter"):
        quant_matmul(x.bfloat16(), *w.args)


def test_rejects_mismatched_shapes(make) -> None:
    w, x = _bad(make)
    with pytest.raises(ValueError, match=r"\(3, 99\).*100"):
        quant_matmul(x[:, :99], *w.args)
    q, s, z, bits, g, k = w.args
    with pytest.raises(ValueError, match=r"qweight has shape \(13, 24\).*14 packed rows"):
        quant_matmul(make.act(3, 105), q, s, z, bits, g, 105)
    with pytest.raises(ValueError, match=r"scales has shape \(2, 23\), expected \(2, 24\)"):
        quant_matmul(x, q, s[:, :23].contiguous(), z, bits, g, k)
    with pytest.raises(ValueError, match=r"zeros has shape \(1, 24\), expected \(2, 24\)"):
        quant_matmul(x, q, s, z[:1].contiguous(), bits, g, k)
    with pytest.raises(ValueError, match="out is"):
        quant_matmul(x, *w.args, out=torch.empty(3, 25))


def test_rejects_bad_codes_and_formats(make) -> None:
    w, x = _bad(make)
    q, s, z, bits, g, k = w.args
    with pytest.raises(ValueError, match="int32"):
        quant_matmul(x, q.to(torch.int64), s, z, bits, g, k)
    with pytest.raises(ValueError, match="int32"):
        quant_matmul(x, q.to(torch.uint8), s, z, bits, g, k)
    with pytest.raises(ValueError, match="bits must be one of"):
        quant_matmul(x, q, s, z, 5, g, k)
    with pytest.raises(ValueError, match="group_size must be positive"):
        quant_matmul(x, q, s, z, bits, 0, k)
    with pytest.raises(ValueError, match="scales must be floating point"):
        quant_matmul(x, q, s.to(torch.int32), z, bits, g, k)
    with pytest.raises(ValueError, match="contiguous"):
        quant_matmul(x, q.t().contiguous().t(), s, z, bits, g, k)


def test_rejects_mixed_devices(make) -> None:
    w, x = _bad(make)
    q, s, z, bits, g, k = w.args
    with pytest.raises(ValueError, match="x is on meta but the weight is on cpu"):
        quant_matmul(x.to("meta"), *w.args)
    with pytest.raises(ValueError, match="zeros is on meta but qweight is on cpu"):
        quant_matmul(x, q, s, z.to("meta"), bits, g, k)


def test_dispatch_imports_without_triton() -> None:
    """The module must load where triton is missing (macOS); kernels are imported on first use."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['triton'] = None; import torch; "
            "from bitsmith.kernels import dispatch; "
            "print(dispatch.choose_path(1, torch.device('cpu'), 4, 128))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "torch"
    assert dispatch.PATHS[0] == "torch"
