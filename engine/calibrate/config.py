"""`CalibConfig`: every knob of block-wise calibration, and the named presets "demo", "default", "best".

On a GPU the presets are AutoRound's recipes (Cheng et al., "Optimize Weight Rounding via Signed
Gradient Descent", and intel/auto-round's `--iters 200 --nsamples 128 --seqlen 2048` default and its
"best" recipe). On a CPU they are scaled down so that a 135M-parameter model calibrates in minutes on
two cores: fewer iterations, fewer and shorter samples (tests/benchmarks/bench_calibrate.py measures them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from bitsmith.engine.errors import BadInputError

OPTIMIZERS = ("signsgd", "adam")
TARGETS = ("fp", "q")
PARAM_DTYPES = ("fp32", "bf16")


@dataclass(frozen=True)
class CalibConfig:
    """How to calibrate: iterations, learning rate, samples, mini-batch, loss target and what is tuned.

    * `target` — what the quantized block (always fed the *quantized-stream* input) must reproduce:
      "fp" (default, AutoRound's and DESIGN §2's choice) the full-precision block's output on the
      full-precision-stream input, so each block also corrects the error accumulated upstream;
      "q" the full-precision block's output on the quantized-stream input (GPTQ-style, layer-local).
    * `lr` None means 1 / iters for SignSGD (AutoRound) and 5e-3 for Adam; it decays linearly to 0.
    * `token_cap` caps the loss weight of massive-activation tokens (attention sinks) at that multiple of
      the median token RMS (engine/calibrate/loss.py); None is the plain MSE (AutoRound's loss).
    * `stats_iters` > 0 adds a stage that keeps the codes and tunes scales (and non-integer zeros) by Adam.
    * `amp` runs the tuning forward and backward in bfloat16 autocast (AutoRound does on GPUs); None
      turns it on where bf16 matrix products are fast (CUDA with bf16, CPUs with AVX512-BF16 or AMX).
      Activation streams and the reported losses stay in the model's dtype.
    * `device` None picks CUDA when available; `offload` None keeps activations on the CPU unless the
      device is an accelerator with room for them.
    """

    iters: int = 200
    lr: float | None = None
    optimizer: str = "signsgd"
    samples: int = 128
    seq_len: int = 2048
    batch_size: int = 8
    target: str = "fp"
    tune_rounding: bool = True
    tune_clip: bool = True
    clip_min: float = 0.5
    stats_iters: int = 0
    stats_lr: float = 1e-3
    token_cap: float | None = 5.0
    keep_best: bool = True
    param_dtype: str = "fp32"
    amp: bool | None = None
    seed: int = 42
    device: str | None = None
    offload: bool | None = None

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> BadInputError:
            return BadInputError(f"calibration setting {field}={getattr(self, field)!r}: {why}", hint=_HINT)

        for name in ("iters", "samples", "seq_len", "batch_size", "stats_iters", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise bad(name, "must be a non-negative integer")
        for name in ("samples", "seq_len", "batch_size"):
            if getattr(self, name) < 1:
                raise bad(name, "must be at least 1")
        if self.seq_len < 2:
            raise bad("seq_len", "must be at least 2 tokens")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"choose one of {OPTIMIZERS}")
        if self.target not in TARGETS:
            raise bad("target", f"choose one of {TARGETS}")
        if self.param_dtype not in PARAM_DTYPES:
            raise bad("param_dtype", f"choose one of {PARAM_DTYPES}")
        if self.lr is not None and not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise bad("lr", "must be a positive number, or None for the optimizer's default")
        if not (isinstance(self.stats_lr, (int, float)) and self.stats_lr > 0):
            raise bad("stats_lr", "must be a positive number")
        if self.token_cap is not None and not (isinstance(self.token_cap, (int, float)) and self.token_cap >= 1):
            raise bad("token_cap", "must be None or a multiple of the median token RMS of at least 1")
        if not (isinstance(self.clip_min, (int, float)) and 0.0 < self.clip_min <= 1.0):
            raise bad("clip_min", "must be in (0, 1]: the smallest fraction of a group's range kept")

    def use_amp(self, device: str | object) -> bool:
        """Whether tuning on `device` runs in bf16 autocast (`amp`, or auto-detected when None)."""
        if self.amp is not None:
            return bool(self.amp)
        import torch

        kind = torch.device(device).type
        if kind == "cuda":
            return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if kind == "cpu":
            try:
                return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
            except (AttributeError, RuntimeError):
                return False
        return False

    @property
    def resolved_lr(self) -> float:
        """The starting learning rate: `lr`, or 1/iters (SignSGD) / 5e-3 (Adam)."""
        if self.lr is not None:
            return float(self.lr)
        return 1.0 / max(self.iters, 1) if self.optimizer == "signsgd" else 5e-3

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields (for the job request, bitsmith.json and the checkpoint)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CalibConfig:
        """Inverse of `to_dict`; unknown keys are a BadInputError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BadInputError(f"unknown calibration settings {unknown}", hint=f"known settings: {sorted(known)}")
        return cls(**data)

    @classmethod
    def preset(cls, name: str, device: str = "cpu", **overrides: Any) -> CalibConfig:
        """The named preset ("demo", "default", "best") for a device kind ("cpu", or "cuda"/"mps"/... = GPU)."""
        table = CPU_PRESETS if str(device).split(":")[0] == "cpu" else GPU_PRESETS
        if name not in table:
            raise BadInputError(f"unknown calibration preset {name!r}", hint=f"choose one of {sorted(table)}")
        return replace(table[name], **overrides)

    def with_(self, **changes: Any) -> CalibConfig:
        """A copy with some settings changed (validated)."""
        return replace(self, **changes)


_HINT = "see CalibConfig in bitsmith.engine.calibrate.config, or pick a preset: demo, default, best"

GPU_PRESETS: dict[str, CalibConfig] = {
    # AutoRound's light recipe (--iters 50, lr 5e-3) on fewer samples: a quick look at a new model.
    "demo": CalibConfig(iters=50, lr=5e-3, samples=32, seq_len=512, batch_size=8),
    # AutoRound's default: 200 iterations, lr = 1/iters, 128 samples × 2048 tokens, batch 8.
    "default": CalibConfig(iters=200, samples=128, seq_len=2048, batch_size=8),
    # AutoRound's "best" recipe: 1000 iterations on 512 samples; then scales tuned on the fixed codes.
    "best": CalibConfig(iters=1000, samples=512, seq_len=2048, batch_size=8, stats_iters=100),
}
"""Presets for an accelerator (AutoRound's recipes)."""

CPU_PRESETS: dict[str, CalibConfig] = {
    "demo": CalibConfig(iters=20, samples=16, seq_len=256, batch_size=4, device="cpu"),
    "default": CalibConfig(iters=50, samples=32, seq_len=512, batch_size=4, device="cpu"),
    "best": CalibConfig(iters=200, samples=64, seq_len=512, batch_size=8, stats_iters=50, device="cpu"),
}
"""Presets scaled down for a CPU (a few minutes for a 135M model on two cores; see the module docstring)."""

PRESETS = {"cpu": CPU_PRESETS, "gpu": GPU_PRESETS}
"""Both preset tables, by device kind."""
