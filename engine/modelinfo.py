"""What a model is made of, read without torch: shapes and parameter counts for the fit planner.

Sources: config.json alone (shapes computed from the architecture), safetensors headers (exact), a local
Hugging Face folder, or a GGUF file. The Hub client calls `ModelInfo.from_config(config, tensors,
model_id)` with shapes from the Hub's safetensors metadata. Linear layers inside decoder blocks are the
quantizable ones (`linear_params`); embeddings, norms, biases and `lm_head` stay 16-bit (`other_params`).
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from bitsmith.engine.errors import BadInputError, UnsupportedModelError

Tensors = Mapping[str, tuple[list[int], str]]

# Bytes per element of safetensors dtypes (also the names the Hub's safetensors metadata uses).
DTYPE_BYTES: dict[str, float] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "F4": 0.5,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}
_CONFIG_DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "float64": 8}

_MAX_HEADER = 100 * 2**20  # a safetensors header above 100 MiB is not a real one
_BLOCK_WEIGHT = re.compile(r"(?:^|\.)layers\.(\d+)\.(.+)\.weight$")


@dataclass(frozen=True)
class _Arch:
    """How one decoder-only family lays out a block (only what changes parameter counts)."""

    tie: bool = False                                 # transformers' default for tie_word_embeddings
    head_dim: int | None = None                       # default head_dim when config.json omits it
    qkv_bias: bool | str = False                      # True, or the config key that switches it on
    o_bias: bool | str = False
    mlp_bias: bool | str = False
    fused: bool = False                               # Phi-3: qkv_proj and gate_up_proj
    block_norms: int = 2                              # RMSNorms of hidden size per block
    qk_norm: str = ""                                 # "head": per-head q/k norms; "full": over all heads


_LLAMA_LIKE = _Arch(qkv_bias="attention_bias", o_bias="attention_bias", mlp_bias="mlp_bias")
ARCHITECTURES: dict[str, _Arch] = {
    "llama": _LLAMA_LIKE,
    "granite": _LLAMA_LIKE,
    "smollm3": replace(_LLAMA_LIKE, tie=True),
    "mistral": _Arch(),
    "qwen2": _Arch(qkv_bias=True),
    "qwen3": _Arch(qkv_bias="attention_bias", o_bias="attention_bias", qk_norm="head", head_dim=128),
    "phi3": _Arch(fused=True),
    "gemma": _Arch(tie=True, head_dim=256, qkv_bias="attention_bias", o_bias="attention_bias"),
    "gemma2": _Arch(tie=True, head_dim=256, qkv_bias="attention_bias", o_bias="attention_bias",
                    block_norms=4),
    "gemma3_text": _Arch(tie=True, head_dim=256, qkv_bias="attention_bias", o_bias="attention_bias",
                         block_norms=4, qk_norm="head"),
    "olmo2": _Arch(qkv_bias="attention_bias", o_bias="attention_bias", qk_norm="full"),
}

# GGUF `general.architecture` → Hugging Face model_type (llama.cpp files Mistral models as "llama").
GGUF_ARCHITECTURES = {
    "llama": "llama", "mistral": "mistral", "granite": "granite", "smollm3": "smollm3", "qwen2": "qwen2",
    "qwen3": "qwen3", "phi3": "phi3", "gemma": "gemma", "gemma2": "gemma2", "gemma3": "gemma3_text",
    "olmo2": "olmo2",
}
_GGUF_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_qkv": "self_attn.qkv_proj", "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm", "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm", "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
}
_GGUF_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}

_SUPPORTED_HINT = ("Bitsmith plans decoder-only language models of the Llama, Mistral, Qwen2/3, Phi-3, "
                   "Gemma 1/2/3, Granite, OLMo-2 and SmolLM families.")


@dataclass(frozen=True)
class LinearShape:
    """One quantizable linear layer: its name (without `.weight`) and weight shape [out, in]."""

    name: str
    out_features: int
    in_features: int

    @property
    def params(self) -> int:
        """Number of weights."""
        return self.out_features * self.in_features


@dataclass(frozen=True)
class ModelInfo:
    """Shapes and parameter counts of a decoder-only LM: what the planner needs, no weights."""

    model_id: str
    architecture: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    max_position_embeddings: int
    linear_params: int
    other_params: int
    source_dtype_bytes: int
    linears: tuple[LinearShape, ...] = field(default=(), repr=False)
    source_bytes: int = 0          # the weights as stored (download size): exact from headers or files
    exact: bool = False            # True when counts come from stored tensor shapes, not the config
    source_format: str = "config"  # "config", "safetensors" or "gguf"

    @property
    def total_params(self) -> int:
        """All parameters (tied embeddings counted once)."""
        return self.linear_params + self.other_params

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """KV-cache bytes one token takes over all layers."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_bytes

    @cached_property
    def largest_linear(self) -> int:
        """Weights in the biggest single linear layer (0 if the list is unknown)."""
        return max((lin.params for lin in self.linears), default=0)

    @cached_property
    def block_linear_params(self) -> int:
        """Linear weights of the biggest decoder block (an average block when shapes are unknown)."""
        per_block: dict[int, int] = {}
        for lin in self.linears:
            m = re.search(r"layers\.(\d+)\.", lin.name)
            if m:
                per_block[int(m.group(1))] = per_block.get(int(m.group(1)), 0) + lin.params
        if per_block:
            return max(per_block.values())
        return -(-self.linear_params // max(self.num_layers, 1))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the per-linear list as [name, out, in] triples)."""
        out = asdict(self)
        out["linears"] = [[lin.name, lin.out_features, lin.in_features] for lin in self.linears]
        out["total_params"] = self.total_params
        return out

    @classmethod
    def from_config(cls, config: dict, tensors: Tensors | None = None, model_id: str = "") -> ModelInfo:
        """From a config.json dict; with `tensors` (name → (shape, dtype), e.g. safetensors headers or the
        Hub's metadata) the counts are exact, otherwise they are computed from the architecture."""
        return _from_config(config, tensors, model_id)

    @classmethod
    def from_folder(cls, path: str | Path, model_id: str = "") -> ModelInfo:
        """From a local Hugging Face folder: config.json plus the headers of its safetensors shards."""
        return _from_folder(Path(path), model_id)

    @classmethod
    def from_gguf(cls, path: str | Path, model_id: str = "") -> ModelInfo:
        """From a GGUF file's metadata and tensor list (weights are never read)."""
        return _from_gguf(Path(path), model_id)

    @classmethod
    def from_path(cls, path: str | Path) -> ModelInfo:
        """A local model folder, a config.json or a .gguf file, whichever `path` is."""
        p = Path(path).expanduser()
        if p.is_dir():
            return cls.from_folder(p)
        if not p.exists():
            raise BadInputError(f"{p} does not exist",
                                hint="Give a model folder, a config.json or a .gguf file.")
        if p.suffix.lower() == ".gguf":
            return cls.from_gguf(p)
        if p.suffix.lower() == ".json":
            config = _read_json(p, "config")
            return cls.from_config(config, model_id=p.parent.name)
        raise BadInputError(f"{p} is neither a model folder, a config.json nor a .gguf file",
                            hint="Give a folder with config.json (and *.safetensors), or a .gguf file.")


def read_safetensors_header(path: str | Path) -> dict[str, tuple[list[int], str]]:
    """Tensor shapes and dtypes from a .safetensors file's JSON header; the weights are never read."""
    p = Path(path)
    hint = "Re-download the file; it may be truncated or not a safetensors file."
    try:
        with p.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise BadInputError(f"{p} is too short to be a safetensors file", hint=hint)
            (length,) = struct.unpack("<Q", head)
            size = p.stat().st_size
            if length > _MAX_HEADER or length > size - 8:
                raise BadInputError(f"{p} has an impossible header length ({length} bytes)", hint=hint)
            raw = f.read(length)
    except OSError as exc:
        raise BadInputError(f"cannot read {p}: {exc.strerror or exc}",
                            hint="Check the path and permissions.") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{p} has a corrupt safetensors header ({exc})", hint=hint) from exc
    if not isinstance(header, dict):
        raise BadInputError(f"{p} has a corrupt safetensors header (not a JSON object)", hint=hint)
    out: dict[str, tuple[list[int], str]] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            out[name] = ([int(d) for d in entry["shape"]], str(entry["dtype"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInputError(f"{p}: tensor {name!r} has a malformed header entry", hint=hint) from exc
    return out


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc.strerror or exc}",
                            hint="Check the path and permissions.") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{path} is not valid JSON ({exc})",
                            hint=f"Re-download the model's {what} file or fix it by hand.") from exc
    if not isinstance(data, dict):
        raise BadInputError(f"{path} does not hold a JSON object", hint=f"Is this really the model's {what}?")
    return data


def _check_causal_lm(config: dict, name: str) -> str:
    """The model_type, after rejecting what cannot be planned (encoders, MoE, pre-quantized, multimodal)."""
    model_type = str(config.get("model_type") or "")
    archs = [str(a) for a in (config.get("architectures") or []) if isinstance(a, str)]
    causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
    if not causal and model_type not in ARCHITECTURES:
        what = ", ".join(archs) or model_type or "unknown"
        raise UnsupportedModelError(f"{name} is not a decoder-only language model ({what})",
                                    hint=_SUPPORTED_HINT)
    if "text_config" in config and "hidden_size" not in config:
        raise UnsupportedModelError(f"{name} is a multimodal model ({model_type})",
                                    hint="Choose the text-only variant of the model. " + _SUPPORTED_HINT)
    for key in ("num_local_experts", "num_experts", "n_routed_experts", "moe_intermediate_size"):
        if config.get(key):
            raise UnsupportedModelError(f"{name} is a mixture-of-experts model ({key}={config[key]})",
                                        hint="Mixture-of-experts models are not supported yet. "
                                        + _SUPPORTED_HINT)
    if config.get("quantization_config"):
        method = (config["quantization_config"] or {}).get("quant_method", "quantized")
        raise UnsupportedModelError(f"{name} is already quantized ({method})",
                                    hint="Choose the original 16-bit model as the source.")
    return model_type


def _int(config: dict, key: str, name: str, default: int | None = None) -> int:
    value = config.get(key)
    if value is None and default is not None:
        return default
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        value = max(value)  # some files give one value per layer
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise BadInputError(f"{name}: config.json has no valid {key!r} (got {value!r})",
                            hint="Check that this is the model's own config.json.")
    return value


def _flag(arch_value: bool | str, config: dict) -> bool:
    return bool(config.get(arch_value, False)) if isinstance(arch_value, str) else arch_value


def _from_config(config: Any, tensors: Tensors | None, model_id: str) -> ModelInfo:
    if not isinstance(config, dict):
        raise BadInputError("the model config is not a JSON object", hint="Give the model's config.json.")
    name = model_id or str(config.get("_name_or_path") or "this model")
    model_type = _check_causal_lm(config, name)
    arch = ARCHITECTURES.get(model_type)
    if arch is None and not tensors:
        raise UnsupportedModelError(
            f"{name}: architecture {model_type!r} is unknown, and it cannot be planned without tensor shapes",
            hint=_SUPPORTED_HINT + " Others can be planned from a folder with *.safetensors files.")
    arch = arch or _Arch()
    hidden = _int(config, "hidden_size", name)
    heads = _int(config, "num_attention_heads", name)
    dims = dict(
        hidden_size=hidden,
        intermediate_size=_int(config, "intermediate_size", name),
        num_layers=_int(config, "num_hidden_layers", name),
        num_heads=heads,
        num_kv_heads=_int(config, "num_key_value_heads", name, default=heads),
        head_dim=_int(config, "head_dim", name, default=arch.head_dim or hidden // heads),
        vocab_size=_int(config, "vocab_size", name),
        max_position_embeddings=_int(config, "max_position_embeddings", name, default=0),
    )
    tie = bool(config.get("tie_word_embeddings", arch.tie))
    dtype_name = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16").removeprefix("torch.")
    common = dict(model_id=model_id, architecture=model_type, tie_word_embeddings=tie, **dims)
    if tensors:
        return _from_tensors(tensors, common, tie, name)
    linears = _config_linears(arch, config, dims)
    linear_params = sum(lin.params for lin in linears)
    other = _config_other_params(arch, config, dims, tie)
    dtype_bytes = _CONFIG_DTYPE_BYTES.get(dtype_name, 2)
    return ModelInfo(**common, linear_params=linear_params, other_params=other,
                     source_dtype_bytes=dtype_bytes, linears=tuple(linears),
                     source_bytes=(linear_params + other) * dtype_bytes, exact=False, source_format="config")


def _config_linears(arch: _Arch, config: dict, d: dict) -> list[LinearShape]:
    h, inter = d["hidden_size"], d["intermediate_size"]
    q, kv = d["num_heads"] * d["head_dim"], d["num_kv_heads"] * d["head_dim"]
    out: list[LinearShape] = []
    for i in range(d["num_layers"]):
        p = f"model.layers.{i}."
        if arch.fused:
            out += [LinearShape(p + "self_attn.qkv_proj", q + 2 * kv, h),
                    LinearShape(p + "self_attn.o_proj", h, q),
                    LinearShape(p + "mlp.gate_up_proj", 2 * inter, h),
                    LinearShape(p + "mlp.down_proj", h, inter)]
            continue
        out += [LinearShape(p + "self_attn.q_proj", q, h), LinearShape(p + "self_attn.k_proj", kv, h),
                LinearShape(p + "self_attn.v_proj", kv, h), LinearShape(p + "self_attn.o_proj", h, q),
                LinearShape(p + "mlp.gate_proj", inter, h), LinearShape(p + "mlp.up_proj", inter, h),
                LinearShape(p + "mlp.down_proj", h, inter)]
    return out


def _config_other_params(arch: _Arch, config: dict, d: dict, tie: bool) -> int:
    h, inter, hd = d["hidden_size"], d["intermediate_size"], d["head_dim"]
    q, kv = d["num_heads"] * hd, d["num_kv_heads"] * hd
    per_block = arch.block_norms * h
    if arch.qk_norm == "head":
        per_block += 2 * hd
    elif arch.qk_norm == "full":
        per_block += q + kv
    if _flag(arch.qkv_bias, config):
        per_block += q + 2 * kv
    if _flag(arch.o_bias, config):
        per_block += h
    if _flag(arch.mlp_bias, config):
        per_block += 2 * inter + h
    embeddings = d["vocab_size"] * h * (1 if tie else 2)
    return embeddings + h + d["num_layers"] * per_block


def _from_tensors(tensors: Tensors, common: dict, tie: bool, name: str) -> ModelInfo:
    """Exact counts from stored shapes: 2-D weights inside decoder blocks are the quantizable linears."""
    linears: list[LinearShape] = []
    other = 0
    tied_head = 0
    outside_2d: set[tuple[int, ...]] = set()
    stored = 0.0
    linear_bytes: dict[float, int] = {}
    for tname, entry in tensors.items():
        try:
            shape, dtype = entry
            shape = [int(s) for s in shape]
        except (TypeError, ValueError) as exc:
            raise BadInputError(f"{name}: tensor {tname!r} has no (shape, dtype)",
                                hint="Pass tensors as {name: (shape, dtype)}.") from exc
        numel = 1
        for s in shape:
            numel *= s
        size = DTYPE_BYTES.get(str(dtype).upper(), 2)
        stored += numel * size
        if tname.endswith("rotary_emb.inv_freq"):
            continue  # a buffer some old checkpoints saved, not a parameter
        m = _BLOCK_WEIGHT.search(tname)
        if m and len(shape) == 2:
            linears.append(LinearShape(tname[: -len(".weight")], shape[0], shape[1]))
            linear_bytes[size] = linear_bytes.get(size, 0) + numel
        elif len(shape) >= 3 and m:
            raise UnsupportedModelError(f"{name}: block weight {tname} has {len(shape)} dimensions "
                                        "(fused experts?)", hint=_SUPPORTED_HINT)
        elif tname == "lm_head.weight" and tie:
            tied_head = numel  # transformers ties it to the embedding: one copy in memory (counted below)
        else:
            other += numel
            if len(shape) == 2:
                outside_2d.add(tuple(shape))
    head_shape = tensors.get("lm_head.weight", ((), ""))[0]
    if tied_head and tuple(int(d) for d in head_shape) not in outside_2d:
        other += tied_head  # a tied checkpoint that stores only the head (save_pretrained may keep either name)
    if not linears:
        raise UnsupportedModelError(f"{name}: no linear layers found inside decoder blocks",
                                    hint="The tensor names do not follow the usual `model.layers.N.` layout. "
                                         + _SUPPORTED_HINT)
    linears.sort(key=_linear_order)
    dtype_bytes = int(max(linear_bytes, key=linear_bytes.get)) if linear_bytes else 2
    linear_params = sum(lin.params for lin in linears)
    return ModelInfo(**common, linear_params=linear_params, other_params=other,
                     source_dtype_bytes=max(dtype_bytes, 1), linears=tuple(linears),
                     source_bytes=int(stored), exact=True, source_format="safetensors")


def _linear_order(lin: LinearShape) -> tuple[int, str]:
    m = re.search(r"layers\.(\d+)\.", lin.name)
    return (int(m.group(1)) if m else -1, lin.name)


def _from_folder(path: Path, model_id: str) -> ModelInfo:
    if not path.is_dir():
        raise BadInputError(f"{path} is not a folder", hint="Give the folder that holds config.json.")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise BadInputError(f"{path} has no config.json",
                            hint="Give a Hugging Face model folder (config.json + *.safetensors) "
                                 "or a .gguf file.")
    config = _read_json(config_path, "config.json")
    model_id = model_id or path.name
    shards = _safetensors_files(path)
    if not shards:
        return ModelInfo.from_config(config, model_id=model_id)
    tensors: dict[str, tuple[list[int], str]] = {}
    for shard in shards:
        tensors.update(read_safetensors_header(shard))
    info = ModelInfo.from_config(config, tensors, model_id=model_id)
    return replace(info, source_bytes=sum(s.stat().st_size for s in shards))


def _safetensors_files(path: Path) -> list[Path]:
    """The shards the index names (all must exist), else model*.safetensors, else every *.safetensors
    except Mistral's duplicate consolidated.safetensors."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index, "model.safetensors.index.json").get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise BadInputError(f"{index} has no weight_map", hint="Re-download the model.")
        files = sorted({path / str(f) for f in weight_map.values()})
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise BadInputError(f"{path} is incomplete: missing {', '.join(missing[:3])}"
                                + (f" and {len(missing) - 3} more" if len(missing) > 3 else ""),
                                hint="Finish or restart the download.")
        return files
    files = sorted(path.glob("model*.safetensors"))
    return files or sorted(f for f in path.glob("*.safetensors") if not f.name.startswith("consolidated"))


def _gguf_value(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return None
    try:
        return f.contents()
    except Exception:  # noqa: BLE001 - older gguf releases lack contents(); fall back to the raw parts
        return f.parts[f.data[0]].tolist()[0] if f.data else None


def _from_gguf(path: Path, model_id: str) -> ModelInfo:
    try:
        from gguf import GGUFReader
    except ImportError as exc:
        raise BadInputError("reading GGUF files needs the `gguf` package", hint="pip install gguf") from exc
    if not path.is_file():
        raise BadInputError(f"{path} does not exist", hint="Check the path to the .gguf file.")
    try:
        reader = GGUFReader(str(path))
    except (ValueError, OSError, struct.error) as exc:
        raise BadInputError(f"{path} is not a readable GGUF file ({exc})",
                            hint="Re-download the file.") from exc
    arch = str(_gguf_value(reader, "general.architecture") or "")
    name = model_id or path.stem
    model_type = GGUF_ARCHITECTURES.get(arch)
    if model_type is None:
        raise UnsupportedModelError(f"{path.name}: GGUF architecture {arch!r} is not supported",
                                    hint=_SUPPORTED_HINT)
    tensors = {_gguf_to_hf_name(t.name, model_type): ([int(s) for s in reversed(t.shape.tolist())], "F16")
               for t in reader.tensors}
    embed = tensors.get("model.embed_tokens.weight")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    config = {
        "model_type": model_type,
        "hidden_size": _gguf_value(reader, f"{arch}.embedding_length"),
        "intermediate_size": _gguf_value(reader, f"{arch}.feed_forward_length"),
        "num_hidden_layers": _gguf_value(reader, f"{arch}.block_count"),
        "num_attention_heads": _gguf_value(reader, f"{arch}.attention.head_count"),
        "num_key_value_heads": _gguf_value(reader, f"{arch}.attention.head_count_kv"),
        "head_dim": _gguf_value(reader, f"{arch}.attention.key_length"),
        "vocab_size": _gguf_value(reader, f"{arch}.vocab_size")
        or (embed[0][0] if embed else (len(tokens.data) if tokens else None)),
        "max_position_embeddings": _gguf_value(reader, f"{arch}.context_length"),
        "tie_word_embeddings": "lm_head.weight" not in tensors,
    }
    info = ModelInfo.from_config(config, tensors, model_id=name)
    # Bitsmith works on the weights dequantized to 16 bits; the download is the file itself.
    return replace(info, source_dtype_bytes=2, source_bytes=path.stat().st_size, source_format="gguf")


def _gguf_to_hf_name(name: str, model_type: str) -> str:
    """llama.cpp tensor names → Hugging Face names (unknown parts are kept, so counting still works)."""
    parts = name.split(".")
    if parts[0] == "blk" and len(parts) >= 3:
        sub = _GGUF_BLOCK_NAMES.get(parts[2], parts[2])
        if model_type in ("gemma2", "gemma3_text") and parts[2] == "ffn_norm":
            sub = "pre_feedforward_layernorm"
        if model_type == "phi3" and parts[2] == "ffn_up":
            sub = "mlp.gate_up_proj"
        return ".".join(["model.layers", parts[1], sub, *parts[3:]])
    if parts[0] in _GGUF_TOP_NAMES:
        return ".".join([_GGUF_TOP_NAMES[parts[0]], *parts[1:]])
    return name


def describe(info: ModelInfo) -> str:
    """One line: family, size, shape; for CLI output."""
    return (f"{info.model_id or '(unnamed)'}: {info.architecture}, {info.total_params / 1e9:.2f} B params "
            f"({info.linear_params / 1e9:.2f} B quantizable), {info.num_layers} layers, "
            f"hidden {info.hidden_size}, "
            f"heads {info.num_heads}/{info.num_kv_heads}, vocab {info.vocab_size}"
            + (", tied embeddings" if info.tie_word_embeddings else ""))

