"""Capture what the decoder blocks are called with: block 0's input hidden states and every block's arguments.

The classic "catcher", made generic: for the time of the capture every block in the model's block list
is swapped for a stub that records its call (positional and keyword arguments) and either passes the
hidden states through or stops the forward with an exception. Nothing of the real blocks runs, so
their weights may stay off the device. Stubs copy the block's plain attributes (e.g. `attention_type`,
which Qwen2/Gemma use to pick a sliding-window mask or local rotary embeddings per layer), so each
block's recorded keyword arguments are the ones transformers would pass *that* block.

Windows are run one at a time (batch 1): every keyword tensor then has a batch dimension of 1 (or
none), which broadcasts against any mini-batch of the captured hidden states. The arguments are
recorded once, from the first window, and checked against the second: with equal-length windows and no
padding they do not depend on the tokens. The KV cache is switched off (`use_cache=False`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bitsmith.engine.errors import BadInputError, UnsupportedModelError
from bitsmith.engine.model import Block, find_blocks

_DROP_KWARGS = ("past_key_values", "past_key_value", "layer_past")
_PLAIN = (int, float, str, bool, type(None))


class _Stop(Exception):
    """Raised by a stub to end the forward once what is needed was recorded."""


@dataclass
class CapturedInputs:
    """Block 0's inputs [n, T, H] and, per block, the extra positional and keyword arguments it is called with."""

    hidden: torch.Tensor
    block_args: list[tuple[Any, ...]]
    block_kwargs: list[dict[str, Any]]

    @property
    def samples(self) -> int:
        """Number of captured windows."""
        return int(self.hidden.shape[0])


def windows_tensor(windows: Sequence[Sequence[int]] | torch.Tensor) -> torch.Tensor:
    """Token windows as a LongTensor [n, T]; BadInputError unless they are non-empty and of equal length."""
    if isinstance(windows, torch.Tensor):
        ids = windows
    else:
        if len(windows) == 0:
            raise BadInputError("no calibration samples were given", hint="give at least one token window")
        lengths = {len(w) for w in windows}
        if len(lengths) != 1:
            raise BadInputError(
                f"calibration windows have different lengths {sorted(lengths)[:5]}",
                hint="cut every sample to the same number of tokens (engine.data.token_windows does)",
            )
        ids = torch.tensor([list(w) for w in windows], dtype=torch.long)
    if ids.dim() != 2 or ids.shape[0] == 0 or ids.shape[1] < 2:
        raise BadInputError(
            f"calibration windows must be [samples, tokens] with at least 2 tokens, got shape {tuple(ids.shape)}",
            hint="give a list of equal-length token lists",
        )
    if ids.dtype not in (torch.int64, torch.int32):
        raise BadInputError(f"calibration windows must hold token ids (integers), got {ids.dtype}")
    return ids.to(torch.long)


