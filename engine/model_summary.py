"""A Bitsmith model folder summarised from its JSON files alone (no torch): for `bitsmith inspect` and the app."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from bitsmith.engine.errors import BadInputError
from bitsmith.engine.quant.mix import ChannelMix, format_label, format_layer_bits, parse_format

META_FILE = "bitsmith.json"
WEIGHTS_FILE = "model.safetensors"


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name → shape from a safetensors header (8-byte length, then JSON), without loading tensors."""
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        if size > 100_000_000:
            raise BadInputError(f"{path} has a damaged header", "save or download the model again")
        header = json.loads(f.read(size))
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


def _layer_shapes(folder: Path, meta: dict) -> dict[str, tuple[int, int]]:
    """(out_features, in_features) per quantized layer: recorded at save time, else read off the header."""
    if meta.get("shapes"):
        return {k: (int(v[0]), int(v[1])) for k, v in meta["shapes"].items()}
    tensors = _safetensors_shapes(folder / WEIGHTS_FILE)
    shapes = {}
    for name, fmt in meta["layout"].items():
        f = parse_format(fmt)
        if isinstance(f, ChannelMix):
            shapes[name] = (tensors[f"{name}.parts.0.qweight"][1], f.in_features)
            continue
        rows, n = tensors[f"{name}.qweight"]
        shapes[name] = (n, rows * (32 // f.bits))  # K rounded up to whole words
    return shapes


def summarize(folder: Path) -> dict[str, Any]:
    """Layout, bpw (overall and per layer), source, recipe highlights and metrics of a Bitsmith folder."""
    path = folder.expanduser()
    if not (path / META_FILE).is_file():
        raise BadInputError(f"{path} is not a Bitsmith model folder (no {META_FILE})",
                            "give a folder written by `bitsmith quantize`, `finetune` or `import`")
    try:
        meta = json.loads((path / META_FILE).read_text())
    except ValueError as exc:
        raise BadInputError(f"{path / META_FILE} is damaged ({exc})", "quantize or import the model again") from exc
    shapes = _layer_shapes(path, meta)
    layers, counts = [], {}
    for name, fmt in meta.get("layout", {}).items():
        n, k = shapes[name]
        row = {"name": name, "format": fmt, "shape": [n, k], "bpw": format_layer_bits(fmt, n, k).bpw}
        f = parse_format(fmt)
        if isinstance(f, ChannelMix):  # channel-mix: which share of the inputs each format holds
            row["parts"] = [{"format": s.name, "inputs": w, "share": w / k} for s, w in zip(f.specs, f.widths)]
        layers.append(row)
        label = format_label(fmt) + (" (channel-mix)" if isinstance(f, ChannelMix) else "")
        counts[label] = counts.get(label, 0) + 1
    bpw = meta.get("bpw", {})
    recipe = meta.get("recipe", {})
    return {
        "path": str(path), "format_version": meta.get("format_version"),
        "layout_mode": meta.get("layout_mode", "layer-mix"),
        "source": (meta.get("source") or {}).get("model"),
        "bpw_quantized": bpw.get("quantized_linears"), "bpw_all": bpw.get("all_weights"),
        "budget_bpw": recipe.get("budget_bpw"), "preset": (recipe.get("preset") or {}).get("name"),
        "format_counts": dict(sorted(counts.items())), "metrics": meta.get("metrics", {}),
        "created": meta.get("created"), "layers": layers,
        "size_bytes": sum(f.stat().st_size for f in path.iterdir() if f.is_file()),
    }
