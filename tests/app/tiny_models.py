"""Tiny real models for the app's tests, built once per machine in a child process (the test process stays free of
torch, like the app): a random-weight Llama with SmolLM2's real tokenizer (from the bundled GGUF) as

* `hf/`   a Hugging Face float folder (what the Quantize wizard compresses), and
* `q/`    a quantized Bitsmith folder (what the Fine-tune page trains and the native chat runs).

The rows of the end-of-turn tokens are zero in the (tied) embedding, so their logit is 0 while the best of the
others is positive: greedy decoding never ends an answer by itself, and a test can stop it when it likes.

    python tests/app/tiny_models.py OUT_DIR [LAYERS]
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve()
CACHE = Path(os.environ.get("BITSMITH_APP_TEST_CACHE", Path(tempfile.gettempdir()) / "bitsmith-app-tests"))
SPECS = {"q_proj": "int4_g64", "k_proj": "int4_g64", "v_proj": "int4_g64", "o_proj": "int2_g64",
         "gate_proj": "int2_g64", "up_proj": "int4_g64", "down_proj": "int2_g64"}


def tiny_models(layers: int = 4) -> Path:
    """The cached folder holding hf/ and q/ (built on first use; keyed by this file's content and `layers`)."""
    key = hashlib.sha256(HERE.read_bytes() + str(layers).encode()).hexdigest()[:12]
    folder = CACHE / f"tiny-{layers}-{key}"
    if (folder / "q" / "bitsmith.json").is_file() and (folder / "hf" / "config.json").is_file():
        return folder
    tmp = Path(tempfile.mkdtemp(prefix=f".tiny-{key}-", dir=_mkdir(CACHE)))
    env = {**os.environ, "BITSMITH_HOME": str(tmp / "home")}
    run = subprocess.run([sys.executable, str(HERE), str(tmp / "out"), str(layers)], env=env, capture_output=True,
                         text=True, timeout=600)
    if run.returncode != 0:
        raise RuntimeError(f"building the tiny models failed:\n{run.stdout}\n{run.stderr}")
    try:
        os.replace(tmp / "out", folder)
    except OSError:  # another test run built it meanwhile
        pass
    shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _build(out: Path, layers: int) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from bitsmith.engine.model import bundled_model_path
    from bitsmith.engine.quant.linear import QuantLinear
    from bitsmith.engine.quant.store import round_kept_, save_quantized, set_submodule

    gguf = bundled_model_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      bos_token_id=tok.bos_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    ends = {i for i in (tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>"),
                        tok.convert_tokens_to_ids("<|endoftext|>")) if isinstance(i, int) and i >= 0}
    with torch.no_grad():
        for i in ends:
            model.get_input_embeddings().weight[i].zero_()
    round_kept_(model)
    model.save_pretrained(out / "hf", safe_serialization=True)
    tok.save_pretrained(out / "hf")
    for name, mod in list(model.named_modules()):
        if isinstance(mod, torch.nn.Linear) and ".layers." in f".{name}":
            set_submodule(model, name, QuantLinear.from_linear(mod, SPECS[name.rsplit(".", 1)[-1]]))
    save_quantized(model, tok, out / "q", source={"model": "tiny-llama"}, recipe={"method": "rtn"})


if __name__ == "__main__":
    _build(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 4)
