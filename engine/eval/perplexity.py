"""Perplexity of a causal LM over a token stream, in windows of a stated length and stride.

Each window sees up to `window` tokens of context; only the tokens not already scored by the
previous window count (the usual sliding-window recipe), so stride == window gives disjoint windows
and a smaller stride gives every scored token more context. The numbers are comparable only at
the same window, stride and tokens: the result carries all three.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from bitsmith.engine.errors import BadInputError


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity with what it was measured on, so two results can be checked for comparability."""

    ppl: float
    nll: float
    tokens: int
    windows: int
    window: int
    stride: int

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)


@torch.no_grad()
def perplexity(
    model: nn.Module,
    token_ids: torch.Tensor,
    window: int = 512,
    stride: int | None = None,
    max_tokens: int | None = None,
    on_window: Callable[[int, int], None] | None = None,
) -> PerplexityResult:
    """exp(mean NLL) of `model` over the 1-D `token_ids`, scored window by window."""
    stride = stride or window
    if window < 2 or not 0 < stride <= window:
        raise BadInputError(f"bad window {window} / stride {stride}", "use window >= 2 and 0 < stride <= window")
    ids = token_ids.flatten()
    if max_tokens:
        ids = ids[:max_tokens]
    if ids.numel() < 2:
        raise BadInputError(f"only {ids.numel()} tokens to score", "give a longer evaluation text")
    device = next(model.parameters()).device
    starts = list(range(0, max(ids.numel() - 1, 1), stride))
    total_nll, total_tokens, scored_until = 0.0, 0, 0
    for i, begin in enumerate(starts):
        end = min(begin + window, ids.numel())
        chunk = ids[begin:end].to(device).unsqueeze(0)
        logits = model(chunk).logits[0, :-1].float()
        targets = chunk[0, 1:]
        nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        first_new = max(scored_until - begin - 1, 0)  # skip targets an earlier window already scored
        nll = nll[first_new:]
        if not torch.isfinite(nll).all():
            raise ValueError(f"non-finite loss in window {i} (tokens {begin}..{end}): the model outputs NaN/Inf")
        total_nll += float(nll.sum())
        total_tokens += nll.numel()
        scored_until = end
        if on_window:
            on_window(i + 1, len(starts))
        if end == ids.numel():
            starts = starts[: i + 1]
            break
    mean = total_nll / total_tokens
    return PerplexityResult(math.exp(mean), mean, total_tokens, len(starts), window, stride)