def map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Apply `fn` to every tensor inside nested tuples, lists and dicts (other values unchanged)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, tuple):
        return tuple(map_tensors(v, fn) for v in value)
    if isinstance(value, list):
        return [map_tensors(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: map_tensors(v, fn) for k, v in value.items()}
    return value


def _same(a: Any, b: Any) -> bool:
    """Structural equality of recorded arguments (tensors compared by value)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and bool(torch.equal(a.cpu(), b.cpu()))
        )
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and (a is b or a == b)


class _Stub(nn.Module):
    """Stands in for a block during capture: records its call, then passes through or stops."""

    def __init__(self, block: nn.Module, record: Callable[[tuple, dict], None], stop: bool) -> None:
        super().__init__()
        for key, value in vars(block).items():
            if not key.startswith("_") and isinstance(value, _PLAIN):
                setattr(self, key, value)
        self._record = record
        self._stop = stop

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self._record(args, kwargs)
        if self._stop:
            raise _Stop
        return args[0] if args else kwargs["hidden_states"]


def _split_call(args: tuple, kwargs: dict) -> tuple[torch.Tensor, tuple, dict]:
    """(hidden states, other positional args, keyword args without the KV cache) of one recorded call."""
    kwargs = dict(kwargs)
    hidden = args[0] if args else kwargs.pop("hidden_states", None)
    if not isinstance(hidden, torch.Tensor):
        raise UnsupportedModelError(
            "the decoder blocks are not called with hidden states as their first argument",
            hint="this model's architecture is not supported by block-wise calibration",
        )
    for key in _DROP_KWARGS:
        kwargs.pop(key, None)
    if "use_cache" in kwargs:
        kwargs["use_cache"] = False
    return hidden, tuple(args[1:]), kwargs


def _block_list(model: nn.Module, blocks: list[Block]) -> nn.ModuleList:
    """The ModuleList that holds the blocks (found by the first block's qualified name)."""
    parent_name = blocks[0].name.rsplit(".", 1)[0]
    holder = model.get_submodule(parent_name)
    if not isinstance(holder, nn.ModuleList):
        raise UnsupportedModelError(f"{parent_name} is not a list of blocks", hint="unsupported architecture")
    return holder


def _input_device(model: nn.Module) -> torch.device:
    """Device of the input embeddings (where token ids must go)."""
    get = getattr(model, "get_input_embeddings", None)
    emb = get() if callable(get) else None
    if emb is not None and getattr(emb, "weight", None) is not None:
        return emb.weight.device
    return next(model.parameters()).device


@torch.no_grad()
def capture_block_inputs(
    model: nn.Module,
    windows: Sequence[Sequence[int]] | torch.Tensor,
    *,
    blocks: list[Block] | None = None,
    store_device: torch.device | str = "cpu",
    on_window: Callable[[int, int], None] | None = None,
) -> CapturedInputs:
    """Run `model` on each token window up to block 0 and return its inputs plus every block's call arguments.

    The model's non-block modules (embeddings, rotary embedding) run where they are; the blocks never
    run. `store_device` is where the hidden states are kept ("cpu" offloads them off the accelerator).
    Arguments are stored on the CPU and moved to the block's device when it runs.
    """
    ids = windows_tensor(windows)
    blocks = blocks if blocks is not None else find_blocks(model)
    holder = _block_list(model, blocks)
    originals = list(holder)
    if len(originals) != len(blocks) or any(a is not b.module for a, b in zip(originals, blocks)):
        raise UnsupportedModelError("the model's block list does not match its blocks", hint="unsupported model")
    n, t = ids.shape
    calls: list[list[tuple[tuple, dict]]] = [[] for _ in blocks]
    latest: list[tuple[tuple, dict]] = [((), {})]
    hidden: torch.Tensor | None = None
    dev = _input_device(model)
    try:
        for i in range(n):
            full = i < 2  # the first window records every block's arguments, the second checks them
            for j, blk in enumerate(originals):
                last = j == len(originals) - 1 if full else j == 0
                if full:
                    record = lambda a, k, j=j: calls[j].append((a, k))
                elif j == 0:
                    record = lambda a, k: latest.__setitem__(0, (a, k))
                else:
                    record = lambda a, k: None
                holder[j] = _Stub(blk, record, stop=last)
            try:
                model(input_ids=ids[i : i + 1].to(dev), use_cache=False)
            except _Stop:
                pass
            else:
                raise UnsupportedModelError(
                    f"{type(model).__name__} did not call its decoder blocks",
                    hint="block-wise calibration needs a model whose forward runs its blocks in order",
                )
            h, _, _ = _split_call(*(calls[0][-1] if full else latest[0]))
            if h.shape[:2] != (1, t):
                raise UnsupportedModelError(
                    f"block 0 received hidden states of shape {tuple(h.shape)} for one window of {t} tokens",
                    hint="unsupported architecture",
                )
            if hidden is None:
                hidden = torch.empty((n, t, h.shape[-1]), dtype=h.dtype, device=store_device)
            hidden[i] = h[0].to(store_device)
            if on_window:
                on_window(i + 1, n)
    finally:
        for j, blk in enumerate(originals):
            holder[j] = blk
    block_args, block_kwargs = [], []
    memo: dict[int, torch.Tensor] = {}  # blocks share the same mask / rotary tensors: keep one CPU copy

    def to_cpu(x: torch.Tensor) -> torch.Tensor:
        if id(x) not in memo:
            memo[id(x)] = x.detach().cpu()
        return memo[id(x)]

    for j, rec in enumerate(calls):
        if not rec:
            raise UnsupportedModelError(f"block {blocks[j].name} was never called", hint="unsupported architecture")
        _, args, kwargs = _split_call(*rec[0])
        if len(rec) > 1:
            _, args2, kwargs2 = _split_call(*rec[1])
            if not (_same(args, args2) and _same(kwargs, kwargs2)):
                raise UnsupportedModelError(
                    f"block {blocks[j].name} is called with arguments that depend on the tokens",
                    hint="block-wise calibration assumes equal-length windows without padding",
                )
        block_args.append(map_tensors(args, to_cpu))
        block_kwargs.append(map_tensors(kwargs, to_cpu))
    assert hidden is not None
    return CapturedInputs(hidden=hidden, block_args=block_args, block_kwargs=block_kwargs)


def call_block(
    block: nn.Module, hidden: torch.Tensor, args: tuple, kwargs: dict, device: torch.device | str | None = None
) -> torch.Tensor:
    """Run one block on hidden states [B, T, H] with its recorded arguments (moved to `device`); returns [B, T, H]."""
    device = hidden.device if device is None else device
    args = map_tensors(args, lambda x: x.to(device))
    kwargs = map_tensors(kwargs, lambda x: x.to(device))
    out = block(hidden.to(device), *args, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out
