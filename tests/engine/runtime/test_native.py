"""The native backend on a quantized SmolLM2: the same tokens as transformers' generate, turns that reuse the
cache answer like a fresh session, seeds replay."""

import random

import pytest
import torch

from bitsmith.engine.runtime.native import NativeBackend
from bitsmith.engine.runtime.params import SamplingParams
from bitsmith.engine.runtime.session import ChatSession

pytestmark = pytest.mark.slow  # builds and runs the quantized SmolLM2 (minutes on two shared cores)

GREEDY = SamplingParams(temperature=0, repetition_penalty=1.0, max_tokens=12)


@pytest.fixture(scope="module")
def backend(smollm_int4) -> NativeBackend:
    return NativeBackend.load(str(smollm_int4), device="cpu")


def _question() -> str:
    topic = random.choice(["rivers", "the moon", "bread", "chess", "volcanoes", "owls", "glass"])
    return f"Tell me one fact about {topic}."


def test_loads_a_bitsmith_folder_dequantized_once_on_the_cpu(backend: NativeBackend, smollm_int4) -> None:
    info = backend.describe()
    assert info["quantized"] and info["dequantized_once"] and info["device"] == "cpu"
    assert info["n_ctx"] == 4096 and info["chat_template"] and abs(info["bpw"] - 4.17) < 0.05
    assert 2 in backend.eos_ids  # <|im_end|>, from the generation config


def test_greedy_answer_equals_transformers_generate(backend: NativeBackend) -> None:
    q = _question()
    session = ChatSession(backend, system="Answer briefly.")
    answer_ids = []
    for _ in session.send(q, GREEDY):
        pass
    prompt = backend.render(session.history()[:-1])
    with torch.inference_mode():
        out = backend.model.generate(torch.tensor([prompt]), max_new_tokens=GREEDY.max_tokens, do_sample=False,
                                     repetition_penalty=1.0)
    answer_ids = out[0, len(prompt):].tolist()
    want = backend.tokenizer.decode([t for t in answer_ids if t not in backend.eos_ids], skip_special_tokens=True)
    assert session.last.text == want.split("<|im_end|>")[0]


def test_a_second_turn_on_the_warm_cache_answers_like_a_fresh_session(backend: NativeBackend, smollm_int4) -> None:
    warm = ChatSession(backend)
    list(warm.send(_question(), GREEDY))
    second = "And another one?"
    list(warm.send(second, GREEDY))
    assert len(backend.decoder.tokens) > warm.last.prompt_tokens  # the cache kept the first turn
    fresh_backend = NativeBackend.load(str(smollm_int4), device="cpu")
    cold = ChatSession(fresh_backend, messages=warm.messages[:-2])
    list(cold.send(second, GREEDY))
    assert cold.last.text == warm.last.text


def test_the_same_seed_gives_the_same_sampled_answer(backend: NativeBackend) -> None:
    seed = random.randrange(2**31)
    params = SamplingParams(temperature=1.0, seed=seed, max_tokens=10)
    a = ChatSession(backend).ask("Say something.", params)
    b = ChatSession(backend).ask("Say something.", params)
    assert a == b


def test_the_quantized_torch_path_gives_the_dense_copy_s_tokens(smollm_int4, backend: NativeBackend) -> None:
    kept = NativeBackend.load(str(smollm_int4), device="cpu", dense=False)
    assert not kept.describe()["dequantized_once"]
    q = _question()
    params = SamplingParams(temperature=0, repetition_penalty=1.0, max_tokens=4)
    assert ChatSession(kept).ask(q, params) == ChatSession(backend).ask(q, params)
