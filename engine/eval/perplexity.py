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
def scored_ids(token_ids: torch.Tensor, window: int, stride: int | None,
               max_tokens: int | None) -> tuple[torch.Tensor, int]:
    """(the 1-D tokens to score, the stride) after checking the window settings; BadInputError when unusable."""
    stride = stride or window
    if window < 2 or not 0 < stride <= window:
        raise BadInputError(f"bad window {window} / stride {stride}", "use window >= 2 and 0 < stride <= window")
    ids = token_ids.flatten()
    if max_tokens:
        ids = ids[:max_tokens]
    if ids.numel() < 2:
        raise BadInputError(f"only {ids.numel()} tokens to score", "give a longer evaluation text")
    return ids, stride


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
    ids, stride = scored_ids(token_ids, window, stride, max_tokens)
    device = next(model.parameters()).device
    plan = window_plan(ids.numel(), window, stride)
    total_nll, total_tokens = 0.0, 0
    for i, (begin, end, first_new) in enumerate(plan):
        chunk = ids[begin:end].to(device).unsqueeze(0)
        logits = model(chunk).logits[0, :-1].float()
        s, n = window_nll(logits, chunk[0, 1:], first_new, f"window {i} (tokens {begin}..{end})")
        total_nll += s
        total_tokens += n
        if on_window:
            on_window(i + 1, len(plan))
    mean = total_nll / total_tokens
    return PerplexityResult(math.exp(mean), mean, total_tokens, len(plan), window, stride)


def window_plan(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first new target) of every window over `n_tokens` tokens: targets before `first new` were
    scored by an earlier window; the last window is the first that reaches the end."""
    plan, scored_until = [], 0
    for begin in range(0, max(n_tokens - 1, 1), stride):
        end = min(begin + window, n_tokens)
        plan.append((begin, end, max(scored_until - begin - 1, 0)))
        scored_until = end
        if end == n_tokens:
            break
    return plan


def window_nll(logits: torch.Tensor, targets: torch.Tensor, first_new: int, what: str) -> tuple[float, int]:
    """(summed NLL, count) of the targets from `first_new` on, given float logits [T-1, V] and targets [T-1]."""
    nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")[first_new:]
    if not torch.isfinite(nll).all():
        raise ValueError(f"non-finite loss in {what}: the model outputs NaN/Inf")
    return float(nll.sum()), nll.numel()
