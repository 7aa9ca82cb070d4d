"""Split by document, fitting to the sequence length, packing, and that packed rows keep examples apart."""

from __future__ import annotations

import random

import pytest
import torch

from bitsmith.engine.errors import BadInputError
from bitsmith.engine.finetune.data import Record
from bitsmith.engine.finetune.loss import chunked_lm_loss
from bitsmith.engine.finetune.packing import (
    IGNORE,
    BatchPlan,
    Row,
    eval_batches,
    fit_examples,
    make_batch,
    pack_rows,
    split_documents,
)
from bitsmith.engine.finetune.template import Example


def _example(n: int, vocab: int = 50, answer_from: int = 0) -> Example:
    ids = tuple(random.randrange(vocab) for _ in range(n))
    return Example(ids, tuple(i >= answer_from for i in range(n)))


def test_split_is_by_whole_document_seeded_and_disjoint() -> None:
    recs = [Record("text", text=f"doc {i}") for i in range(random.randint(20, 60))]
    train, held = split_documents(recs, 0.2, seed=3)
    assert len(held) == round(0.2 * len(recs)) and len(train) + len(held) == len(recs)
    assert not {r.text for r in train} & {r.text for r in held}
    assert split_documents(recs, 0.2, seed=3) == (train, held)
    assert split_documents(recs, 0.2, seed=4)[1] != held
    assert split_documents(recs, 0.0, seed=3) == (recs, [])
    with pytest.raises(BadInputError, match="single document"):
        split_documents(recs[:1], 0.1, seed=0)
    with pytest.raises(BadInputError, match="held-out fraction"):
        split_documents(recs, 1.0, seed=0)


def test_fit_truncates_chats_cuts_text_and_counts() -> None:
    seq = 16
    long_chat = _example(40, answer_from=10)  # answer starts inside the first 16 tokens: truncated, kept
    lost_chat = _example(40, answer_from=30)  # answer entirely past 16 tokens: dropped
    short_chat = _example(9, answer_from=4)
    text = _example(37)
    out, rep = fit_examples([long_chat, lost_chat, short_chat, text], ["chat", "chat", "chat", "text"], seq)
    assert rep.truncated == 2 and rep.dropped == 1 and rep.pieces == 1
    assert out[0].ids == long_chat.ids[:seq] and out[1] == short_chat
    pieces = out[2:]
    assert [len(p.ids) for p in pieces] == [16, 16, 5]
    assert tuple(i for p in pieces for i in p.ids) == text.ids
    assert rep.examples == len(out) and rep.tokens == sum(len(e.ids) for e in out)
    assert "2 longer than 16 tokens were truncated" in rep.describe(seq) and "1 dropped" in rep.describe(seq)


def test_packing_places_every_example_once_within_the_length() -> None:
    seq = random.randint(16, 64)
    examples = [_example(random.randint(2, seq)) for _ in range(random.randint(30, 120))]
    rows = pack_rows(examples, seq)
    members = sorted(i for r in rows for i in r.members)
    assert members == list(range(len(examples)))
    assert all(sum(len(examples[i].ids) for i in r.members) <= seq for r in rows)
    lower_bound = -(-sum(len(e.ids) for e in examples) // seq)
    assert len(rows) <= lower_bound * 1.25 + 1  # best-fit-decreasing packs nearly full rows


def test_batch_targets_never_cross_examples_and_respect_the_mask() -> None:
    examples = [_example(6, answer_from=3), _example(5), _example(4, answer_from=2)]
    b = make_batch([Row((0, 1)), Row((2,))], examples, pad_id=7)
    assert b.input_ids.shape == (2, 11) and b.n_tokens == 15
    assert b.position_ids[0].tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4]
    assert b.position_ids[1, :4].tolist() == [0, 1, 2, 3] and b.input_ids[1, 4:].eq(7).all()
    t = b.targets[0].tolist()
    e0, e1 = examples[0].ids, examples[1].ids
    assert t[:6] == [IGNORE, IGNORE, e0[3], e0[4], e0[5], IGNORE]  # tokens 3..5 trained; no target across
    assert t[6:] == [e1[1], e1[2], e1[3], e1[4], IGNORE]
    assert b.targets[1, 3:].eq(IGNORE).all() and b.n_targets == 3 + 4 + 2


def test_packed_rows_score_like_separate_sequences(make_tiny) -> None:
    model = make_tiny(vocab=50, layers=2)
    examples = [_example(random.randint(3, 12)) for _ in range(4)]
    with torch.no_grad():
        packed = make_batch([Row(tuple(range(4)))], examples, pad_id=0)
        h = model.model(input_ids=packed.input_ids, position_ids=packed.position_ids, use_cache=False)
        together = chunked_lm_loss(h.last_hidden_state, model.lm_head.weight, packed.targets)
        apart = 0.0
        for i in range(4):
            b = make_batch([Row((i,))], examples, pad_id=0)
            h = model.model(input_ids=b.input_ids, position_ids=b.position_ids, use_cache=False)
            apart += float(chunked_lm_loss(h.last_hidden_state, model.lm_head.weight, b.targets))
    assert float(together) == pytest.approx(apart, rel=1e-5)


def test_batch_plan_is_a_pure_function_of_seed_and_index() -> None:
    examples = [_example(random.randint(2, 10)) for _ in range(40)]
    rows = pack_rows(examples, 12)
    a, b = BatchPlan(rows, examples, 3, seed=5, pad_id=0), BatchPlan(rows, examples, 3, seed=5, pad_id=0)
    idx = [random.randrange(100) for _ in range(10)]
    for i in idx:
        assert torch.equal(a.micro_batch(i).input_ids, b.micro_batch(i).input_ids)
    epoch = [tuple(a.micro_batch(i).input_ids[0].tolist()) for i in range(a.batches_per_epoch)]
    assert len(set(epoch)) == a.batches_per_epoch  # one epoch visits different rows
    with pytest.raises(BadInputError, match="no training examples"):
        BatchPlan([], [], 1, 0, 0)


def test_eval_batches_are_capped_and_fixed() -> None:
    examples = [_example(random.randint(2, 10)) for _ in range(50)]
    all_b = eval_batches(examples, 16, 0, 0)
    assert sum(b.n_targets for b in all_b) == sum(len(e.ids) - 1 for e in examples)
    some = eval_batches(examples, 16, 40, 0)
    assert sum(b.input_ids.numel() for b in some[:-1]) < 40 <= sum(b.input_ids.numel() for b in some)
    assert all(torch.equal(x.input_ids, y.input_ids) for x, y in zip(some, all_b))
