"""Tiny random Llama models for calibration tests; every test starts from a fresh, printed seed."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

VOCAB = 128


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is as fast, and far faster when other jobs share the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def fresh_seed() -> int:
    seed = torch.seed() % 2**31  # reseeds torch's global generator from the OS
    torch.manual_seed(seed)
    print(f"torch seed: {seed} (replay with torch.manual_seed)")
    return seed


def _tiny_llama(seed: int, attn: str = "sdpa", layers: int = 3) -> LlamaForCausalLM:
    """hidden 96 and intermediate 200: with g128 both K's have a short last group, with g64 96 and 200 do too."""
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=96,
        intermediate_size=200,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        attn_implementation=attn,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


def _token_batch(n: int, length: int, seed: int) -> torch.Tensor:
    """n random windows of `length` token ids."""
    return torch.randint(0, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def tiny_llama():
    """Factory: tiny_llama(seed, attn="sdpa", layers=3) -> a random LlamaForCausalLM (same seed, same weights)."""
    return _tiny_llama


@pytest.fixture
def token_batch():
    """Factory: token_batch(n, length, seed) -> LongTensor [n, length] of random token ids."""
    return _token_batch
