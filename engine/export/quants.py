"""GGML block encodings of Bitsmith's group-quantized weights: Q4_1 (exact) and Q2_K (re-fitted).

All functions take the weight as codes `q` uint8 [N, K] with per-group `scales` and `zeros` float32
[N, G] (w = (q - z) * s, groups of `group_size` along K), and return the GGML bytes uint8 [N, bytes/row].

Q4_1 (32 weights per block: fp16 d, fp16 m, 16 bytes of nibbles; w = d*q + m; byte j holds element j in
its low nibble and element j+16 in its high one) holds a group exactly when the group size is a multiple
of 32: every block of a group gets d = s and m = -s*z, and codes up to 15 fit a nibble, so INT4 and INT2
codes are carried over unchanged. The only rounding is m's to fp16.

Q2_K (256 weights per super-block: 16 sub-blocks of 16 weights with 4-bit scale and min codes, fp16 d and
dmin; w = d*sc*q - dmin*m, q in 0..3) cannot hold fp16 group scales exactly, so INT2 layers are
re-fitted: each sub-block starts from its group's (s, s*z), the 4-bit scale/min grid is searched per
super-block to minimise the squared error against the INT2 weight, and the codes are re-chosen for the
rounded grid. Rows must be a multiple of 256 long.
"""

from __future__ import annotations

import numpy as np

QK4_1 = 32
Q4_1_BYTES = 20
QK_K = 256
Q2_K_BYTES = 84


def q4_1_compatible(in_features: int, group_size: int, bits: int) -> bool:
    """Whether Q4_1 holds this layout exactly: codes fit 4 bits and groups tile into 32-weight blocks."""
    return bits <= 4 and in_features % QK4_1 == 0 and group_size % QK4_1 == 0


def q2_k_compatible(in_features: int, group_size: int, bits: int) -> bool:
    """Whether the Q2_K re-fit applies: 2-bit codes, rows a multiple of 256, groups made of whole sub-blocks."""
    return bits == 2 and in_features % QK_K == 0 and group_size % 16 == 0


