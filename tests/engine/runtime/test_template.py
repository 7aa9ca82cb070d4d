"""Chat templates: the Jinja renderer matches transformers, refusals are clear, fallbacks work."""

import random

import pytest

from bitsmith.engine.errors import BadInputError
from bitsmith.engine.runtime.template import (
    PLAIN_TEMPLATE,
    TemplateError,
    check_messages,
    fold_system,
    render_template,
)


def _conversation(rng: random.Random) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": f"be brief #{rng.randrange(100)}"}] if rng.random() < 0.5 else []
    for i in range(rng.randint(1, 4)):
        msgs.append({"role": "user", "content": f"question {i} {rng.random():.3f} ünïcode"})
        msgs.append({"role": "assistant", "content": f"answer {i}\nwith lines"})
    msgs.append({"role": "user", "content": "last?"})
    return msgs


def test_renders_like_transformers_apply_chat_template(smollm_tok) -> None:
    tok = smollm_tok
    rng = random.Random(random.randrange(2**32))
    for _ in range(5):
        msgs = _conversation(rng)
        ours = render_template(tok.chat_template, msgs, special_tokens={"bos_token": tok.bos_token,
                                                                         "eos_token": tok.eos_token})
        theirs = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        assert ours == theirs


def test_a_template_that_raises_gives_a_template_error() -> None:
    tpl = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    with pytest.raises(TemplateError, match="System role not supported"):
        render_template(tpl, [{"role": "system", "content": "x"}])
    with pytest.raises(BadInputError, match="not valid Jinja"):
        render_template("{% if %}", [])


def test_fold_system_merges_it_into_the_first_user_turn() -> None:
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}]
    assert fold_system(msgs) == [{"role": "user", "content": "S\n\nU"}, {"role": "assistant", "content": "A"}]
    assert msgs[1]["content"] == "U"  # the input is not modified


def test_plain_template_is_a_readable_transcript() -> None:
    msgs = [{"role": "system", "content": "Sys"}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "?"}]
    text = render_template(PLAIN_TEMPLATE, msgs)
    assert text == "Sys\n\nUser: Hi\nAssistant: Hello\nUser: ?\nAssistant:"


@pytest.mark.parametrize("bad", ["hi", [{"role": "robot", "content": "x"}], [{"role": "user"}], [["user", "x"]]])
def test_malformed_messages_are_bad_input(bad: object) -> None:
    with pytest.raises(BadInputError):
        check_messages(bad)
