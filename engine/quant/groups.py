"""Group views of a weight [N, K] as [N, G, g] (last group padded) and the fake-quantization helpers on them.

Statistics live as [G, N] (the storage layout, kernels/reference.py); on group views they are [N, G, 1].
The padding of a short last group repeats the row's last weight, so min/max are unaffected; every
mean or error over a group uses `group_mask` so the padding never counts.
"""

from __future__ import annotations

import torch

SCALE_FLOOR = 2.0**-20
"""Smallest scale ever produced: keeps w / s finite for constant groups and stays non-zero in fp16."""


def group_view(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """[N, K] -> [N, G, g]; a short last group is padded with copies of the row's last weight."""
    n, k = w.shape
    groups = -(-k // group_size)
    pad = groups * group_size - k
    if pad:
        w = torch.cat([w, w[:, -1:].expand(n, pad)], dim=1)
    return w.reshape(n, groups, group_size)


def group_mask(in_features: int, group_size: int, device: torch.device | str) -> torch.Tensor | None:
    """[G, g] float mask of real (not padded) positions, or None when K is a multiple of g."""
    groups = -(-in_features // group_size)
    if groups * group_size == in_features:
        return None
    idx = torch.arange(groups * group_size, device=device).reshape(groups, group_size)
    return (idx < in_features).to(torch.float32)


def group_counts(in_features: int, group_size: int, device: torch.device | str) -> torch.Tensor:
    """[G, 1] number of real weights in each group (the last may be short)."""
    groups = -(-in_features // group_size)
    starts = torch.arange(groups, device=device) * group_size
    return (in_features - starts).clamp(max=group_size).to(torch.float32).unsqueeze(-1)


def to_grouped_stats(stats: torch.Tensor) -> torch.Tensor:
    """Storage layout [G, N] -> group-view layout [N, G, 1]."""
    return stats.t().unsqueeze(-1)


def from_grouped_stats(stats: torch.Tensor) -> torch.Tensor:
    """Group-view layout [N, G, 1] -> storage layout [G, N] (contiguous)."""
    return stats.squeeze(-1).t().contiguous()


def group_mean(x: torch.Tensor, mask: torch.Tensor | None, counts: torch.Tensor) -> torch.Tensor:
    """Mean over the last axis of a group view [N, G, g] counting only real positions -> [N, G, 1]."""
    if mask is not None:
        x = x * mask
    return x.sum(dim=-1, keepdim=True) / counts


def fake_quant(wg: torch.Tensor, s: torch.Tensor, z: torch.Tensor, maxq: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes round(w / s + z) clamped to [0, maxq] and their dequantized values (q - z) * s."""
    q = torch.clamp(torch.round(wg / s + z), 0, maxq)
    return q, (q - z) * s


def group_sq_error(
    wg: torch.Tensor, s: torch.Tensor, z: torch.Tensor, maxq: int, mask: torch.Tensor | None
) -> torch.Tensor:
    """Sum of squared reconstruction errors per group [N, G] (padding excluded)."""
    _, wr = fake_quant(wg, s, z, maxq)
    err = (wg - wr).square_()
    if mask is not None:
        err = err * mask
    return err.sum(dim=-1)
