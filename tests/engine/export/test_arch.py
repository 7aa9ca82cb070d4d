"""Family facts: the Llama q/k permutation and llama3 RoPE factors follow llama.cpp's converter."""

import numpy as np
import pytest

from bitsmith.engine.errors import UnsupportedModelError
from bitsmith.engine.export.arch import family_for, llama3_rope_factors, qk_permutation


def _convert_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.mark.parametrize("n_head, hd", [(4, 16), (9, 64), (8, 128)])
def test_row_permutation_equals_the_converter_permute(n_head: int, hd: int) -> None:
    w = np.random.default_rng().normal(size=(n_head * hd, 5))
    assert np.array_equal(w[qk_permutation(n_head * hd, n_head)], _convert_permute(w, n_head))


def test_llama3_rope_factors() -> None:
    f = llama3_rope_factors({"rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 8192}, 128)
    assert f.shape == (64,) and f[0] == 1.0 and f[-1] == 8.0 and np.all(np.diff(f) >= 0)


def test_unknown_families_and_variants_are_refused() -> None:
    from transformers import AutoConfig

    with pytest.raises(UnsupportedModelError, match="gpt2"):
        family_for(AutoConfig.for_model("gpt2"))
    odd = AutoConfig.for_model("gemma2", head_dim=64, query_pre_attn_scalar=100)
    with pytest.raises(UnsupportedModelError, match="1/sqrt"):
        family_for(odd)
    assert family_for(AutoConfig.for_model("mistral", sliding_window=None)).arch == "llama"