def _expand(stat: np.ndarray, group_size: int, in_features: int, block: int) -> np.ndarray:
    """Per-group statistics [N, G] → per-block [N, K/block] (each block lies inside one group)."""
    starts = np.arange(0, in_features, block)
    return stat[:, starts // group_size]


def encode_q4_1(q: np.ndarray, scales: np.ndarray, zeros: np.ndarray, group_size: int) -> np.ndarray:
    """Q4_1 bytes [N, K/32*20] of w = (q - z) * s, exact up to fp16 rounding of m = -s*z."""
    n, k = q.shape
    if not q4_1_compatible(k, group_size, 4) or int(q.max(initial=0)) > 15:
        raise ValueError(f"Q4_1 cannot hold K={k}, group {group_size} exactly (needs multiples of {QK4_1})")
    nb = k // QK4_1
    s = _expand(scales.astype(np.float32), group_size, k, QK4_1)  # [N, nb]
    z = _expand(zeros.astype(np.float32), group_size, k, QK4_1)
    d = s.astype(np.float16)
    m = (-s * z).astype(np.float16)
    blocks = q.reshape(n, nb, QK4_1).astype(np.uint8)
    nibbles = blocks[..., :16] | (blocks[..., 16:] << np.uint8(4))  # [N, nb, 16]
    out = np.empty((n, nb, Q4_1_BYTES), dtype=np.uint8)
    out[..., 0:2] = d.reshape(n, nb, 1).view(np.uint8)
    out[..., 2:4] = m.reshape(n, nb, 1).view(np.uint8)
    out[..., 4:] = nibbles
    return out.reshape(n, nb * Q4_1_BYTES)


def _pack_q2_k(codes: np.ndarray, sc: np.ndarray, mn: np.ndarray, d: np.ndarray, dmin: np.ndarray) -> np.ndarray:
    """Lay out super-blocks: codes [B, 256] (0..3), sc/mn [B, 16] (0..15), d/dmin [B] float → [B, 84] bytes."""
    b = codes.shape[0]
    out = np.empty((b, Q2_K_BYTES), dtype=np.uint8)
    out[:, :16] = (sc.astype(np.uint8) & 0xF) | (mn.astype(np.uint8) << np.uint8(4))
    # element e = half*128 + j*32 + l sits in byte half*32 + l at bit 2*j
    c = codes.reshape(b, 2, 4, 32).astype(np.uint8)
    qs = c[:, :, 0] | (c[:, :, 1] << np.uint8(2)) | (c[:, :, 2] << np.uint8(4)) | (c[:, :, 3] << np.uint8(6))
    out[:, 16:80] = qs.reshape(b, 64)
    out[:, 80:82] = d.astype(np.float16).reshape(b, 1).view(np.uint8)
    out[:, 82:84] = dmin.astype(np.float16).reshape(b, 1).view(np.uint8)
    return out


def _fit_grid(values: np.ndarray, weights: np.ndarray, candidates: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `values` [B, 16] (>= 0): a step d and 4-bit codes minimising weighted squared error.

    Tries steps max/15 * (1 + t/candidates·0.5) for t in [-candidates/2, candidates/2]; returns (d [B], codes).
    """
    vmax = values.max(axis=1)
    best_err = np.full(values.shape[0], np.inf)
    best_d = np.where(vmax > 0, vmax / 15, 0.0)
    for t in range(-candidates // 2, candidates // 2 + 1):
        d = vmax / (15 + t * 0.5)
        with np.errstate(divide="ignore", invalid="ignore"):
            codes = np.clip(np.rint(np.where(d[:, None] > 0, values / d[:, None], 0)), 0, 15)
        err = (weights * (codes * d[:, None] - values) ** 2).sum(axis=1)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_d = np.where(better, d, best_d)
    d16 = best_d.astype(np.float16).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        codes = np.clip(np.rint(np.where(d16[:, None] > 0, values / d16[:, None], 0)), 0, 15)
    return d16, codes


def encode_q2_k(q: np.ndarray, scales: np.ndarray, zeros: np.ndarray, group_size: int) -> np.ndarray:
    """Q2_K bytes [N, K/256*84] approximating w = (q - z) * s (see the module docstring)."""
    n, k = q.shape
    if not q2_k_compatible(k, group_size, 2):
        raise ValueError(f"Q2_K needs rows that are a multiple of {QK_K} long and 2-bit codes (K={k})")
    w = (q.astype(np.float32) - _expand(zeros.astype(np.float32), group_size, k, 1)) * _expand(
        scales.astype(np.float32), group_size, k, 1
    )
    s16 = _expand(scales.astype(np.float32), group_size, k, 16)  # [N, K/16] per sub-block
    m16 = s16 * _expand(zeros.astype(np.float32), group_size, k, 16)
    nsb = k // QK_K
    w_sb = w.reshape(n * nsb, 16, 16)  # [B, sub-block, weight]
    s_sb = np.abs(s16.reshape(n * nsb, 16))
    m_sb = np.clip(m16.reshape(n * nsb, 16), 0, None)  # Q2_K mins are >= 0: w_min = -dmin*m <= 0
    # weight each sub-block's grid error by how much it moves the weights (16 weights, codes up to 3)
    weight = np.full_like(s_sb, 1.0)
    d, sc = _fit_grid(s_sb, weight)
    dmin, mn = _fit_grid(m_sb, weight)
    scale = (d[:, None] * sc)[:, :, None]
    offset = (dmin[:, None] * mn)[:, :, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        codes = np.where(scale > 0, np.rint((w_sb + offset) / scale), 0)
    codes = np.clip(codes, 0, 3).reshape(n * nsb, QK_K)
    return _pack_q2_k(codes, sc, mn, d, dmin).reshape(n, nsb * Q2_K_BYTES)
