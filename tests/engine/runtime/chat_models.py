"""Models for runtime and export tests (imported as `chat_models`; the conftests register it).

* `smollm_folder(layout)`: the bundled SmolLM2-135M-Instruct quantized by RTN and saved as a Bitsmith
  folder. Built once and cached under the system temp folder (converting the bundled GGUF takes ~40 s),
  keyed by the bundled file and the store format, so later test runs reuse it.
* `tiny_folder(...)`: a small random model of a given family with some QuantLinear layers, saved with
  SmolLM2's tokenizer (so llama.cpp can load its GGUF), built in seconds per test.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

LAYOUTS = ("int4", "mixed")


def cache_root() -> Path:
    """Where test models are kept between runs."""
    return Path(tempfile.gettempdir()) / "bitsmith-test-runtime"


def _key() -> str:
    from bitsmith.engine.model import bundled_model_path
    from bitsmith.engine.quant.store import FORMAT_VERSION

    p = bundled_model_path()
    return hashlib.sha256(f"{p}:{p.stat().st_size}:{FORMAT_VERSION}:v1".encode()).hexdigest()[:12]


def spec_for(layout: str, block: int, name: str) -> str:
    """int4: every linear INT4/g128. mixed (~3 bpw): MLP linears INT2/g64 in 3 of 4 blocks, the rest INT4/g128."""
    if layout == "mixed" and name.startswith("mlp.") and block % 4 != 0:
        return "int2_g64"
    return "int4_g128"


def smollm_folder(layout: str = "int4") -> Path:
    """The cached quantized SmolLM2 folder for `layout` (built on first use)."""
    from bitsmith.engine.model import find_blocks, load_model
    from bitsmith.engine.quant.linear import QuantLinear
    from bitsmith.engine.quant.store import is_quantized_folder, save_quantized, set_submodule

    if layout not in LAYOUTS:
        raise ValueError(layout)
    root = cache_root() / _key()
    out = root / f"smollm2-{layout}"
    if is_quantized_folder(out):
        return out
    root.mkdir(parents=True, exist_ok=True)
    old = os.environ.get("BITSMITH_HOME")
    os.environ["BITSMITH_HOME"] = str(cache_root() / "home")  # keeps the GGUF conversion between runs
    try:
        model, tok = load_model("bundled")
    finally:
        if old is None:
            os.environ.pop("BITSMITH_HOME", None)
        else:
            os.environ["BITSMITH_HOME"] = old
    for blk in find_blocks(model):
        for name, lin in blk.linears.items():
            spec = spec_for(layout, blk.index, name)
            set_submodule(model, f"{blk.name}.{name}", QuantLinear.from_linear(lin, spec, "rtn"))
    tmp = root / f".smollm2-{layout}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_quantized(model, tok, tmp, source={"model": "bundled"})
    if not is_quantized_folder(out):
        os.replace(tmp, out)
    shutil.rmtree(tmp, ignore_errors=True)
    return out


@functools.lru_cache(maxsize=1)
def smollm_tokenizer():  # noqa: ANN201 - a transformers tokenizer
    """SmolLM2's tokenizer, read by transformers from the bundled GGUF (seconds; no weights converted)."""
    from transformers import AutoTokenizer

    from bitsmith.engine.model import bundled_model_path

    path = bundled_model_path()
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def tiny_model(model_type: str, vocab_size: int, **overrides):  # noqa: ANN201 - a transformers model
    """A small random causal LM of `model_type` (llama, qwen2, qwen3, gemma, gemma2), fp32, seeded by the caller."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    base = dict(vocab_size=vocab_size, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, rms_norm_eps=1e-5,
                tie_word_embeddings=False)
    if model_type in ("gemma", "gemma2"):
        base.update(head_dim=64, tie_word_embeddings=True, hidden_activation="gelu_pytorch_tanh")
    if model_type == "gemma2":
        base.update(query_pre_attn_scalar=64, sliding_window=512, attn_logit_softcapping=50.0,
                    final_logit_softcapping=30.0)
    if model_type == "qwen3":
        base.update(head_dim=64)
    base.update(overrides)
    config = AutoConfig.for_model(model_type, **base)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():  # random but not degenerate: norms away from their init so "+1" bugs show
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5) if model_type not in ("gemma", "gemma2") else p.uniform_(-0.5, 0.5)
            elif name.endswith("bias"):
                p.normal_(0, 0.1)
    return model


def quantize_some(model, specs: dict[str, str]) -> None:  # noqa: ANN001
    """Replace the linears whose qualified name ends with a key of `specs` by QuantLinear of that format."""
    from torch import nn

    from bitsmith.engine.quant.linear import QuantLinear
    from bitsmith.engine.quant.store import set_submodule

    for name, mod in list(model.named_modules()):
        if not isinstance(mod, nn.Linear) or name.endswith("lm_head"):
            continue
        for suffix, spec in specs.items():
            if name.endswith(suffix):
                set_submodule(model, name, QuantLinear.from_linear(mod, spec, "rtn"))
                break
