"""Per-layer, per-format sensitivity: the loss increase each format is predicted to cause in each layer.

Signal: the diagonal empirical Fisher. For a model near a minimum of its loss L, quantizing a weight
W to W + ΔW raises the loss by about ½·Σ F ⊙ ΔW², with F the expected squared gradient of the
per-token loss. One forward and backward pass per calibration sequence gives F for every layer at
once, and a hook applies it to every candidate format's ΔW as each gradient arrives, so F is never
stored and the cost is one backward pass per sample whatever the number of formats. Unlike the
layer-output error tr(ΔW H ΔWᵀ), the result is in units of loss, so layers are comparable with each
other and the sum predicts the model's loss increase (additivity is an assumption the quality
benchmark checks). The predicted perplexity of a layout is ppl_fp · exp(Σ errors).

The same sum split by input channels comes for free: each layer also records, per format, the error of every
*unit* of `Measurement.unit` consecutive input channels (the least common multiple of the formats' group
sizes, so a unit is a whole number of groups in every format). The channel-mix search
(engine/search/channel_mix.py) prices a layer whose units take different formats as the sum of its units'
errors: exact for the measured quantizer as long as groups stay whole, which the unit guarantees.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from bitsmith.engine.errors import BadInputError
from bitsmith.engine.memory import release_free_memory
from bitsmith.engine.model import find_blocks
from bitsmith.engine.quant.bpw import layer_bits
from bitsmith.engine.quant.quantize import dequantize_weight, quantize_weight
from bitsmith.engine.quant.spec import parse_spec
from bitsmith.engine.search.layout import LayerChoices, Option

SIGNAL = "fisher_diag"
CACHE_VERSION = 2
"""2: per-unit (input-channel group) errors for the channel-mix search."""


@dataclass
class LayerMeasure:
    """One linear layer: its qualified name, shape, and per format the stored bits and predicted Δloss."""

    name: str
    out_features: int
    in_features: int
    bits: dict[str, int]
    errors: dict[str, float]
    group_errors: dict[str, list[float]] = field(default_factory=dict)
    """Per format, the error of each unit of `Measurement.unit` inputs (the last may be shorter); sums to `errors`."""


@dataclass
class Measurement:
    """A model's sensitivity table and how it was measured (the cache key is built from this)."""

    formats: list[str]
    method: str
    samples: int
    seq_len: int
    signal: str = SIGNAL
    layers: list[LayerMeasure] = field(default_factory=list)
    seconds: float = 0.0
    version: int = CACHE_VERSION
    unit: int = 0
    """Input channels per unit of `LayerMeasure.group_errors` (0: not measured per unit)."""

    def choices(self) -> list[LayerChoices]:
        """The search problem: each layer with one option per format."""
        return [
            LayerChoices(
                m.name,
                m.out_features * m.in_features,
                tuple(Option(f, m.bits[f], max(m.errors[f], 0.0)) for f in self.formats),
            )
            for m in self.layers
        ]

    def to_json(self) -> str:
        """Serialise for the on-disk cache."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Measurement:
        """Inverse of `to_json`."""
        data = json.loads(text)
        data["layers"] = [LayerMeasure(**m) for m in data["layers"]]
        return cls(**data)

    def with_current_bits(self) -> Measurement:
        """The same errors with each format's stored bits recounted by today's bpw accounting.

        The errors depend on the codes only; the bits depend on how codes are packed, which can change
        (3-bit codes went from ten per word to bit planes), so a cached table never prices a format stale.
        """
        specs = {f: parse_spec(f) for f in self.formats}
        for m in self.layers:
            m.bits = {f: layer_bits(m.out_features, m.in_features, specs[f]).total for f in self.formats}
        return self


def cache_key(model_id: str, formats: Sequence[str], method: str, windows: Sequence[Sequence[int]]) -> str:
    """A stable key over everything that changes the result: model, formats, quantizer and the exact tokens."""
    h = hashlib.sha256()
    h.update(json.dumps([model_id, list(formats), method, SIGNAL, CACHE_VERSION]).encode())
    for w in windows:
        h.update(json.dumps(list(w)).encode())
    return h.hexdigest()[:20]


def load_cached(path: Path) -> Measurement | None:
    """A cached measurement, or None when there is none or it is unreadable (it is then re-measured)."""
    try:
        m = Measurement.from_json(path.read_text())
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return m.with_current_bits() if m.version == CACHE_VERSION else None


def save_cached(path: Path, m: Measurement) -> None:
    """Write atomically: a crash never leaves half a cache file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(m.to_json())
    os.replace(tmp, path)


