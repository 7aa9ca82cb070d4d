"""Calibrate a whole model block by block (`calibrate_model`), or quantize it directly (`quantize_model_rtn`).

Two activation streams run through the model side by side, one block at a time, only the current
block on the device: the full-precision stream (the original blocks on the original inputs) and the
quantized stream (the blocks already quantized). Each block is tuned to map its quantized-stream
input to the target (by default the full-precision block's output on the full-precision stream; see
`CalibConfig.target`), its linears are replaced by QuantLinears, and both streams advance.

A checkpoint is written after every block (engine/calibrate/checkpoint.py). Called again with the
same checkpoint folder, the original model, windows, layout and settings, it resumes after the last
finished block: the streams are recomputed by running the finished blocks (full precision, then
quantized from the checkpoint), which costs two forward passes per finished block and no disk. Resume
is exact: same seed, same device, same results as an uninterrupted run.

Linears named in the layout but outside the decoder blocks (e.g. `lm_head`) are not calibrated: they
are quantized at the end with HQQ.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bitsmith.engine.errors import BadInputError
from bitsmith.engine.model import Block, find_blocks
from bitsmith.engine.quant.mix import ChannelMix, format_key, parse_format
from bitsmith.engine.quant.mixed_linear import QUANT_MODULES, load_quant_module, quantize_module
from bitsmith.engine.quant.spec import QuantSpec

from . import checkpoint as ckpt
from .capture import capture_block_inputs, map_tensors, windows_tensor
from .config import CalibConfig
from .runner import check_finite, run_block
from .signround import tune_block

ProgressFn = Callable[[str, int, int], None]


@dataclass
class BlockReport:
    """What happened to one block (the GUI plots loss_before / loss_after per block)."""

    index: int
    name: str
    formats: dict[str, str]
    loss_before: float | None = None
    loss_after: float | None = None
    best_iter: int = -1
    kept_start: bool = False
    seconds: float = 0.0
    resumed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


@dataclass
class CalibrationSummary:
    """Per-block reports, the linears quantized without calibration, and the totals."""

    blocks: list[BlockReport] = field(default_factory=list)
    uncalibrated: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    seconds: float = 0.0
    resumed_blocks: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        data = asdict(self)
        data["blocks"] = [b.to_dict() for b in self.blocks]
        return data


# -- layout -----------------------------------------------------------------------------------------
def resolve_layout(
    model: nn.Module, layout: Mapping[str, str | QuantSpec | ChannelMix]
) -> dict[str, tuple[nn.Linear, QuantSpec | ChannelMix]]:
    """{qualified name: (the nn.Linear, its format)}; BadInputError for unknown names or bad formats."""
    modules = dict(model.named_modules())
    out: dict[str, tuple[nn.Linear, QuantSpec | ChannelMix]] = {}
    already = [n for n in layout if isinstance(modules.get(n), QUANT_MODULES)]
    if already:
        raise BadInputError(
            f"{len(already)} layer(s) of the layout are already quantized in this model: {', '.join(already[:3])}",
            hint="load the original full-precision model again (also to resume a calibration from its checkpoint)",
        )
    unknown = [n for n in layout if not isinstance(modules.get(n), nn.Linear)]
    if unknown:
        known = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
        raise BadInputError(
            f"the layout names {len(unknown)} layer(s) that are not linear layers of this model: "
            f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}",
            hint=f"use qualified names such as {', '.join(known[:3])}",
        )
    for name, fmt in layout.items():
        try:
            spec = parse_format(fmt)  # a QuantSpec, or a ChannelMix (its parts then are tuned, see signround.py)
            spec.require_packable()
        except ValueError as exc:
            raise BadInputError(f"layer {name}: {exc}", hint="choose a format such as int4_g128 or int2_g64") from None
        out[name] = (modules[name], spec)
    return out


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def quantize_model_rtn(
    model: nn.Module,
    layout: Mapping[str, str | QuantSpec],
    method: str = "hqq",
    on_progress: ProgressFn | None = None,
) -> dict[str, str]:
    """Replace every linear named in `layout` by its QuantLinear, without calibration (the fast baseline).

    `method` is "hqq" (default) or "rtn"; symmetric formats always use RTN (HQQ refines zero-points).
    Works in place on each layer's device; returns {name: format name} of what was replaced.
    """
    resolved = resolve_layout(model, layout)
    done: dict[str, str] = {}
    for i, (name, (linear, spec)) in enumerate(resolved.items()):
        _replace(model, name, quantize_module(linear, spec, method, name))  # symmetric parts: RTN
        done[name] = spec.name
        if on_progress:
            on_progress("quantize", i + 1, len(resolved))
    return done


# -- calibration ------------------------------------------------------------------------------------
def _pick_device(device: str | None, config: CalibConfig) -> torch.device:
    name = device or config.device
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError(f"calibration device {name!r} is not available", hint="use device='cpu'")
    return dev


def _stream_device(config: CalibConfig, device: torch.device, shape: tuple[int, ...], dtype: torch.dtype) -> str:
    """Where activation streams live: the device if they fit easily (two streams + a target), else the CPU."""
    if config.offload is True or device.type == "cpu":
        return "cpu"
    if config.offload is False:
        return str(device)
    need = 3 * torch.Size(shape).numel() * torch.finfo(dtype).bits // 8
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return str(device) if need < 0.3 * free else "cpu"
    return "cpu"


def _fingerprint(model: nn.Module, blocks: list[Block], ids: torch.Tensor, layout: dict, config: CalibConfig) -> str:
    """Identifies a run: model (class, blocks, one weight), windows, layout and settings (not the device)."""
    settings = {k: v for k, v in config.to_dict().items() if k not in ("device", "offload")}
    first = next(iter(blocks[0].linears.values())).weight.detach()
    return ckpt.fingerprint(
        {
            "model": type(model).__name__,
            "blocks": [b.name for b in blocks],
            "weight": hashlib.sha256(first.to("cpu", torch.float32).numpy().tobytes()).hexdigest(),
            "windows": hashlib.sha256(ids.numpy().tobytes()).hexdigest(),
            "layout": {n: format_key(s) for n, (_, s) in sorted(layout.items())},
            "config": settings,
        }
    )


def calibrate_model(
    model: nn.Module,
    windows: Sequence[Sequence[int]] | torch.Tensor,
    layout: Mapping[str, str | QuantSpec],
    config: CalibConfig | None = None,
    checkpoint_dir: str | Path | None = None,
    on_progress: ProgressFn | None = None,
    check_cancel: Callable[[], None] | None = None,
    *,
    device: str | None = None,
    on_block: Callable[[BlockReport], None] | None = None,
    materialise: Callable[[int], contextlib.AbstractContextManager] | None = None,
) -> CalibrationSummary:
    """Quantize the linears in `layout` ({qualified name: format}) block by block with SignRound calibration.

    The model is changed in place: each calibrated linear becomes a QuantLinear; linears not in the
    layout stay as they are. `on_progress(stage, done, total)` reports "capture" (windows) and
    "calibrate" (blocks); `on_block` receives each block's report; `check_cancel()` is called between
    blocks and every few iterations and may raise (e.g. CancelledError) — finished blocks are kept in
    `checkpoint_dir`, and calling again with it resumes. `materialise(i)`, for a model whose blocks' weights
    are on meta (engine/model_stream.py), gives block i real weights for the time of its `with`.
    """
    block_weights = materialise or (lambda i: contextlib.nullcontext())
    started = time.monotonic()
    config = config or CalibConfig()
    dev = _pick_device(device, config)
    ids = windows_tensor(windows)
    resolved = resolve_layout(model, layout)
    blocks = find_blocks(model)
    per_block: list[dict[str, QuantSpec]] = []
    inside: set[str] = set()
    for b in blocks:
        specs = {}
        for n in b.linears:
            q = f"{b.name}.{n}"
            if q in resolved:
                specs[n] = resolved[q][1]
                inside.add(q)
        per_block.append(specs)
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    with block_weights(0):
        fp = _fingerprint(model, blocks, ids, resolved, config)
    progress = ckpt.read_progress(folder, fp) if folder else {"fingerprint": fp, "blocks_done": 0, "reports": []}
    progress["version"] = ckpt.VERSION
    done = int(progress["blocks_done"])

    summary = CalibrationSummary(config=config.to_dict(), device=str(dev), resumed_blocks=done)
    captured = capture_block_inputs(
        model, ids, blocks=blocks, on_window=(lambda i, n: on_progress("capture", i, n)) if on_progress else None
    )
    check_finite(captured.hidden, "the input of the first block")
    store = _stream_device(config, dev, tuple(captured.hidden.shape), captured.hidden.dtype)
    streams = _Streams(captured.hidden.to(store), dev, config.batch_size)
    del captured.hidden
    if on_progress:
        on_progress("calibrate", 0, len(blocks))
    for b, specs in zip(blocks, per_block):
        if check_cancel is not None:
            check_cancel()
        t0 = time.monotonic()
        with block_weights(b.index):
            home = next(b.module.parameters()).device
            b.module.to(dev)
            call = (
                b.module,
                map_tensors(captured.block_args[b.index], lambda x: x.to(dev)),
                map_tensors(captured.block_kwargs[b.index], lambda x: x.to(dev)),
                b.name,
            )
            if b.index < done:  # resume: recompute both streams through the finished block
                streams.advance("fp", *call)
                if specs:
                    _load_block(b, specs, folder, dev)
                streams.advance("q", *call)
                report = BlockReport(**{**progress["reports"][b.index], "resumed": True})
            elif not specs:
                streams.advance("fp", *call)
                streams.advance("q", *call)
                report = BlockReport(b.index, b.name, {})
            else:
                report = _calibrate_block(b, specs, streams, call, config, check_cancel)
            b.module.to(home)
        if b.index >= done:
            report.seconds = time.monotonic() - t0
            if folder is not None:
                _save_block(folder, b, specs, progress, report)
        summary.blocks.append(report)
        if on_block:
            on_block(report)
        if on_progress:
            on_progress("calibrate", b.index + 1, len(blocks))
    outside = {n: s for n, (_, s) in resolved.items() if n not in inside}
    if outside:
        summary.uncalibrated = quantize_model_rtn(model, outside, method="hqq")
    summary.seconds = time.monotonic() - started
    return summary


class _Streams:
    """The full-precision and quantized activation streams [n, T, H] and the chunk size that fits."""

    def __init__(self, hidden: torch.Tensor, device: torch.device, batch: int) -> None:
        self.fp, self.q, self.device, self.batch = hidden, hidden.clone(), device, batch

    def advance(self, which: str, block: nn.Module, args: tuple, kwargs: dict, name: str) -> None:
        """Run `block` over one stream in place."""
        stream = self.fp if which == "fp" else self.q
        _, self.batch = run_block(
            block, stream, args, kwargs, device=self.device, batch=self.batch, out=stream, name=name
        )


def _save_block(folder: Path, b: Block, specs: dict[str, QuantSpec], progress: dict, report: BlockReport) -> None:
    """Checkpoint a finished block: its QuantLinears first, then progress.json naming it."""
    if specs:
        modules = {n: b.module.get_submodule(n) for n in specs}
        ckpt.save_block(folder, b.index, modules, {n: s.name for n, s in specs.items()})
    progress["reports"] = progress["reports"][: b.index] + [report.to_dict()]
    progress["blocks_done"] = b.index + 1
    ckpt.write_progress(folder, progress)


def _load_block(b: Block, specs: dict[str, QuantSpec], folder: Path | None, dev: torch.device) -> None:
    """Replace a finished block's linears by the QuantLinears saved in the checkpoint."""
    assert folder is not None
    tensors, _ = ckpt.load_block(folder, b.index)
    for n, spec in specs.items():
        lin = b.module.get_submodule(n)
        try:
            q = load_quant_module(tensors, spec, lin.in_features, prefix=f"{n}.")
        except ValueError as exc:
            raise BadInputError(f"calibration checkpoint of {b.name} is damaged: {exc}", hint="delete it") from exc
        _replace(b.module, n, q.to(dev))


