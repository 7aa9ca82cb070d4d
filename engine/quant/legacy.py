"""Reading folders written by an older Bitsmith: the format-1 3-bit packing, ten codes to an int32 word.

Format 1 (before bit planes) packed 3-bit codes ten to a word (bits 0..29, the top two bits unused), both
the weight codes along K and integer zero codes along N. Format 2 stores them as bit planes
(kernels/pack.py). A format-1 folder is converted in memory when it is loaded; the files stay as they are.
"""

from __future__ import annotations

import torch

from .pack import pack_codes
from .spec import QuantSpec

V1_THREE_BIT_PER_WORD = 10


def unpack_v1_three_bit(words: torch.Tensor, count: int) -> torch.Tensor:
    """Format-1 words [ceil(count/10), R] -> int64 codes [count, R]."""
    shifts = torch.arange(0, 3 * V1_THREE_BIT_PER_WORD, 3, dtype=torch.int64).view(1, -1, 1)
    w = words.to(torch.int64).unsqueeze(1) & 0xFFFFFFFF
    return ((w >> shifts) & 7).reshape(-1, words.shape[1])[:count]


def upgrade_v1_tensors(state: dict[str, torch.Tensor], prefix: str, spec: QuantSpec, out_features: int,
                       in_features: int) -> None:
    """Repack one 3-bit layer's format-1 tensors in `state` (keys under `prefix`) into format 2, in place."""
    if spec.bits != 3:
        return
    key = prefix + "qweight"
    if key in state:
        codes = unpack_v1_three_bit(state[key], in_features)  # [K, N]
        state[key] = pack_codes(codes.t(), 3)
    key = prefix + "zero_codes"
    if spec.integer_zeros and key in state:
        zeros = unpack_v1_three_bit(state[key].t().contiguous(), out_features)  # [N, G]
        state[key] = pack_codes(zeros.t(), 3).t().contiguous()
