"""The saved model folder: what Hugging Face tools recognise, plus Bitsmith's layout and facts.

    config.json, generation_config.json, tokenizer files    as transformers writes them
    model.safetensors                                       quantized layers' tensors + 16-bit kept tensors
    quant_strategy.json                                     per block, per linear: bits, group size
                                                            (GreenBitAI's layout: layer-mix entries, and
                                                            channel-mix ones with bits/bits_prop lists)
    bitsmith.json                                           format version, source, exact layout,
                                                            achieved bpw, kept tensors, recipe, metrics

Only safetensors, never pickle. The folder is written under a temporary name and renamed into
place, so the output path is either the old complete folder or the new complete one. Tensors kept
in 16 bits are rounded to their storage dtype in memory first (`round_kept_`), so a model that was
evaluated, saved and loaded again gives bit-identical outputs.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bitsmith.engine.errors import BadInputError, DiskFullError

from .legacy import upgrade_v1_tensors
from .mix import ChannelMix, parse_format
from .mixed_linear import ChannelMixLinear, format_of, load_quant_module, module_bits, quant_modules
from .spec import parse_spec

FORMAT_VERSION = 2
"""2: 3-bit codes as bit planes (kernels/pack.py); format-1 folders load through engine/quant/legacy.py."""
CHANNEL_MIX_VERSION = 3
"""3: format 2 plus channel-mix layers (engine/quant/mixed_linear.py). Only folders that hold one are written as
3, so every layer-mix folder stays readable by a Bitsmith that knows format 2."""
READABLE_VERSION = CHANNEL_MIX_VERSION
META_FILE = "bitsmith.json"
STRATEGY_FILE = "quant_strategy.json"
WEIGHTS_FILE = "model.safetensors"
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted path `name`."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def quantized_layout(model: nn.Module) -> dict[str, str]:
    """Qualified name → format name of every quantized layer (a channel-mix's name lists its parts)."""
    return {name: format_of(mod) for name, mod in quant_modules(model).items()}


def round_kept_(model: nn.Module, dtype: torch.dtype = torch.float16) -> None:
    """Round every float parameter (what is stored in 16 bits) to `dtype` precision in place.

    Non-persistent buffers (rotary frequencies) are left alone: they are recomputed on load, not stored.
    """
    with torch.no_grad():
        for t in model.parameters():
            if t.is_floating_point() and t.dtype != dtype:
                t.copy_(t.to(dtype).to(t.dtype))


@dataclass
class SavedModel:
    """What `load_quantized` returns: the model, its tokenizer and the bitsmith.json facts."""

    model: nn.Module
    tokenizer: object
    meta: dict


def _strategy(layout: dict[str, str]) -> dict:
    """GreenBitAI's quant_strategy.json: {"measurement": {block: {linear: {bits, group_size, ...}}}}."""
    blocks: dict[str, dict[str, dict]] = {}
    for name, fmt in layout.items():
        parts = name.split(".")
        # the block is the prefix up to and including the first numeric component
        cut = next((i for i, p in enumerate(parts) if p.isdigit()), len(parts) - 2) + 1
        block, inner = ".".join(parts[:cut]), ".".join(parts[cut:])
        blocks.setdefault(block, {})[inner] = _strategy_entry(parse_format(fmt))
    for block, linears in blocks.items():  # GreenBitAI keys by the short name where it is unique
        short = [k.rsplit(".", 1)[-1] for k in linears]
        if len(set(short)) == len(short):
            blocks[block] = {k.rsplit(".", 1)[-1]: v for k, v in linears.items()}
    return {"measurement": blocks}


def _strategy_entry(fmt) -> dict:  # noqa: ANN001 - a QuantSpec or a ChannelMix
    """One linear's quant_strategy.json entry. A channel-mix lists its parts in permuted order, as GreenBitAI's
    channel-mix strategies do ("bits", "bits_prop" = share of the inputs, "group_size" per width), plus the
    exact widths ("channels") and "format"; the permutation itself is the layer's `perm` tensor."""
    if isinstance(fmt, ChannelMix):
        k = fmt.in_features
        return {
            "bits": [s.bits for s in fmt.specs],
            "bits_prop": [round(w / k, 6) for w in fmt.widths],
            "group_size": {str(s.bits): s.group_size for s in fmt.specs},
            "channels": list(fmt.widths),
            "scale_bits": [s.scale_bits for s in fmt.specs],
            "format": fmt.name,
        }
    return {
        "bits": [fmt.bits],
        "bits_prop": [1.0],
        "group_size": {str(fmt.bits): fmt.group_size},
        "scale_bits": fmt.scale_bits,
        "format": fmt.name,
    }


def layout_from_strategy(strategy: dict, model: nn.Module) -> dict[str, str]:
    """Read a quant_strategy.json (ours or GreenBitAI's) back into qualified name → format name."""
    blocks = strategy.get("measurement", strategy)
    names = set(quant_modules(model)) | {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    layout = {}
    for block, linears in blocks.items():
        for inner, entry in linears.items():
            matches = [n for n in names if n.startswith(block + ".") and n.endswith("." + inner)]
            if len(matches) != 1:
                raise BadInputError(f"{STRATEGY_FILE}: {block}.{inner} matches {len(matches)} layers of the model")
            if "format" in entry:
                layout[matches[0]] = parse_format(entry["format"]).name
                continue
            if len(entry.get("bits", [])) > 1:
                raise BadInputError(
                    f"{STRATEGY_FILE}: {block}.{inner} mixes widths {entry['bits']} inside the layer (a GreenBitAI "
                    "channel-mix entry) without a Bitsmith format name",
                    "import a layer-mix model, or quantize the original model with Bitsmith --mode channel-mix",
                )
            bits = int(entry["bits"][0])
            gs = entry["group_size"]
            group = int(gs.get(str(bits), next(iter(gs.values())))) if isinstance(gs, dict) else int(gs)
            layout[matches[0]] = f"int{bits}_g{group}"
    return layout


def model_bpw(model: nn.Module) -> dict:
    """Achieved bits per weight: over the quantized linears, and over every weight including kept ones."""
    q_bits = q_weights = kept_bits = kept_weights = 0
    kept = []
    seen: set[int] = set()
    for mod in quant_modules(model).values():
        lb = module_bits(mod)  # a channel-mix's permutation included
        q_bits += lb.total
        q_weights += lb.weights
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        kept_bits += p.numel() * 16
        kept_weights += p.numel()
        kept.append(name)
    return {
        "quantized_linears": q_bits / q_weights if q_weights else None,
        "all_weights": (q_bits + kept_bits) / (q_weights + kept_weights),
        "quantized_weights": q_weights,
        "kept_16bit_weights": kept_weights,
        "kept_16bit": kept,
    }


def _state(model: nn.Module, kept_dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Tensors to store: quantized layers' buffers as they are, other floats in `kept_dtype`, ties stored once."""
    out: dict[str, torch.Tensor] = {}
    stored_at: set[tuple[int, tuple[int, ...]]] = set()
    quant_prefixes = tuple(n + "." for n in quant_modules(model))
    for name, t in model.state_dict().items():
        where = (t.data_ptr(), tuple(t.shape))
        if t.numel() and where in stored_at:
            continue  # a tied weight (lm_head = embed_tokens): stored once, re-tied on load
        stored_at.add(where)
        if not name.startswith(quant_prefixes) and t.is_floating_point():
            t = t.to(kept_dtype)
        out[name] = t.detach().contiguous().cpu()
    return out


def save_quantized(
    model: nn.Module,
    tokenizer: object,
    out_dir: str | Path,
    *,
    source: dict | None = None,
    recipe: dict | None = None,
    metrics: dict | None = None,
    kept_dtype: str = "float16",
) -> Path:
    """Write the folder atomically (temporary name, then rename) and return its path."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    layout = quantized_layout(model)
    if not layout:
        raise BadInputError("the model has no quantized layers to save", "quantize it first")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        save_file(_state(model, _DTYPES[kept_dtype]), str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / STRATEGY_FILE).write_text(json.dumps(_strategy(layout), indent=1))
        mixed = any(isinstance(m, ChannelMixLinear) for m in quant_modules(model).values())
        meta = {
            "format_version": CHANNEL_MIX_VERSION if mixed else FORMAT_VERSION,
            "layout_mode": "channel-mix" if mixed else "layer-mix",
            "source": source or {},
            "layout": layout,
            "shapes": {n: [m.out_features, m.in_features] for n, m in model.named_modules() if n in layout},
            "bpw": model_bpw(model),
            "kept_dtype": kept_dtype,
            "recipe": recipe or {},
            "metrics": metrics or {},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno == 28:  # ENOSPC
            raise DiskFullError(f"the disk is full while saving to {out}", "free some space and save again") from exc
        raise
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def is_quantized_folder(path: str | Path) -> bool:
    """True when `path` is a Bitsmith model folder."""
    return (Path(path) / META_FILE).is_file()


def load_quantized(folder: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> SavedModel:
    """Rebuild a saved model without materialising float weights for its quantized linears."""
    from accelerate import init_empty_weights
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = Path(folder)
    if not is_quantized_folder(path):
        raise BadInputError(f"{path} is not a Bitsmith model folder (no {META_FILE})", "quantize a model first")
    meta = json.loads((path / META_FILE).read_text())
    if meta.get("format_version", 0) > READABLE_VERSION:
        raise BadInputError(
            f"{path} was written by a newer Bitsmith (format {meta['format_version']})", "update Bitsmith"
        )
    config = AutoConfig.from_pretrained(path)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    state = load_file(str(path / WEIGHTS_FILE), device=device)
    for name, fmt in meta["layout"].items():
        mod = model.get_submodule(name)
        if meta.get("format_version", 0) < 2:
            upgrade_v1_tensors(state, name + ".", parse_spec(fmt), mod.out_features, mod.in_features)
        set_submodule(model, name, load_quant_module(state, fmt, mod.in_features, prefix=name + "."))
    quant_keys = {k for name in meta["layout"] for k in state if k.startswith(name + ".")}
    rest = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items() if k not in quant_keys}
    result = model.load_state_dict(rest, strict=False, assign=True)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    missing = [k for k in result.missing_keys if not k.startswith(tuple(meta["layout"]))]
    still_meta = [n for n, p in model.named_parameters() if p.is_meta]
    if still_meta or result.unexpected_keys:
        raise BadInputError(
            f"{path / WEIGHTS_FILE} does not match its config: missing {still_meta or missing}, "
            f"unexpected {result.unexpected_keys[:5]}",
            "the folder is damaged: quantize again",
        )
    model.to(device).eval()
    tok = AutoTokenizer.from_pretrained(path)
    return SavedModel(model, tok, meta)
