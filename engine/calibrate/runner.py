"""Running one block over a stream of activations in chunks, with out-of-memory retries and NaN checks.

A stream is a tensor [n, T, H] of hidden states, one row per calibration window, kept on the CPU when
offloaded; chunks of it go to the block's device and the outputs come back. On out-of-memory the
chunk is halved and the work retried, down to one sample, then a clear OutOfMemoryError is raised.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

from bitsmith.engine.errors import BadInputError, OutOfMemoryError

from .capture import call_block
from .loss import loss_terms

T = TypeVar("T")


def is_oom(exc: BaseException) -> bool:
    """Whether an exception is an accelerator or host out-of-memory error."""
    if isinstance(exc, getattr(torch, "OutOfMemoryError", ())) or isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def free_memory(device: torch.device | str) -> None:
    """Give cached accelerator memory back after an out-of-memory error."""
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()


def with_oom_retry(fn: Callable[[int], T], batch: int, what: str, device: torch.device | str) -> tuple[T, int]:
    """Call fn(batch), halving `batch` after each out-of-memory error; returns (result, batch that worked)."""
    while True:
        try:
            return fn(batch), batch
        except Exception as exc:
            if not is_oom(exc):
                raise
            free_memory(device)
            if batch <= 1:
                raise OutOfMemoryError(
                    f"out of memory in {what} even with one calibration sample at a time",
                    hint="use shorter samples (seq_len), a smaller model, or a device with more memory",
                ) from exc
            batch = max(1, batch // 2)


def check_finite(x: torch.Tensor, what: str) -> None:
    """BadInputError naming `what` if x holds NaN or Inf."""
    if not bool(torch.isfinite(x).all()):
        nan = int(torch.isnan(x).sum())
        raise BadInputError(
            f"{what} has {nan} NaN and {int((~torch.isfinite(x)).sum()) - nan} Inf values",
            hint="the model produces non-finite activations on the calibration text: check the model file, "
            "load it in float32, or calibrate on other text",
        )


@torch.no_grad()
def run_block(
    block: nn.Module,
    stream: torch.Tensor,
    args: tuple,
    kwargs: dict,
    *,
    device: torch.device | str,
    batch: int,
    out: torch.Tensor | None = None,
    name: str = "block",
) -> tuple[torch.Tensor, int]:
    """Block outputs for a whole stream [n, T, H], written into `out` (may be `stream` itself: in place).

    Returns (outputs, the chunk size that fitted). Chunks are independent, so in-place is safe.
    """
    out = torch.empty_like(stream) if out is None else out

    def work(b: int) -> torch.Tensor:
        for i in range(0, stream.shape[0], b):
            y = call_block(block, stream[i : i + b].to(device), args, kwargs, device)
            out[i : i + b] = y.to(out.device, out.dtype)
        return out

    return with_oom_retry(work, batch, f"{name} (forward)", device)


@torch.no_grad()
def stream_mse(
    fn: Callable[[torch.Tensor], torch.Tensor],
    stream: torch.Tensor,
    target: torch.Tensor,
    *,
    device: torch.device | str,
    batch: int,
    name: str = "block",
    cap: float | None = None,
) -> float:
    """The block loss (engine/calibrate/loss.py) of fn(stream chunk) against target over all samples."""

    def work(b: int) -> float:
        total = count = 0.0
        for i in range(0, stream.shape[0], b):
            y = fn(stream[i : i + b].to(device))
            s, c = loss_terms(y, target[i : i + b].to(device), cap)
            total, count = total + s, count + c
        return total / count

    return with_oom_retry(work, batch, f"{name} (loss)", device)[0]
