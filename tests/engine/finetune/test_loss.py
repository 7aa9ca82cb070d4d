"""Chunked cross-entropy: same loss and gradient as the full-vocabulary computation, ignored targets skipped."""

from __future__ import annotations

import random

import pytest
import torch

from bitsmith.engine.finetune.loss import chunk_tokens, chunked_lm_loss
from bitsmith.engine.finetune.packing import IGNORE


@pytest.mark.parametrize("softcap", [None, 7.0])
def test_chunked_loss_and_gradient_match_the_full_computation(softcap: float | None) -> None:
    b, t, h, v = 2, random.randint(5, 30), 16, random.randint(40, 90)
    hidden = torch.randn(b, t, h, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, h, dtype=torch.float64)
    targets = torch.randint(0, v, (b, t))
    targets[torch.rand(b, t) < 0.3] = IGNORE
    loss = chunked_lm_loss(hidden, weight, targets, chunk=random.randint(1, 7), softcap=softcap)
    (loss * 0.5).backward()

    h2 = hidden.detach().clone().requires_grad_(True)
    logits = h2 @ weight.t()
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, v), targets.reshape(-1), ignore_index=IGNORE,
                                            reduction="sum")
    (ref * 0.5).backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(hidden.grad, h2.grad, atol=1e-6)


def test_no_scored_tokens_gives_zero_and_chunk_size_follows_the_vocabulary() -> None:
    hidden = torch.randn(1, 4, 8, requires_grad=True)
    loss = chunked_lm_loss(hidden, torch.randn(10, 8), torch.full((1, 4), IGNORE))
    assert loss.item() == 0.0
    loss.backward()
    assert chunk_tokens(128256) == 523 and chunk_tokens(49152) == 1365
