"""Sampling: the filters keep exactly the tokens they should, draws follow the distribution, seeds replay."""

import torch

from bitsmith.engine.runtime.params import SamplingParams
from bitsmith.engine.runtime.sampling import apply_repetition_penalty, filtered_probs, make_generator, sample_next


def _params(**kw: object) -> SamplingParams:
    base = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0)
    base.update(kw)
    return SamplingParams(**base)


def test_greedy_is_argmax_and_ignores_the_generator() -> None:
    logits = torch.randn(500)
    assert sample_next(logits, _params(temperature=0)) == int(logits.argmax())


def test_top_k_keeps_the_k_best_and_renormalises() -> None:
    logits = torch.randn(300)
    k = int(torch.randint(1, 50, ()))
    probs = filtered_probs(logits, _params(top_k=k))
    kept = set(torch.nonzero(probs).flatten().tolist())
    assert kept == set(torch.topk(logits, k).indices.tolist())
    assert torch.isclose(probs.sum(), torch.tensor(1.0))


def test_top_p_keeps_the_smallest_prefix_reaching_p() -> None:
    logits = torch.randn(200) * 3
    p = float(torch.empty(()).uniform_(0.2, 0.9))
    probs = filtered_probs(logits, _params(top_p=p))
    full = torch.softmax(logits, -1)
    order = torch.argsort(full, descending=True)
    cum = torch.cumsum(full[order], 0)
    n = int((cum < p).sum()) + 1  # tokens needed to reach p
    assert set(torch.nonzero(probs).flatten().tolist()) == set(order[:n].tolist())


def test_min_p_drops_tokens_below_a_share_of_the_best() -> None:
    logits = torch.randn(200) * 2
    probs = filtered_probs(logits, _params(min_p=0.1))
    full = torch.softmax(logits, -1)
    kept = set(torch.nonzero(full >= 0.1 * full.max()).flatten().tolist())
    assert set(torch.nonzero(probs).flatten().tolist()) == kept


def test_repetition_penalty_lowers_seen_tokens_both_signs() -> None:
    logits = torch.tensor([2.0, -2.0, 1.0, 0.5])
    out = apply_repetition_penalty(logits.clone(), torch.tensor([0, 1, 1]), 2.0)
    assert out.tolist() == [1.0, -4.0, 1.0, 0.5]


def test_draws_follow_the_tempered_distribution() -> None:
    logits = torch.randn(6)
    temp = 0.7
    gen = make_generator("cpu", int(torch.randint(0, 2**31, ())))
    n = 6000
    counts = torch.zeros(6)
    for _ in range(n):
        counts[sample_next(logits, _params(temperature=temp), gen)] += 1
    expected = torch.softmax(logits / temp, -1)
    assert (counts / n - expected).abs().max() < 0.025


def test_the_same_seed_replays_the_same_tokens_and_another_seed_does_not() -> None:
    logits = torch.randn(1000)
    seed = int(torch.randint(0, 2**31, ()))

    def run(s: int) -> list[int]:
        gen = make_generator("cpu", s)
        return [sample_next(logits, _params(), gen) for _ in range(40)]

    assert run(seed) == run(seed)
    assert run(seed) != run(seed + 1)
