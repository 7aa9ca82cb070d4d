"""SamplingParams: validation with actionable messages, dict round trips."""

import random

import pytest

from bitsmith.engine.errors import BadInputError
from bitsmith.engine.runtime.params import SamplingParams


@pytest.mark.parametrize(
    "field, value",
    [("temperature", -0.1), ("top_p", 0.0), ("top_p", 1.5), ("min_p", 1.0), ("top_k", -1),
     ("repetition_penalty", 0.0), ("max_tokens", 0), ("seed", 1.5), ("temperature", float("nan")),
     ("top_k", 2.5), ("stop", [""]), ("repeat_last_n", -3)],
)
def test_bad_values_are_rejected_with_the_field_named(field: str, value: object) -> None:
    with pytest.raises(BadInputError) as info:
        SamplingParams(**{field: value})
    assert field in str(info.value) and info.value.hint


def test_from_dict_overrides_a_base_and_rejects_unknown_names() -> None:
    seed = random.randrange(1000)
    base = SamplingParams(temperature=0.3, max_tokens=77)
    p = SamplingParams.from_dict({"seed": seed, "stop": ["</s>", "###"]}, base=base)
    assert (p.temperature, p.max_tokens, p.seed, p.stop) == (0.3, 77, seed, ("</s>", "###"))
    assert SamplingParams.from_dict(p.to_dict()) == p
    with pytest.raises(BadInputError, match="temprature"):
        SamplingParams.from_dict({"temprature": 1.0})


def test_a_single_stop_string_becomes_a_tuple_and_zero_temperature_is_greedy() -> None:
    p = SamplingParams(stop="\n\n", temperature=0)
    assert p.stop == ("\n\n",) and p.greedy and not SamplingParams().greedy
