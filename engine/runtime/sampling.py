"""Choosing the next token from logits: repetition penalty, temperature, top-k, top-p, min-p, seeded draws.

The order is the one Hugging Face `generate` uses: penalty, temperature, then the top-k, top-p and min-p
filters on the tempered distribution. Everything stays on the logits' device; one `.item()` per token.
"""

from __future__ import annotations

import torch

from .params import SamplingParams


def make_generator(device: torch.device | str, seed: int | None) -> torch.Generator:
    """A random generator on `device`, seeded with `seed` (a fresh random seed when None)."""
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    return gen


def apply_repetition_penalty(logits: torch.Tensor, recent: torch.Tensor, penalty: float) -> torch.Tensor:
    """Divide positive and multiply negative logits of the `recent` token ids by `penalty` (in place)."""
    if penalty == 1.0 or recent.numel() == 0:
        return logits
    ids = torch.unique(recent.to(logits.device))
    picked = logits[ids]
    logits[ids] = torch.where(picked > 0, picked / penalty, picked * penalty)
    return logits


def filtered_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The distribution after temperature, top-k, top-p and min-p (float32, sums to 1); needs temperature > 0."""
    logits = logits.float() / params.temperature
    vocab = logits.shape[-1]
    if 0 < params.top_k < vocab:
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_p, dim=-1) - sorted_p  # mass of the tokens ranked above each one
        drop_sorted = before >= params.top_p  # the best token always survives (its `before` is 0)
        drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
    if params.min_p > 0.0:
        probs = probs.masked_fill(probs < params.min_p * probs.max(), 0.0)
    return probs / probs.sum()


def sample_next(
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None = None,
    recent: torch.Tensor | None = None,
) -> int:
    """The next token id for 1-D `logits` [vocab]; `recent` holds the ids the repetition penalty sees."""
    logits = logits.float().clone()
    if recent is not None:
        apply_repetition_penalty(logits, recent, params.repetition_penalty)
    if params.greedy:
        return int(torch.argmax(logits))
    probs = filtered_probs(logits, params)
    return int(torch.multinomial(probs, 1, generator=generator))
