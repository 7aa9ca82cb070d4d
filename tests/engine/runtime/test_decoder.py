"""CachedDecoder: the static KV cache gives the logits a full forward gives, with prefix reuse and rewinds."""

import pytest
import torch
from chat_models import quantize_some, tiny_model

from bitsmith.engine.runtime.decoder import CachedDecoder


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(int(torch.randint(0, 2**31, ())))
    m = tiny_model("llama", vocab_size=300, hidden_size=128, intermediate_size=256)
    quantize_some(m, {"q_proj": "int4_g128", "down_proj": "int2_g64", "up_proj": "int4_g128"})
    return m


def _full(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0]


@pytest.mark.parametrize("trim", [True, False], ids=["filled-positions", "whole-cache"])
def test_prefill_then_steps_match_full_forwards(model: torch.nn.Module, trim: bool) -> None:
    ids = torch.randint(0, 300, (40,)).tolist()
    full = _full(model, ids)
    dec = CachedDecoder(model, n_ctx=64, prefill_chunk=7, trim_attention=trim)  # chunked prefill, several forwards
    got = [dec.prefill(ids[:25])]
    got += [dec.step(t) for t in ids[25:]]
    want = full[24:]
    assert torch.allclose(torch.stack(got), want, atol=2e-4, rtol=1e-4)
    assert dec.tokens == ids


@pytest.mark.parametrize("trim", [True, False], ids=["filled-positions", "whole-cache"])
def test_a_new_prompt_reuses_the_shared_prefix_and_rewinds_the_rest(model: torch.nn.Module, trim: bool) -> None:
    a = torch.randint(0, 300, (30,)).tolist()
    b = a[:18] + torch.randint(0, 300, (9,)).tolist()
    dec = CachedDecoder(model, n_ctx=64, trim_attention=trim)
    dec.prefill(a)
    calls = []
    handle = model.register_forward_pre_hook(lambda mod, args, kwargs: calls.append(kwargs["input_ids"].shape[1]),
                                             with_kwargs=True)
    try:
        logits = dec.prefill(b)
    finally:
        handle.remove()
    assert calls == [9]  # only the new tail was fed
    assert torch.allclose(logits, _full(model, b)[-1], atol=2e-4, rtol=1e-4)
    # the same prompt again: one token is re-fed to get its logits
    assert torch.allclose(dec.prefill(b), _full(model, b)[-1], atol=2e-4, rtol=1e-4)
    # a shorter, unrelated prompt starts over
    c = torch.randint(0, 300, (5,)).tolist()
    assert torch.allclose(dec.prefill(c), _full(model, c)[-1], atol=2e-4, rtol=1e-4)


def test_limits_and_stops(model: torch.nn.Module) -> None:
    dec = CachedDecoder(model, n_ctx=16, prefill_chunk=4)
    with pytest.raises(ValueError, match="holds 16"):
        dec.prefill(list(range(17)))
    asked = []
    assert dec.prefill(list(range(12)), should_stop=lambda: asked.append(1) or True) is None
    assert asked and len(dec.tokens) == 4  # stopped after the first chunk
    dec.prefill(list(range(16)))
    with pytest.raises(ValueError, match="full"):
        dec.step(1)
    assert not dec.use_graph  # CUDA graphs only on CUDA