def channel_unit(formats: Sequence[str]) -> int:
    """Inputs per unit of the per-channel errors: a whole number of groups in every format."""
    return math.lcm(*(parse_spec(f).group_size for f in formats))


def unit_sums(per_channel: torch.Tensor, unit: int) -> list[float]:
    """Sums of a per-input-channel vector [K] over consecutive units of `unit` channels (the last may be shorter)."""
    k = per_channel.numel()
    padded = torch.zeros(-(-k // unit) * unit, dtype=torch.float64, device=per_channel.device)
    padded[:k] = per_channel.to(torch.float64)
    return padded.view(-1, unit).sum(dim=1).tolist()


def quantization_deltas(
    linears: dict[str, nn.Linear], formats: Sequence[str], method: str
) -> dict[str, dict[str, torch.Tensor]]:
    """ΔW² (fp32) of every layer in every format, computed once and reused for each sample."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, lin in linears.items():
        w = lin.weight.detach().float()
        out[name] = {}
        for fmt in formats:
            qw = quantize_weight(w, fmt, method=method, name=name)
            out[name][fmt] = dequantize_weight(qw).sub_(w).square_()  # in place: no second [N, K] buffer
    return out


def measure_model(
    model: nn.Module,
    windows: Sequence[Sequence[int]],
    formats: Sequence[str] = ("int4_g128", "int2_g64"),
    method: str = "hqq",
    on_progress: Callable[[str, int, int], None] | None = None,
    check_cancel: Callable[[], None] | None = None,
) -> Measurement:
    """Predicted loss increase for every decoder linear × format, from one backward pass per window."""
    if not windows:
        raise BadInputError("no calibration samples to measure with", "give calibration text of at least one sample")
    specs = [parse_spec(f) for f in formats]
    start = time.perf_counter()
    blocks = find_blocks(model)
    linears = {f"{b.name}.{n}": lin for b in blocks for n, lin in b.linears.items()}
    deltas = {}
    for i, (name, lin) in enumerate(linears.items()):
        deltas.update(quantization_deltas({name: lin}, formats, method))
        if on_progress:
            on_progress("quantize", i + 1, len(linears))
        if check_cancel:
            check_cancel()
    seq_len = len(windows[0])
    # per input channel: Σ over outputs of F ⊙ ΔW², so the per-unit (channel-mix) errors come for free
    acc = {
        name: {f: torch.zeros(lin.in_features, dtype=torch.float64, device=lin.weight.device) for f in formats}
        for name, lin in linears.items()
    }
    saved = {p: p.requires_grad for p in model.parameters()}
    handles = []

    def make_hook(name: str) -> Callable[[torch.Tensor], None]:
        def hook(param: torch.Tensor) -> None:
            g2 = param.grad.detach().float().square()
            for fmt in formats:
                acc[name][fmt] += (g2 * deltas[name][fmt]).sum(dim=0)
            param.grad = None  # never hold the whole model's gradients

        return hook

    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for name, lin in linears.items():
            lin.weight.requires_grad_(True)
            handles.append(lin.weight.register_post_accumulate_grad_hook(make_hook(name)))
        device = next(model.parameters()).device
        for s, window in enumerate(windows):
            ids = torch.tensor([list(window)], device=device)
            loss = model(ids, labels=ids).loss
            if not torch.isfinite(loss):
                raise ValueError(f"the model's loss is {float(loss)} on calibration sample {s}")
            loss.backward()
            if on_progress:
                on_progress("fisher", s + 1, len(windows))
            if check_cancel:
                check_cancel()
    finally:
        for h in handles:
            h.remove()
        for p, flag in saved.items():
            p.requires_grad_(flag)
            p.grad = None
        deltas.clear()  # every layer's weight errors: a few times the linears in float32
        release_free_memory()
    # per-sequence mean loss: E[g_seq²] ≈ E[g_tok²] / T, so F_tok ≈ T·mean_s g_seq²
    scale = 0.5 * (seq_len - 1) / len(windows)
    unit = channel_unit(formats)
    layers = []
    for name, lin in linears.items():
        groups = {f: [e * scale for e in unit_sums(acc[name][f], unit)] for f in formats}
        layers.append(LayerMeasure(
            name=name,
            out_features=lin.out_features,
            in_features=lin.in_features,
            bits={f: layer_bits(lin.out_features, lin.in_features, spec).total for f, spec in zip(formats, specs)},
            errors={f: math.fsum(groups[f]) for f in formats},
            group_errors=groups,
        ))
    return Measurement(
        formats=list(formats), method=method, samples=len(windows), seq_len=seq_len, layers=layers,
        seconds=time.perf_counter() - start, unit=unit,
    )
