"""The sensitivity measurement of engine/search/measure.py for a StreamedModel, one block in memory at a time.

Same signal (diagonal empirical Fisher × ΔW², per window of batch 1, scaled the same way, with the same
per-input-channel units for the channel-mix search), computed without the whole model: the gradient of
each window's loss is carried backwards block by block.

    forward   every window through block 0, 1, …, L-1 (each block read from the files once), keeping
              every block's input on the CPU;
    top       the gradient of the loss with respect to the last block's output, from the model's own
              head (final norm, lm_head, loss) fed with the stored final hidden states;
    backward  for block L-1 down to 0: read it again, recompute its forward on each window's stored input
              with autograd, and take in one step the gradient to its input (handed to the block below)
              and to its linear weights, whose squares are summed over the windows into F; then
              ΔW² of each linear in each format is computed one linear at a time and Σ F ⊙ ΔW² recorded.

Σ_s g_s² ⊙ ΔW² = (Σ_s g_s²) ⊙ ΔW², so the result equals measure_model's up to float summation order (the
tests check 1e-4 relative; on SmolLM2 it agrees to about 1e-8). Memory: one block's weights, its F (float32)
and one linear's ΔW² — where measure_model holds the whole model, its gradients' hooks and every layer's ΔW²
in every format — plus L + 2 hidden states per window for the windows of one pass. Windows beyond the
activation budget go into further passes, each reading every block twice and computing ΔW² again (the
quantizer's cost is paid once per pass). Runs on `device` (the CPU by default, as measure_model on a model
loaded by load_model).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch

from bitsmith.engine.calibrate.capture import call_block, capture_block_inputs, map_tensors, windows_tensor
from bitsmith.engine.calibrate.runner import run_block
from bitsmith.engine.errors import BadInputError
from bitsmith.engine.memory import release_free_memory
from bitsmith.engine.model_stream import StreamedModel
from bitsmith.engine.quant.bpw import layer_bits
from bitsmith.engine.quant.spec import parse_spec
from bitsmith.engine.search.measure import LayerMeasure, Measurement, channel_unit, quantization_deltas, unit_sums
from bitsmith.engine.stream_forward import BATCH, head_only, windows_per_pass


def measure_streamed(
    streamed: StreamedModel,
    windows: Sequence[Sequence[int]],
    formats: Sequence[str] = ("int4_g128", "int2_g64"),
    method: str = "hqq",
    on_progress: Callable[[str, int, int], None] | None = None,
    check_cancel: Callable[[], None] | None = None,
    *,
    budget: int | None = None,
    device: torch.device | str = "cpu",
) -> Measurement:
    """measure_model's table for a streamed model; `budget` bounds the bytes of stored hidden states per pass."""
    if not windows:
        raise BadInputError("no calibration samples to measure with", "give calibration text of at least one sample")
    start = time.perf_counter()
    ids = windows_tensor(windows)
    n, seq_len = ids.shape
    blocks = streamed.blocks
    specs = [parse_spec(f) for f in formats]
    # per input channel, as measure_model keeps it: Σ over outputs of F ⊙ ΔW² (the channel-mix units come from it)
    acc: dict[str, dict[str, torch.Tensor]] = {}
    shapes: dict[str, tuple[int, int]] = {}
    for b in blocks:
        for name, lin in b.linears.items():
            acc[f"{b.name}.{name}"] = {f: torch.zeros(lin.in_features, dtype=torch.float64) for f in formats}
            shapes[f"{b.name}.{name}"] = (lin.out_features, lin.in_features)
    per_pass = windows_per_pass(streamed, seq_len, copies=len(blocks) + 2, budget=budget)
    passes = list(range(0, n, per_pass))
    steps = 2 * len(blocks) * len(passes)
    done = 0

    def step(stage: str) -> None:
        nonlocal done
        done += 1
        if on_progress:
            on_progress(stage, done, steps)
        if check_cancel:
            check_cancel()

    saved = {p: p.requires_grad for p in streamed.model.parameters()}
    try:
        for p in streamed.model.parameters():
            p.requires_grad_(False)
        for first in passes:
            part = ids[first : first + per_pass]
            captured = capture_block_inputs(streamed.model, part, blocks=blocks)
            inputs = _forward(streamed, captured, device, lambda: step("forward"))
            grads = _top_gradients(streamed, part, inputs.pop(), first)
            for b in reversed(blocks):
                _backward_block(streamed, b.index, inputs.pop(), grads, captured, formats, method, acc, device)
                step("fisher")
    finally:
        for p, flag in saved.items():
            p.requires_grad_(flag)
        captured = inputs = grads = None  # the stored hidden states of the last pass
        release_free_memory()
    # as measure_model: per-sequence mean loss, E[g_seq²] ≈ E[g_tok²] / T, so F_tok ≈ T·mean_s g_seq²
    scale = 0.5 * (seq_len - 1) / n
    unit = channel_unit(formats)
    layers = []
    for name in acc:
        groups = {f: [e * scale for e in unit_sums(acc[name][f], unit)] for f in formats}
        layers.append(LayerMeasure(
            name=name,
            out_features=shapes[name][0],
            in_features=shapes[name][1],
            bits={f: layer_bits(*shapes[name], spec).total for f, spec in zip(formats, specs)},
            errors={f: math.fsum(groups[f]) for f in formats},
            group_errors=groups,
        ))
    return Measurement(
        formats=list(formats), method=method, samples=n, seq_len=seq_len, layers=layers,
        seconds=time.perf_counter() - start, unit=unit,
    )


