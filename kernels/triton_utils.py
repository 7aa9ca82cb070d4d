"""Plain-Python helpers for the Triton kernels: interpreter detection, block arithmetic, per-shape tuning.

Importable without triton (macOS): nothing here imports it at module level.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

Config = dict[str, Any]

# Activation dtypes the kernels accept; the interpreter has no bfloat16.
GPU_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
INTERPRETER_DTYPES = (torch.float16, torch.float32)

# Under the interpreter the "GPU" is imaginary; a small SM count keeps grids small and still splits K.
_INTERPRETER_SM_COUNT = 4

_TUNED: dict[tuple, Config] = {}


def interpreter_active() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1, set before importing triton)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache
def triton_available() -> bool:
    """Whether `import triton` works here (it does not on macOS, nor on a broken install)."""
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def kernels_usable(device: torch.device) -> bool:
    """Whether Triton kernels can run on tensors of `device`: a CUDA GPU, or the CPU under the interpreter."""
    if not triton_available():
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and interpreter_active()


def cdiv(a: int, b: int) -> int:
    """Ceiling division of non-negative ints."""
    return -(-a // b)


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (1 for n <= 1)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def m_bucket(m: int) -> int:
    """Bucket of the row count used as a tuning key: powers of two, everything past 1024 together."""
    return min(next_pow2(m), 1024)


def sm_count(device: torch.device) -> int:
    """Number of multiprocessors to fill (a small fixed number under the interpreter)."""
    if device.type != "cuda" or interpreter_active():
        return _INTERPRETER_SM_COUNT
    return _cuda_sm_count(device.index if device.index is not None else torch.cuda.current_device())


@functools.cache
def _cuda_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def choose_split(tiles: int, chunks: int, device: torch.device, waves: int) -> tuple[int, int]:
    """Split a K loop of `chunks` steps so that `tiles * split` programs give about `waves` per SM.

    Returns (split, chunks_per_split) with no empty split.
    """
    want = max(1, cdiv(waves * sm_count(device), max(tiles, 1)))
    split = max(1, min(want, chunks))
    per = cdiv(chunks, split)
    return cdiv(chunks, per), per


def triton_width(bits: int) -> bool:
    """Whether the Triton kernels unpack this width: a power-of-two number of codes per word (not 3-bit's 10)."""
    return 32 % bits == 0


def words_fit_groups(bits: int, group_size: int) -> bool:
    """Whether every packed word lies inside one group (group_size a multiple of 32 // bits): GEMV, split-K."""
    return triton_width(bits) and group_size % (32 // bits) == 0


def tile_block_k_options(bits: int, group_size: int) -> list[int]:
    """K block sizes (powers of two, >= 16 and >= 32 // bits) that tile a group exactly, largest first."""
    if not triton_width(bits):
        return []
    return [bk for bk in (128, 64, 32, 16) if group_size % bk == 0 and bk >= 32 // bits]


def autotune_enabled() -> bool:
    """Tuning runs on a GPU unless BITSMITH_AUTOTUNE=0 (then the first candidate, a heuristic, is used)."""
    return not interpreter_active() and os.environ.get("BITSMITH_AUTOTUNE", "1") != "0"


def pick_config(key: tuple, candidates: Sequence[Config], launch: Callable[[Config], Any]) -> Config:
    """The fastest of `candidates` for `key`, timed once per process on the GPU and cached.

    Under the interpreter, with tuning disabled, or during CUDA graph capture, the first candidate is used
    (so the order of `candidates` is the heuristic choice). `launch(cfg)` must run the whole operation.
    """
    if not candidates:
        raise ValueError(f"no kernel configuration fits {key}")
    if len(candidates) == 1 or not autotune_enabled():
        return candidates[0]
    if key in _TUNED:
        return _TUNED[key]
    if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
        return candidates[0]
    best, best_ms = candidates[0], float("inf")
    for cfg in candidates:
        try:
            ms = gpu_time_ms(lambda cfg=cfg: launch(cfg))
        except Exception:  # a config that does not compile on this GPU (e.g. out of shared memory)
            continue
        if ms < best_ms:
            best, best_ms = cfg, ms
    _TUNED[key] = best
    return best


def gpu_time_ms(fn: Callable[[], Any]) -> float:
    """Median GPU time of `fn` in milliseconds, replayed from a CUDA graph.

    Timing eager launches would measure the host: a ~15 us kernel is shorter than Triton's launch
    overhead in Python, so eager timings rank configurations by their launch cost (seen on an H100:
    the tuner preferred a slower one-launch path over a faster two-launch one). `fn` runs once eagerly
    first, so anything it compiles or tunes inside happens outside the capture.
    """
    from triton.testing import do_bench, do_bench_cudagraph

    fn()
    torch.cuda.synchronize()
    try:
        return float(do_bench_cudagraph(fn, rep=20, return_mode="median"))
    except Exception:  # a callable that cannot be captured (it synchronizes, say): time it eagerly
        torch.cuda.synchronize()
        return float(do_bench(fn, warmup=5, rep=25, return_mode="median"))


def tuned_configs() -> dict[tuple, Config]:
    """A copy of the configurations chosen so far (for benchmarks and logs)."""
    return dict(_TUNED)


def workspace_view(given: torch.Tensor | None, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """A float32 buffer of `shape` for split-K partials: a view of the caller's buffer if given, else new."""
    need = 1
    for d in shape:
        need *= d
    if given is None:
        return torch.empty(shape, dtype=torch.float32, device=device)
    if given.dtype != torch.float32 or given.device != device or given.numel() < need or not given.is_contiguous():
        raise ValueError(
            f"workspace must be a contiguous float32 tensor on {device} with at least {need} elements, "
            f"got {given.dtype} {tuple(given.shape)} on {given.device}"
        )
    return given.view(-1)[:need].view(shape)
