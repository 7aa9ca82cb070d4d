"""Perplexity matches a direct computation, and sliding windows score each token exactly once."""

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from bitsmith.engine.errors import BadInputError
from bitsmith.engine.eval.perplexity import perplexity


@pytest.fixture(scope="module")
def tiny_model() -> LlamaForCausalLM:
    torch.manual_seed(torch.seed() % 2**31)
    cfg = LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256,
    )
    return LlamaForCausalLM(cfg).eval()


def test_single_window_equals_direct_loss(tiny_model: LlamaForCausalLM) -> None:
    ids = torch.randint(0, 97, (64,))
    with torch.no_grad():
        loss = tiny_model(ids[None], labels=ids[None]).loss
    res = perplexity(tiny_model, ids, window=64)
    assert res.tokens == 63 and res.windows == 1
    assert math.isclose(res.ppl, math.exp(float(loss)), rel_tol=1e-4)


def test_each_token_scored_once_with_overlap(tiny_model: LlamaForCausalLM) -> None:
    ids = torch.randint(0, 97, (150,))
    for window, stride in [(32, 16), (40, 7)]:
        res = perplexity(tiny_model, ids, window=window, stride=stride)
        assert res.tokens == 149, (window, stride)
    # disjoint windows (GPTQ's convention) cannot score the first token of each later window
    res = perplexity(tiny_model, ids, window=32, stride=32)
    assert res.windows == 5 and res.tokens == 149 - 4


def test_disjoint_windows_equal_mean_of_window_losses(tiny_model: LlamaForCausalLM) -> None:
    ids = torch.randint(0, 97, (96,))
    nll = 0.0
    with torch.no_grad():
        for b in (0, 32, 64):
            c = ids[b : b + 32][None]
            nll += float(tiny_model(c, labels=c).loss) * 31
    res = perplexity(tiny_model, ids, window=32)
    assert res.tokens == 93
    assert res.nll == pytest.approx(nll / 93, rel=1e-4)


def test_bad_window_is_a_clear_error(tiny_model: LlamaForCausalLM) -> None:
    with pytest.raises(BadInputError, match="window"):
        perplexity(tiny_model, torch.arange(10), window=1)


def test_scoring_builds_no_autograd_graph(tiny_model: LlamaForCausalLM) -> None:
    """Scoring keeps no activations for a backward pass (on SmolLM2 at window 512 a graph held ~1.7 GB)."""
    assert any(p.requires_grad for p in tiny_model.parameters())
    seen: list[bool] = []
    handle = tiny_model.register_forward_hook(lambda m, a, out: seen.append(out.logits.requires_grad))
    try:
        perplexity(tiny_model, torch.randint(0, 97, (100,)), window=32)
    finally:
        handle.remove()
    assert seen and not any(seen)
