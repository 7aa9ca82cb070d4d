"""Capture: block 0's inputs and each block's call arguments reproduce the model's own forward."""

from __future__ import annotations

import pytest
import torch

from bitsmith.engine.calibrate.capture import call_block, capture_block_inputs, windows_tensor
from bitsmith.engine.errors import BadInputError
from bitsmith.engine.model import find_blocks


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_shapes_and_kwargs(fresh_seed: int, attn: str, tiny_llama, token_batch) -> None:
    model = tiny_llama(fresh_seed, attn)
    ids = token_batch(5, 24, fresh_seed)
    cap = capture_block_inputs(model, ids)
    assert cap.hidden.shape == (5, 24, 96) and cap.samples == 5
    assert len(cap.block_kwargs) == len(cap.block_args) == 3
    for kw in cap.block_kwargs:
        assert "past_key_values" not in kw and kw.get("use_cache", False) is False
        cos, sin = kw["position_embeddings"]
        assert cos.shape == sin.shape == (1, 24, 96 // 4)
        assert kw["position_ids"].shape == (1, 24)
        if attn == "eager":  # the eager path needs an explicit causal mask, batch dimension 1
            mask = kw["attention_mask"]
            upper = torch.ones(24, 24, dtype=torch.bool).triu(1)
            assert mask.shape == (1, 1, 24, 24)
            assert bool((mask[0, 0][upper] < -1e30).all()) and bool((mask[0, 0][~upper] == 0).all())
    # the embedding output is what block 0 sees
    torch.testing.assert_close(cap.hidden, model.model.embed_tokens(ids), rtol=0, atol=0)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_replaying_blocks_reproduces_logits(fresh_seed: int, attn: str, tiny_llama, token_batch) -> None:
    model = tiny_llama(fresh_seed, attn)
    ids = token_batch(6, 20, fresh_seed + 1)
    cap = capture_block_inputs(model, ids)
    h = cap.hidden
    with torch.no_grad():
        for b in find_blocks(model):  # a batch of 6 with batch-1 arguments: they broadcast
            h = call_block(b.module, h, cap.block_args[b.index], cap.block_kwargs[b.index])
        logits = model.lm_head(model.model.norm(h))
        ref = model(ids).logits
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)


def test_blocks_restored_even_on_error(fresh_seed: int, tiny_llama) -> None:
    model = tiny_llama(fresh_seed)
    before = list(model.model.layers)
    bad = torch.full((2, 8), 10_000)  # token ids beyond the vocabulary: the embedding raises
    with pytest.raises(IndexError):
        capture_block_inputs(model, bad)
    assert list(model.model.layers) == before


def test_bad_windows() -> None:
    with pytest.raises(BadInputError, match="different lengths"):
        windows_tensor([[1, 2, 3], [1, 2]])
    with pytest.raises(BadInputError, match="no calibration samples"):
        windows_tensor([])
    with pytest.raises(BadInputError, match="at least 2 tokens"):
        windows_tensor(torch.zeros(3, 1, dtype=torch.long))
    assert windows_tensor([[1, 2], [3, 4]]).dtype == torch.long


ARCHS = {
    # layer types differ per block: sliding-window masks (and Gemma3's local rotary) must be per block
    "qwen2": ("Qwen2", {"use_sliding_window": True, "sliding_window": 6, "max_window_layers": 1,
                        "layer_types": ["full_attention", "sliding_attention", "sliding_attention"]}),
    "mistral": ("Mistral", {"sliding_window": 6}),
    "gemma": ("Gemma", {"head_dim": 16}),
    "gemma3": ("Gemma3Text", {"head_dim": 16, "sliding_window": 6, "sliding_window_pattern": 2}),
    "phi3": ("Phi3", {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}),
}


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_other_architectures(arch: str, attn: str, fresh_seed: int) -> None:
    import transformers

    prefix, extra = ARCHS[arch]
    cfg = getattr(transformers, f"{prefix}Config")(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, **extra,
    )
    cfg._attn_implementation = attn
    cls = getattr(transformers, f"{prefix.removesuffix('Text')}ForCausalLM")
    model = cls(cfg).eval()
    ids = torch.randint(0, 128, (3, 16))
    cap = capture_block_inputs(model, ids)
    h = cap.hidden
    with torch.no_grad():
        for b in find_blocks(model):
            h = call_block(b.module, h, cap.block_args[b.index], cap.block_kwargs[b.index])
        ref = model.model(ids).last_hidden_state
    torch.testing.assert_close(model.model.norm(h), ref, rtol=1e-5, atol=1e-5)
