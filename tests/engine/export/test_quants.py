"""GGML block encodings: Q4_1 carries INT4/INT2 groups exactly, Q2_K has the layout llama.cpp decodes."""

import numpy as np
import pytest

from bitsmith.engine.export.quants import (
    _pack_q2_k,
    encode_q2_k,
    encode_q4_1,
    q2_k_compatible,
    q4_1_compatible,
)

gguf = pytest.importorskip("gguf")
from gguf.quants import dequantize  # noqa: E402


def _group_weights(rng: np.random.Generator, n: int, k: int, bits: int, g: int, integer_zeros: bool = True):
    q = rng.integers(0, 2**bits, (n, k)).astype(np.uint8)
    groups = -(-k // g)
    s = rng.uniform(1e-3, 5e-2, (n, groups)).astype(np.float16).astype(np.float32)
    if integer_zeros:
        z = rng.integers(0, 2**bits, (n, groups)).astype(np.float32)
    else:
        z = rng.uniform(0, 2**bits - 1, (n, groups)).astype(np.float16).astype(np.float32)
    idx = np.arange(k) // g
    w = (q.astype(np.float32) - z[:, idx]) * s[:, idx]
    return q, s, z, w


@pytest.mark.parametrize("bits, g, k", [(4, 128, 512), (4, 128, 576), (2, 64, 576), (4, 32, 96), (2, 64, 1536)])
def test_q4_1_is_exact_up_to_fp16_offsets(bits: int, g: int, k: int) -> None:
    rng = np.random.default_rng()
    q, s, z, w = _group_weights(rng, 24, k, bits, g, integer_zeros=bool(rng.integers(0, 2)))
    got = dequantize(encode_q4_1(q, s, z, g), gguf.GGMLQuantizationType.Q4_1)
    m = -s * z
    bound = np.abs(m).max() * 2.0**-11 + 1e-7  # half an fp16 ulp of the largest offset
    assert got.shape == w.shape and np.abs(got - w).max() <= bound
    # the codes themselves are carried over: decoding with m = 0 gives q * s
    assert q4_1_compatible(k, g, bits)


def test_layouts_that_do_not_tile_are_refused() -> None:
    assert not q4_1_compatible(100, 64, 4) and not q4_1_compatible(512, 48, 4) and not q4_1_compatible(512, 128, 8)
    assert q2_k_compatible(4096, 64, 2) and not q2_k_compatible(576, 64, 2) and not q2_k_compatible(512, 128, 4)
    with pytest.raises(ValueError):
        encode_q4_1(np.zeros((2, 100), np.uint8), np.ones((2, 2), np.float32), np.zeros((2, 2), np.float32), 64)


def test_q2_k_layout_matches_llama_cpp_decoding() -> None:
    rng = np.random.default_rng()
    b = 5
    codes = rng.integers(0, 4, (b, 256))
    sc, mn = rng.integers(0, 16, (b, 16)), rng.integers(0, 16, (b, 16))
    d = rng.uniform(1e-3, 1e-2, b).astype(np.float16).astype(np.float32)
    dmin = rng.uniform(1e-3, 1e-2, b).astype(np.float16).astype(np.float32)
    got = dequantize(_pack_q2_k(codes, sc, mn, d, dmin), gguf.GGMLQuantizationType.Q2_K)
    sub = np.repeat(np.arange(16), 16)
    want = d[:, None] * sc[:, sub] * codes - dmin[:, None] * mn[:, sub]
    assert np.allclose(got, want, atol=1e-6)


def test_q2_k_refit_stays_close_to_the_int2_weights() -> None:
    rng = np.random.default_rng()
    q, s, z, w = _group_weights(rng, 32, 1024, 2, 64)
    got = dequantize(encode_q2_k(q, s, z, 64), gguf.GGMLQuantizationType.Q2_K)
    rel = np.sqrt(((got - w) ** 2).mean() / (w**2).mean())
    # 4-bit scales and mins per 16 weights cost a few percent of the weights' RMS, not more
    assert rel < 0.06, rel
