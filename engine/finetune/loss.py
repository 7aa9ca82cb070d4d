"""Cross-entropy over the vocabulary in chunks of tokens, never holding the logits of the whole sequence.

`chunked_lm_loss(hidden, weight, targets)` returns the *sum* of the token losses of the scored positions.
Only scored positions go through the output layer (prompt tokens of instruction data cost nothing there).
The forward computes, chunk by chunk, the logits (fp32), the loss and the gradient to the hidden states,
(softmax - target) @ W, and keeps only that gradient ([T, H], the size of the hidden states); the output
layer is frozen, so its weight needs no gradient. Backward just scales the stored gradient: the logits are
computed once, not recomputed. Peak extra memory: one chunk of logits, chunk × vocab × 4 bytes × 2.

The target is one token per position (a label: Q-SFT) or a distribution over k tokens per position, given as
their ids and probabilities (a teacher's top k: end-to-end distillation, engine/calibrate/e2e.py). A label is the
k = 1 case with probability 1, so both run the same arithmetic. A teacher's top k leave out the rest of its
distribution: `target_rest` gives that mass per position, and the loss treats "any other token" as one more
category (the student's probability of it is its mass outside the k), so the target is the teacher's exact
distribution coarsened, not the top k renormalised, which would push every other token's probability to zero.
"""

from __future__ import annotations

import torch

from .packing import IGNORE

LOGIT_BUDGET = 1 << 26
"""Logit elements per chunk (256 MiB in fp32): 523 tokens of a 128k vocabulary, 1365 of a 49k one."""


def chunk_tokens(vocab: int, budget: int = LOGIT_BUDGET) -> int:
    """Tokens per chunk for a vocabulary size."""
    return max(16, budget // max(vocab, 1))


class _ChunkedLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, target_probs, target_rest, chunk, softcap,  # noqa: ANN001, ANN205
                compute_dtype):
        need_grad = ctx.needs_input_grad[0]
        weight = weight.to(compute_dtype or weight.dtype)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad = torch.zeros_like(hidden) if need_grad else None
        for i in range(0, hidden.shape[0], chunk):
            h = hidden[i: i + chunk]
            t = targets[i: i + chunk]  # [c, k] token ids
            p = target_probs[i: i + chunk]  # [c, k] their probabilities (each row sums to 1 with its rest)
            logits = (h.to(weight.dtype) @ weight.t()).to(torch.float32)
            if softcap:
                capped = torch.tanh(logits / softcap)
                logits = capped * softcap
            lse = torch.logsumexp(logits, dim=-1)
            z = logits.gather(1, t)
            if target_rest is None:
                total += (lse - (p * z).sum(1)).sum()
            else:  # -sum p_i (z_i - lse) with sum p_i = 1 - rest, then the rest's own term
                rest = target_rest[i: i + chunk]
                total += ((1.0 - rest) * lse - (p * z).sum(1)).sum()
                logits.scatter_(1, t, float("-inf"))  # the other tokens only: log of their mass, stably
                log_q_rest = torch.logsumexp(logits, dim=-1) - lse
                total -= torch.where(rest > 0, rest * log_q_rest, 0.0).sum()
            if need_grad:
                probs = torch.exp(logits.sub_(lse[:, None]))  # softmax, in place of the logits
                if target_rest is None:
                    probs.scatter_add_(1, t, -p)
                else:
                    # d/dz_j = q_j (1 - rest / q_rest) outside the k (their entries), q_j - p_j inside (scattered)
                    factor = 1.0 - rest / torch.exp(log_q_rest).clamp_min(1e-30)
                    probs.mul_(factor[:, None]).scatter_(1, t, torch.exp(z - lse[:, None]) - p)
                if softcap:
                    probs.mul_(1.0 - capped.square())
                grad[i: i + chunk] = (probs.to(weight.dtype) @ weight).to(hidden.dtype)
        ctx.save_for_backward(grad if need_grad else None)
        return total

    @staticmethod
    def backward(ctx, g):  # noqa: ANN001, ANN205 - autograd signature
        (grad,) = ctx.saved_tensors
        return (grad * g.to(grad.dtype) if grad is not None else None), None, None, None, None, None, None, None


def chunked_lm_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                    target_probs: torch.Tensor | None = None, target_rest: torch.Tensor | None = None,
                    chunk: int | None = None, softcap: float | None = None,
                    compute_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Sum of cross-entropy over the scored positions; hidden [..., H], weight [V, H].

    Labels: targets [...], positions with IGNORE are not scored. A distribution: targets [..., k] distinct token
    ids and target_probs [..., k] their probabilities, every position scored; the rows sum to 1, or to 1 - rest
    with `target_rest` [...] the probability of all other tokens together.
    `compute_dtype` is the dtype of the output-layer products (default: the weight's); softmax is fp32.
    """
    h = hidden.reshape(-1, hidden.shape[-1])
    if target_probs is None:
        t = targets.reshape(-1)
        keep = t != IGNORE
        h, t = h[keep], t[keep, None]
        p = torch.ones(t.shape, dtype=torch.float32, device=t.device)
    else:
        t = targets.reshape(h.shape[0], -1).long()
        p = target_probs.reshape(t.shape).float()
    rest = None if target_rest is None or target_probs is None else target_rest.reshape(h.shape[0]).float()
    if t.numel() == 0:
        return hidden.sum() * 0.0
    return _ChunkedLoss.apply(h, weight.detach(), t, p, rest, chunk or chunk_tokens(weight.shape[0]),
                              softcap or 0.0, compute_dtype)