def _forward(streamed: StreamedModel, captured, device, on_block: Callable[[], None]) -> list[torch.Tensor]:
    """[input of block 0, …, input of block L-1, output of block L-1], each [n, T, H] on the CPU."""
    states = [captured.hidden]
    batch = BATCH
    for b in streamed.blocks:
        with streamed.materialise(b.index) as blk:
            blk.module.to(device)
            out, batch = run_block(
                blk.module, states[-1], captured.block_args[b.index], captured.block_kwargs[b.index],
                device=device, batch=batch, name=b.name,
            )
            blk.module.to("cpu")
        states.append(out.to("cpu"))
        on_block()
    return states


def _top_gradients(streamed: StreamedModel, ids: torch.Tensor, final: torch.Tensor, first: int) -> torch.Tensor:
    """d loss_s / d (last block's output) for every window s, from the model's own head and loss."""
    grads = torch.empty_like(final)
    dev = streamed.model.get_input_embeddings().weight.device
    with head_only(streamed) as head:
        for s in range(final.shape[0]):
            h = final[s : s + 1].to(dev).requires_grad_(True)
            row = ids[s : s + 1].to(dev)
            loss = head(row, h, labels=row).loss
            if not torch.isfinite(loss):
                raise ValueError(f"the model's loss is {float(loss)} on calibration sample {first + s}")
            (g,) = torch.autograd.grad(loss, h)
            grads[s] = g[0].to(grads.device)
    return grads


def _backward_block(
    streamed: StreamedModel,
    index: int,
    inputs: torch.Tensor,
    grads: torch.Tensor,
    captured,
    formats: Sequence[str],
    method: str,
    acc: dict[str, dict[str, torch.Tensor]],
    device: torch.device | str,
) -> None:
    """Carry `grads` (in place) from block `index`'s output to its input, adding its linears' Σ F ⊙ ΔW² to `acc`."""
    b = streamed.blocks[index]
    with streamed.materialise(index) as blk:
        blk.module.to(device)
        linears = {f"{b.name}.{n}": lin for n, lin in blk.linears.items()}
        weights = [lin.weight for lin in linears.values()]
        fisher = [torch.zeros_like(w, dtype=torch.float32) for w in weights]
        args = map_tensors(captured.block_args[index], lambda x: x.to(device))
        kwargs = map_tensors(captured.block_kwargs[index], lambda x: x.to(device))
        for w in weights:
            w.requires_grad_(True)
        try:
            for s in range(inputs.shape[0]):
                x = inputs[s : s + 1].to(device).requires_grad_(True)
                with torch.enable_grad():
                    y = call_block(blk.module, x, args, kwargs, device)
                    got = torch.autograd.grad(y, [x, *weights], grad_outputs=grads[s : s + 1].to(device, y.dtype))
                grads[s] = got[0][0].to(grads.device, grads.dtype)
                for f, g in zip(fisher, got[1:]):
                    f.add_(g.detach().float().square())
        finally:
            for w in weights:
                w.requires_grad_(False)
        for (name, lin), f in zip(linears.items(), fisher):
            for fmt in formats:
                delta = quantization_deltas({name: lin}, [fmt], method)[name][fmt]
                acc[name][fmt] += (f * delta.to(f.device)).sum(dim=0).to("cpu", torch.float64)
                del delta
        blk.module.to("cpu")
