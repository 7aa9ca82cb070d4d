"""Chat rendering with the model's template: the loss mask covers exactly the answers; the fallback template."""

from __future__ import annotations

import copy
import random
import string

from bitsmith.engine.finetune.data import Record
from bitsmith.engine.finetune.template import FALLBACK_TEMPLATE, ensure_chat_template, tokenize_record


def _words(n: int) -> str:
    return " ".join("".join(random.choices(string.ascii_lowercase, k=random.randint(2, 7))) for _ in range(n))


def _trained_text(tok, ex) -> list[str]:  # noqa: ANN001
    """Decoded runs of trained tokens."""
    runs, cur = [], []
    for i, m in zip(ex.ids, ex.mask, strict=True):
        if m:
            cur.append(i)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    if cur:
        runs.append(tok.decode(cur))
    return runs


def test_loss_mask_covers_each_answer_and_its_end_marker(tokenizer) -> None:
    answers = [_words(random.randint(1, 6)) for _ in range(2)]
    msgs = (("system", "Be useful."), ("user", _words(4)), ("assistant", answers[0]), ("user", _words(3)),
            ("assistant", answers[1]))
    ex = tokenize_record(tokenizer, Record("chat", messages=msgs))
    assert len(ex.ids) == len(ex.mask)
    assert _trained_text(tokenizer, ex) == [f"{a}<|im_end|>\n" for a in answers]
    # the tokens are the full rendering of the chat template, nothing added or lost
    full = tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in msgs], tokenize=False)
    assert tokenizer.decode(list(ex.ids)) == full


def test_text_records_train_on_everything_and_end_with_eos(tokenizer) -> None:
    text = _words(20)
    ex = tokenize_record(tokenizer, Record("text", text=text))
    assert all(ex.mask) and ex.ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(list(ex.ids[:-1])).strip() == text
    assert ex.targets == len(ex.ids) - 1


def test_fallback_template_when_the_tokenizer_has_none(tokenizer) -> None:
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    assert ensure_chat_template(tok) is True
    assert tok.chat_template == FALLBACK_TEMPLATE
    assert ensure_chat_template(tok) is False  # already has one now
    answer = _words(3)
    ex = tokenize_record(tok, Record("chat", messages=(("user", "hello"), ("assistant", answer))))
    rendered = tok.decode(list(ex.ids))
    assert rendered.startswith("<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n")
    assert _trained_text(tok, ex) == [f"{answer}<|im_end|>{tok.eos_token}\n"]
    prompt = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
