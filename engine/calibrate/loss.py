"""The block reconstruction loss: mean squared error, with the weight of massive-activation tokens capped.

Many LLMs keep a few "massive activations" in the residual stream, on the first token of a sequence (the
attention sink) and on some delimiters: on SmolLM2-135M from block 11 on, the first token's RMS is about
990 against about 6 for the others, and it carries 99 % of a plain MSE between the quantized and the
full-precision block outputs, so tuning would spend itself on that one token. With `cap` = k, a token
whose target RMS r_t exceeds k times the sample's median token RMS m gets the weight (k·m / r_t)², i.e.
it counts as much as a token of RMS k·m with the same relative error; other tokens keep weight 1.
The loss is Σ_t w_t·‖ŷ_t − y_t‖² / (H·Σ_t w_t), the plain MSE when cap is None (or no token exceeds it).

Measured (tests/benchmarks/bench_calibrate.py, CPU "demo" preset, all-INT4/g128 SmolLM2-135M, held-out
perplexity over 16k tokens at window 512, full precision 15.29): plain MSE 16.84, cap 5 16.67; with the
cap the tuned blocks 11-29 end at 0.43-0.67 of their starting loss instead of 0.82-0.96.
"""

from __future__ import annotations

import torch


def token_weights(target: torch.Tensor, cap: float | None) -> torch.Tensor | None:
    """Weights [B, T] for target [B, T, H], or None when nothing is capped (plain MSE)."""
    if cap is None:
        return None
    rms = target.detach().float().square().mean(dim=-1).sqrt()  # [B, T]
    limit = cap * rms.median(dim=-1, keepdim=True).values.clamp(min=1e-12)
    if not bool((rms > limit).any()):
        return None
    return torch.where(rms > limit, (limit / rms).square(), torch.ones_like(rms))


def block_loss(out: torch.Tensor, target: torch.Tensor, cap: float | None) -> torch.Tensor:
    """Scalar loss between block outputs and targets [B, T, H] (see the module docstring)."""
    d = (out.float() - target.float()).square()
    w = token_weights(target, cap)
    if w is None:
        return d.mean()
    return (d.sum(dim=-1) * w).sum() / (w.sum() * d.shape[-1])


def loss_terms(out: torch.Tensor, target: torch.Tensor, cap: float | None) -> tuple[float, float]:
    """(weighted sum of squared errors, weighted element count) of a chunk, to average over many chunks."""
    d = (out.float() - target.float()).square().sum(dim=-1)
    w = token_weights(target, cap)
    if w is None:
        return float(d.sum()), float(d.numel() * out.shape[-1])
    return float((d * w).sum()), float(w.sum() * out.shape[-1])
