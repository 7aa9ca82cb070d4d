"""Helpers for kernel tests (imported as `kernel_testing`; conftest.py registers it).

Fresh random packed weights, NaN-poisoned buffers, relative error.

Error bounds, ||out - ref|| / ||ref|| against the float32 torch reference on the same (upcast) inputs:
float32 1e-5 (the kernels accumulate in float32; seen ~3e-7), float16 3e-3 (one float16 rounding of
the output and, in tensor-core paths, of the dequantized weight: ~3e-4 seen), bfloat16 2e-2 (GPU only).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from bitsmith.kernels.pack import pack_codes

TOL = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}

# (bits, group size): the two base formats and INT8.
FORMATS = [(4, 128), (2, 64), (8, 128)]
# (N, K): K not a multiple of the group (576 = 4.5 x 128) nor of the codes per word (198), N not a
# multiple of any block size.
SHAPES = [(72, 576), (100, 198)]
# Where operands live: the CPU under the Triton interpreter; the GPU when the kernels are compiled
# (BITSMITH_TEST_GPU=1), so the same tests check the compiled kernels too.
DEVICE = "cuda" if os.environ.get("BITSMITH_TEST_GPU") == "1" and torch.cuda.is_available() else "cpu"


@dataclass
class QWeight:
    """A random packed weight and what it was made from."""

    qweight: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    bits: int
    group_size: int
    in_features: int
    codes: torch.Tensor

    @property
    def args(self) -> tuple:
        return (self.qweight, self.scales, self.zeros, self.bits, self.group_size, self.in_features)

    @property
    def out_features(self) -> int:
        return self.qweight.shape[1]


class Maker:
    """Draws fresh random operands from one seeded generator; the seed is reported on failure."""

    def __init__(self) -> None:
        self.seed = int(torch.seed()) % (2**63)
        self.gen = torch.Generator().manual_seed(self.seed)

    def weight(self, n: int, k: int, bits: int, group_size: int, dtype=torch.float32, device=None) -> QWeight:
        codes = torch.randint(0, 1 << bits, (n, k), generator=self.gen, dtype=torch.int64)
        groups = (k + group_size - 1) // group_size
        top = (1 << bits) - 1
        scales = (torch.rand(groups, n, generator=self.gen) * 1.5 + 0.25) / top
        zeros = torch.rand(groups, n, generator=self.gen) * top  # fractional, as calibrated zeros may be
        device = device or DEVICE
        return QWeight(pack_codes(codes, bits).to(device), scales.to(dtype).to(device),
                       zeros.to(dtype).to(device), bits, group_size, k, codes)

    def act(self, *shape: int, dtype=torch.float32, device=None) -> torch.Tensor:
        return torch.randn(*shape, generator=self.gen).to(dtype).to(device or DEVICE)


def poisoned(*shape: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """A buffer full of NaN: any element a kernel forgets to write fails the comparison."""
    return torch.full(shape, float("nan"), dtype=dtype, device=device or DEVICE)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64; NaN anywhere gives NaN (which fails every bound)."""
    out64, ref64 = out.double().cpu(), ref.double().cpu()
    return float((out64 - ref64).norm() / ref64.norm().clamp_min(1e-30))
