"""Forward passes of a StreamedModel: token batches through the embeddings, then block by block, then the head.

Every window of a batch goes through block i before block i+1 is read from the files, so each block is
materialised once per pass however many windows there are; the hidden states of all windows wait on the
CPU (a pass takes as many windows as `activation_budget` bytes of them allow). The embeddings and each
block's call arguments (mask, rotary tables) come from engine/calibrate/capture.py, whose stubs never run
a real block. The head — whatever the model does after its blocks: final norm, `lm_head`, logit
soft-capping, its loss — runs as the model's own forward with every block replaced by a stub that hands
back the stored final hidden states, so nothing architecture-specific is re-implemented here.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from bitsmith.engine.calibrate.capture import CapturedInputs, _block_list, _Stub, capture_block_inputs
from bitsmith.engine.calibrate.runner import run_block
from bitsmith.engine.eval.perplexity import PerplexityResult, scored_ids, window_nll, window_plan
from bitsmith.engine.model_stream import StreamedModel, activation_budget

BATCH = 8  # windows per chunk through one block (halved on out-of-memory by run_block)


class _Inject(_Stub):
    """Stands in for the first block during a head pass: returns the hidden states it was given."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__(block, lambda a, k: None, stop=False)
        self.value: torch.Tensor | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.value


@contextlib.contextmanager
def head_only(streamed: StreamedModel) -> Iterator[Callable[..., Any]]:
    """Yields run(ids [B, T], hidden [B, T, H], **kwargs) → the model's output with `hidden` as the last
    block's output (the blocks are stubs meanwhile; their weights are never touched)."""
    model, blocks = streamed.model, streamed.blocks
    holder = _block_list(model, blocks)
    originals = list(holder)
    inject = _Inject(originals[0])
    try:
        holder[0] = inject
        for j in range(1, len(originals)):
            holder[j] = _Stub(originals[j], lambda a, k: None, stop=False)

        def run(ids: torch.Tensor, hidden: torch.Tensor, **kwargs: Any) -> Any:
            inject.value = hidden
            try:
                return model(input_ids=ids, use_cache=False, **kwargs)
            finally:
                inject.value = None

        yield run
    finally:
        for j, blk in enumerate(originals):
            holder[j] = blk


def _input_device(streamed: StreamedModel) -> torch.device:
    return streamed.model.get_input_embeddings().weight.device


def run_blocks(
    streamed: StreamedModel,
    groups: list[CapturedInputs],
    *,
    device: torch.device | str = "cpu",
    on_block: Callable[[int, int], None] | None = None,
    check_cancel: Callable[[], None] | None = None,
) -> None:
    """Advance every group's hidden states (in place) through all blocks, each block materialised once."""
    batch = BATCH
    n = len(streamed.blocks)
    for b in streamed.blocks:
        if check_cancel:
            check_cancel()
        with streamed.materialise(b.index) as blk:
            home = next(blk.module.parameters()).device
            blk.module.to(device)
            for g in groups:
                _, batch = run_block(
                    blk.module, g.hidden, g.block_args[b.index], g.block_kwargs[b.index],
                    device=device, batch=batch, out=g.hidden, name=b.name,
                )
            blk.module.to(home)
        if on_block:
            on_block(b.index + 1, n)


def _hidden_size(streamed: StreamedModel) -> int:
    return int(streamed.model.get_input_embeddings().weight.shape[-1])


def windows_per_pass(
    streamed: StreamedModel, tokens_per_window: int, copies: int = 1, budget: int | None = None
) -> int:
    """How many windows of `tokens_per_window` tokens fit the activation budget with `copies` hidden states each."""
    per = copies * tokens_per_window * _hidden_size(streamed) * torch.finfo(streamed.dtype).bits // 8
    return max(1, (budget if budget is not None else activation_budget()) // max(per, 1))


@torch.no_grad()
def window_logits(
    streamed: StreamedModel,
    ids: torch.Tensor,
    *,
    per_pass: int | None = None,
    device: torch.device | str = "cpu",
    check_cancel: Callable[[], None] | None = None,
) -> Iterator[torch.Tensor]:
    """Logits [T, V] of each equal-length window of ids [n, T], in order; every block is read once per pass of
    `per_pass` windows (default: as many as the activation budget holds), so one window's logits exist at a time."""
    per_pass = per_pass or windows_per_pass(streamed, ids.shape[1])
    dev = _input_device(streamed)
    for start in range(0, ids.shape[0], per_pass):
        part = ids[start : start + per_pass]
        captured = capture_block_inputs(streamed.model, part, blocks=streamed.blocks)
        run_blocks(streamed, [captured], device=device, check_cancel=check_cancel)
        with head_only(streamed) as head:
            for i in range(part.shape[0]):
                yield head(part[i : i + 1].to(dev), captured.hidden[i : i + 1].to(dev)).logits[0]


@torch.no_grad()
def streamed_logits(streamed: StreamedModel, ids: torch.Tensor, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """Logits [n, T, V] for equal-length token windows [n, T] (all in one pass: meant for small inputs)."""
    return torch.stack(list(window_logits(streamed, ids, per_pass=ids.shape[0], device=device)))


@torch.no_grad()
def streamed_perplexity(
    streamed: StreamedModel,
    token_ids: torch.Tensor,
    window: int = 512,
    stride: int | None = None,
    max_tokens: int | None = None,
    *,
    device: torch.device | str = "cpu",
    budget: int | None = None,
    on_block: Callable[[int, int], None] | None = None,
    check_cancel: Callable[[], None] | None = None,
) -> PerplexityResult:
    """engine.eval.perplexity.perplexity for a StreamedModel: the same windows, scores and sums, with every
    block read once per pass of as many windows as `budget` bytes of hidden states hold."""
    ids, stride = scored_ids(token_ids, window, stride, max_tokens)
    plan = window_plan(ids.numel(), window, stride)
    per_pass = windows_per_pass(streamed, window, budget=budget)
    scores: list[tuple[float, int]] = [(0.0, 0)] * len(plan)
    dev = _input_device(streamed)
    for start in range(0, len(plan), per_pass):
        part = list(range(start, min(start + per_pass, len(plan))))
        by_len: dict[int, list[int]] = {}
        for i in part:
            begin, end, _ = plan[i]
            by_len.setdefault(end - begin, []).append(i)
        members = list(by_len.values())
        groups = [
            capture_block_inputs(streamed.model, torch.stack([ids[plan[i][0] : plan[i][1]] for i in idx]),
                                 blocks=streamed.blocks)
            for idx in members
        ]
        run_blocks(streamed, groups, device=device, on_block=on_block, check_cancel=check_cancel)
        with head_only(streamed) as head:
            for idx, g in zip(members, groups):
                for row, i in enumerate(idx):
                    begin, end, first_new = plan[i]
                    chunk = ids[begin:end].to(dev).unsqueeze(0)
                    logits = head(chunk, g.hidden[row : row + 1].to(dev)).logits[0, :-1].float()
                    scores[i] = window_nll(logits, chunk[0, 1:], first_new, f"window {i} (tokens {begin}..{end})")
        del groups
    total_nll, total_tokens = 0.0, 0
    for s, n in scores:  # summed in window order, as perplexity() does
        total_nll += s
        total_tokens += n
    mean = total_nll / total_tokens
    return PerplexityResult(math.exp(mean), mean, total_tokens, len(plan), window, stride)