def _calibrate_block(
    b: Block,
    specs: dict[str, QuantSpec],
    streams: _Streams,
    call: tuple[nn.Module, tuple, dict, str],
    config: CalibConfig,
    check_cancel: Callable[[], None] | None,
) -> BlockReport:
    """Advance the full-precision stream, tune the block, advance the quantized stream (all in place)."""
    _, args, kwargs, _ = call
    if config.target == "fp":
        streams.advance("fp", *call)
        targets = streams.fp
    else:
        targets, streams.batch = run_block(
            b.module, streams.q, args, kwargs, device=streams.device, batch=streams.batch, name=b.name
        )
        streams.advance("fp", *call)
    check_finite(targets, f"{b.name}: the full-precision block's output")
    result = tune_block(
        b.module,
        specs,
        streams.q,
        targets,
        args,
        kwargs,
        config,
        device=streams.device,
        index=b.index,
        name=b.name,
        outputs=streams.q,
        check_cancel=check_cancel,
        micro_batch=streams.batch,
    )
    streams.batch = min(streams.batch, result.batch_size)
    return BlockReport(
        index=b.index,
        name=b.name,
        formats={n: s.name for n, s in specs.items()},
        loss_before=result.loss_before,
        loss_after=result.loss_after,
        best_iter=result.best_iter,
        kept_start=result.kept_start,
    )


def calibration_windows(tokenizer: Any, config: CalibConfig, text: str | None = None) -> list[list[int]]:
    """`config.samples` windows of `config.seq_len` tokens from `text` (default: the stdlib calibration split).

    Only about four times the needed text is tokenized, taken as evenly spaced slices of the whole, so
    the samples cover all of it without tokenizing megabytes; windows are drawn with `config.seed`.
    """
    from bitsmith.engine.data import stdlib_text, token_windows

    text = stdlib_text("calib") if text is None else text
    pieces = 2 * config.samples
    piece = 8 * config.seq_len  # characters: about two windows' worth at ~4 characters per token
    if len(text) > pieces * piece:
        step = len(text) // pieces
        text = "\n\n".join(text[i * step : i * step + piece] for i in range(pieces))
    ids = tokenizer(text)["input_ids"]
    return token_windows(ids, config.samples, config.seq_len, seed=config.seed)
