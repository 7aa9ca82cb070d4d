"""What every checkpoint import shares: read the safetensors, build the model without weights, put a
converted QuantLinear in place of each of the checkpoint's quantized layers, load the rest, save atomically.

The per-format part (GPTQ in gptq_import.py, GreenBitAI in greenbit_import.py) is one function that turns a
layer's tensors into a QuantLinear and records how it came across.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from bitsmith.engine.errors import BadInputError

from .linear import QuantLinear

LayerConverter = Callable[[str, dict[str, torch.Tensor], nn.Linear], QuantLinear]
"""(prefix, the layer's tensors by short name, the model's float linear it replaces) -> the converted layer."""


def read_tensors(folder: Path, hint: str) -> dict[str, torch.Tensor]:
    """Every tensor of the folder's safetensors files (one file or shards); `hint` says what to do if none."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise BadInputError(f"{folder} has no .safetensors files", hint)
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def import_checkpoint(folder: Path, out: str | Path, state: dict[str, torch.Tensor], convert: LayerConverter,
                      source: dict, recipe: Callable[[], dict], what: str,
                      on_progress: Callable[[int, int], None] | None = None) -> Path:
    """Convert every `*.qweight` layer of `state` with `convert` and save a Bitsmith folder at `out`.

    `what` names the checkpoint kind in errors; `recipe()` is called after the conversion (reports fill up).
    """
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from .store import round_kept_, save_quantized, set_submodule

    config = AutoConfig.from_pretrained(folder)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # build a plain model: transformers' own quantized integrations are not wanted
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    prefixes = sorted(k[: -len(".qweight")] for k in state if k.endswith(".qweight"))
    if not prefixes:
        raise BadInputError(f"{folder} has no quantized layers (no *.qweight tensors)", f"is it a {what}?")
    used: set[str] = set()
    for i, prefix in enumerate(prefixes):
        try:
            linear = model.get_submodule(prefix)
        except AttributeError:
            raise BadInputError(f"the checkpoint's layer {prefix!r} is not in the model its config describes",
                                "the checkpoint and its config.json do not match") from None
        if not isinstance(linear, nn.Linear):
            raise BadInputError(f"{prefix} is a {type(linear).__name__}, not a linear layer",
                                "the checkpoint and its config.json do not match")
        tensors = {k[len(prefix) + 1:]: v for k, v in state.items()
                   if k.startswith(prefix + ".") and "." not in k[len(prefix) + 1:]}
        used.update(f"{prefix}.{k}" for k in tensors)
        layer = convert(prefix, tensors, linear)
        if layer.out_features != linear.out_features:
            raise BadInputError(f"{prefix}: the checkpoint has {layer.out_features} outputs, the config "
                                f"{linear.out_features}", "the checkpoint and its config.json do not match")
        set_submodule(model, prefix, layer)
        if on_progress:
            on_progress(i + 1, len(prefixes))
    rest = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items() if k not in used}
    model.load_state_dict(rest, strict=False, assign=True)
    model.tie_weights()
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise BadInputError(f"the checkpoint lacks {len(missing)} tensors the model needs, e.g. {missing[:3]}",
                            "the checkpoint is incomplete: download it again")
    model.eval()
    round_kept_(model)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return save_quantized(model, tokenizer, out, source=source, recipe=recipe())
