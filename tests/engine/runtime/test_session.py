"""ChatSession over a scripted backend: context trimming, stops, history that is never lost."""

import random
import threading

import pytest
from fake_backend import FakeBackend

from bitsmith.engine.errors import BadInputError
from bitsmith.engine.runtime.params import SamplingParams
from bitsmith.engine.runtime.session import MIN_ANSWER_ROOM, ChatSession

CHATML = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</>{% endfor %}"
          "{% if add_generation_prompt %}<assistant>{% endif %}")


def test_answer_streams_and_history_grows() -> None:
    s = ChatSession(FakeBackend(template=CHATML, script="Paris."), system="Be brief.")
    pieces = list(s.send("Capital of France?"))
    assert "".join(pieces) == "Paris." and s.last.reason == "eos"
    assert s.history() == [{"role": "system", "content": "Be brief."},
                           {"role": "user", "content": "Capital of France?"},
                           {"role": "assistant", "content": "Paris."}]
    assert s.last.completion_tokens == len("Paris.") + 1 and s.last.prompt_tokens > 0


def test_oldest_turns_leave_the_prompt_but_never_the_system_prompt_or_the_history() -> None:
    rng = random.Random(random.randrange(2**32))
    backend = FakeBackend(n_ctx=300, template=CHATML, script="ok")
    s = ChatSession(backend, system="SYSTEM-PROMPT", params=SamplingParams(max_tokens=20))
    for i in range(12):
        list(s.send(f"message {i} " + "z" * rng.randint(5, 30)))
    prompt = "".join(chr(c) for c in backend.prompts[-1])
    assert prompt.startswith("<system>SYSTEM-PROMPT</>")
    assert "message 11" in prompt and "message 0 " not in prompt
    assert len(backend.prompts[-1]) + 20 <= 300 and s.last.dropped_messages > 0
    assert s.last.dropped_messages % 2 == 0  # whole user/assistant turns
    assert len(s.history()) == 1 + 2 * 12  # everything is still in the history


def test_a_message_longer_than_the_context_is_a_clear_error_and_changes_nothing() -> None:
    s = ChatSession(FakeBackend(n_ctx=120, template=CHATML), system="S")
    list(s.send("hello"))
    before = s.history()
    with pytest.raises(BadInputError, match="context holds 120") as info:
        list(s.send("y" * 200))
    assert "--ctx" in info.value.hint and s.history() == before


def test_max_tokens_and_context_end_an_endless_answer() -> None:
    s = ChatSession(FakeBackend(n_ctx=200, eos=False, template=CHATML))
    text = "".join(s.send("go", SamplingParams(max_tokens=7)))
    assert s.last.reason == "max_tokens" and s.last.completion_tokens == 7 and len(text) == 7
    s2 = ChatSession(FakeBackend(n_ctx=60, eos=False, template=CHATML))
    list(s2.send("go", SamplingParams(max_tokens=500)))
    assert s2.last.reason == "context_full" and s2.last.prompt_tokens + s2.last.completion_tokens == 60
    assert 60 - s2.last.prompt_tokens >= MIN_ANSWER_ROOM


def test_stop_strings_cut_the_answer_and_models_without_template_stop_at_the_next_turn() -> None:
    s = ChatSession(FakeBackend(script="Sure. ### rest", template=CHATML))
    assert "".join(s.send("q", SamplingParams(stop=("###",)))) == "Sure. " and s.last.reason == "stop_string"
    plain = ChatSession(FakeBackend(script=" Fine.\nUser: and you?"))  # no template: plain transcript
    assert "".join(plain.send("How are you?")) == " Fine." and plain.last.reason == "stop_string"


def test_stop_from_another_thread_keeps_the_partial_answer() -> None:
    backend = FakeBackend(eos=False, template=CHATML, n_ctx=100000)
    s = ChatSession(backend, params=SamplingParams(max_tokens=100000))
    stream = s.send("talk")
    first = next(stream)
    threading.Thread(target=s.stop).start()
    rest = "".join(stream)
    assert s.last.reason == "stopped" and s.last.text == first + rest
    assert s.messages[-1] == {"role": "assistant", "content": s.last.text} and len(s.last.text) < 100000


def test_a_reader_that_walks_away_still_leaves_the_turn_in_the_history() -> None:
    s = ChatSession(FakeBackend(eos=False, template=CHATML))
    stream = s.send("talk")
    shown = next(stream) + next(stream)
    stream.close()
    assert s.messages[-1] == {"role": "assistant", "content": shown} and s.last.reason == "stopped"


def test_templates_without_a_system_role_get_it_folded_into_the_first_message() -> None:
    backend = FakeBackend(template=CHATML, system_ok=False)
    s = ChatSession(backend, system="RULES")
    list(s.send("hi"))
    assert "".join(chr(c) for c in backend.prompts[-1]).startswith("<user>RULES\n\nhi</>")


def test_load_takes_a_leading_system_message_and_rejects_a_late_one() -> None:
    s = ChatSession(FakeBackend(template=CHATML))
    s.load([{"role": "system", "content": "S"}, {"role": "user", "content": "u"},
            {"role": "assistant", "content": "a"}])
    assert s.system == "S" and len(s.messages) == 2
    with pytest.raises(BadInputError):
        s.load([{"role": "user", "content": "u"}, {"role": "system", "content": "late"}])
    with pytest.raises(BadInputError):
        list(s.send("   "))
