"""Tune one decoder block: SignRound's rounding offsets and clipping factors, optionally scales on fixed codes.

For every quantized linear of the block (weight W [N, K], groups of g inputs, G groups):

* V ∈ [-0.5, 0.5] per weight shifts the rounding: q = clamp(round(W / s + V + z), 0, 2^b - 1);
* α_min, α_max ∈ [clip_min, 1] per group shrink the group's range (AutoRound's min/max scale):
  s = (α_max·max(W) - α_min·min(W)) / (2^b - 1), z = -α_min·min(W) / s (rounded for integer zeros);
* the forward uses Ŵ = (q - z) · s with straight-through rounding, and statistics exactly as they will
  be stored (fp16 scales, or log2-domain codes for double-quantized scales; integer, fp16 or
  double-quantized zeros), so what is tuned is what is saved.

Loss: MSE between the block's output with Ŵ on the quantized-stream input and the target (see
`CalibConfig.target`). Optimizer: AutoRound's signed gradient descent (each step moves every parameter
by ±lr, lr decaying linearly to 0; lr = 1/iters by default, so V can travel at most 0.5) or Adam.
Each iteration draws a random mini-batch of samples; the parameters with the lowest mini-batch loss
seen (measured before the step, as AutoRound does) are kept. At the end the codes are re-rounded
against the stored statistics and each linear becomes a `QuantLinear`; if the tuned block is worse
on all samples than the untuned start (plain min-max rounding), the start is kept instead.

A channel-mix linear (engine/quant/mix.py) is tuned as its parts: one `LinearTuner` per part over the
weight columns perm[slice_i] (`MixTuner`), whose fake-quantized columns are put back in the original input
order for the block's forward; it becomes a `ChannelMixLinear` of the tuned parts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call

from bitsmith.engine.errors import BadInputError, BitsmithError
from bitsmith.engine.quant import stats as st
from bitsmith.engine.quant.groups import SCALE_FLOOR, from_grouped_stats, group_view, to_grouped_stats
from bitsmith.engine.quant.mix import ChannelMix
from bitsmith.engine.quant.mixed_linear import MixedWeight, build_module, mixed_weight_from_parts
from bitsmith.engine.quant.quantize import QuantizedWeight, check_weight
from bitsmith.engine.quant.spec import QuantSpec
from bitsmith.kernels.pack import pack_codes

from .config import CalibConfig
from .loss import block_loss, loss_terms
from .runner import check_finite, free_memory, is_oom, run_block, stream_mse, with_oom_retry

CANCEL_EVERY = 5
"""Iterations between two `check_cancel` calls inside a block."""


class CalibrationError(BitsmithError):
    """Tuning a block failed in a way the user cannot fix by changing the input (e.g. the loss became NaN)."""

    kind = "internal"


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity backward (straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def _ste(x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """`value` forward, gradient of `x` backward."""
    return x + (value - x).detach()


# -- statistics exactly as stored -------------------------------------------------------------------
def store_scales(s: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Scales [N, G, 1] (fp32, may need grad) -> the values storage gives back (STE) and the storage fields.

    fp16 scales are rounded to fp16; double-quantized scales take the nearest log2-domain code on a
    grid fitted to the row (engine/quant/stats.py), decoded in float64 as `stats.decode_scales` does.
    """
    s = s.clamp(min=SCALE_FLOOR)
    flat = from_grouped_stats(s.detach())  # [G, N]
    if not spec.double_quant_scales:
        s16 = flat.clamp(max=st.FP16_MAX).to(torch.float16)
        return _ste(s, to_grouped_stats(s16.to(torch.float32))), {"scales": s16}
    meta = st.scale_grid(flat, spec.scale_bits)
    codes = torch.round(st.scale_position(flat, meta, spec.scale_bits))
    off, step = meta.to(torch.float64)
    s16 = torch.exp2(off + codes.to(torch.float64) * step).to(torch.float16)
    fields = {"scale_codes": codes.to(torch.uint8), "scale_meta": meta}
    return _ste(s, to_grouped_stats(s16.to(torch.float32))), fields


def store_zeros(z: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Zero-points [N, G, 1] -> the values storage gives back (STE) and the storage fields."""
    if not spec.asymmetric:
        return torch.full_like(z, float((spec.maxq + 1) // 2)).detach(), {}
    if spec.integer_zeros:
        zq = torch.clamp(round_ste(z), 0, spec.maxq)
        return zq, {"zero_codes": from_grouped_stats(zq.detach()).to(torch.uint8)}
    flat = from_grouped_stats(z.detach())
    if spec.float_zeros:
        z16 = flat.to(torch.float16)
        return _ste(z, to_grouped_stats(z16.to(torch.float32))), {"zeros": z16}
    codes, meta = st.encode_zeros(flat, spec)
    off, step = meta.to(torch.float64)
    z16 = (off + codes.to(torch.float64) * step).to(torch.float16)
    return _ste(z, to_grouped_stats(z16.to(torch.float32))), {"zero_codes": codes, "zero_meta": meta}


# -- one linear -------------------------------------------------------------------------------------
@dataclass
class LinearTuner:
    """The tunable state of one linear: its grouped weight, rounding offsets V and clipping factors."""

    name: str
    spec: QuantSpec
    weight: torch.Tensor  # fp32 [N, G, g], the short last group padded with the row's last weight
    in_features: int
    lo: torch.Tensor  # [N, G, 1] group minimum (clamped to <= 0 for integer zeros); for symmetric: -max|w|
    hi: torch.Tensor  # [N, G, 1] group maximum (clamped to >= 0 for integer zeros); for symmetric: max|w|
    v: torch.Tensor | None = None
    a_min: torch.Tensor | None = None
    a_max: torch.Tensor | None = None
    codes: torch.Tensor | None = None  # fixed codes [N, G, g] (float) during the scale-tuning stage
    log_s: torch.Tensor | None = None
    d_z: torch.Tensor | None = None
    base_s: torch.Tensor | None = None
    base_z: torch.Tensor | None = None

    @classmethod
    def create(
        cls, name: str, linear: nn.Linear, spec: QuantSpec, config: CalibConfig, device: torch.device | str
    ) -> LinearTuner:
        """Start from min-max rounding: V = 0, α = 1."""
        return cls.from_weight(name, linear.weight, spec, config, device)

    @classmethod
    def from_weight(
        cls, name: str, weight: torch.Tensor, spec: QuantSpec, config: CalibConfig, device: torch.device | str
    ) -> LinearTuner:
        """`create` for a bare weight [N, K] (a channel-mix part's columns)."""
        check_weight(weight, name)
        spec.require_packable()
        w = group_view(weight.detach().to(device, torch.float32), spec.group_size)
        if spec.asymmetric:
            lo, hi = w.amin(dim=-1, keepdim=True), w.amax(dim=-1, keepdim=True)
            if spec.integer_zeros:
                lo, hi = lo.clamp(max=0.0), hi.clamp(min=0.0)
        else:
            hi = w.abs().amax(dim=-1, keepdim=True)
            lo = -hi
        t = cls(name, spec, w, weight.shape[1], lo, hi)
        vdtype = torch.bfloat16 if config.param_dtype == "bf16" else torch.float32
        if config.tune_rounding:
            t.v = torch.zeros_like(w, dtype=vdtype).requires_grad_(True)
        if config.tune_clip:
            t.a_max = torch.ones_like(hi).requires_grad_(True)
            if spec.asymmetric:
                t.a_min = torch.ones_like(lo).requires_grad_(True)
        return t

    # parameters -----------------------------------------------------------------------------------
    def params(self) -> list[torch.Tensor]:
        """The tensors being tuned in the current stage."""
        names = ("log_s", "d_z") if self.codes is not None else ("v", "a_min", "a_max")
        return [p for p in (getattr(self, n) for n in names) if p is not None]

    def clamp_(self, clip_min: float) -> None:
        """Keep V in [-0.5, 0.5] and α in [clip_min, 1] after an optimizer step."""
        with torch.no_grad():
            if self.v is not None:
                self.v.clamp_(-0.5, 0.5)
            for a in (self.a_min, self.a_max):
                if a is not None:
                    a.clamp_(clip_min, 1.0)

    def snapshot(self) -> list[torch.Tensor]:
        """Copies of the current parameters (for keep-best)."""
        return [p.detach().clone() for p in self.params()]

    def restore(self, saved: list[torch.Tensor]) -> None:
        """Put saved parameters back."""
        with torch.no_grad():
            for p, s in zip(self.params(), saved):
                p.copy_(s)

    # forward --------------------------------------------------------------------------------------
    def _stats(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Scale and zero [N, G, 1] as stored (with STE gradients), and the storage fields."""
        spec = self.spec
        if self.codes is not None:  # scale-tuning stage: codes fixed, scales (and non-integer zeros) move
            s, fields = store_scales(self.base_s * torch.exp(self.log_s), spec)
            z_raw = self.base_z if self.d_z is None else self.base_z + self.d_z
            z, zfields = store_zeros(z_raw, spec)
            return s, z, {**fields, **zfields}
        hi = self.hi if self.a_max is None else self.hi * self.a_max
        if not spec.asymmetric:
            s, fields = store_scales(2.0 * hi / spec.maxq, spec)
            z, _ = store_zeros(s, spec)  # the fixed mid-point 2^(b-1), nothing stored
            return s, z, fields
        lo = self.lo if self.a_min is None else self.lo * self.a_min
        s, fields = store_scales((hi - lo) / spec.maxq, spec)
        z, zfields = store_zeros(-lo / s, spec)
        return s, z, {**fields, **zfields}

    def _codes(self, s: torch.Tensor, z: torch.Tensor, ste: bool) -> torch.Tensor:
        if self.codes is not None:
            return self.codes
        x = self.weight / s + z
        if self.v is not None:
            x = x + self.v.to(torch.float32)
        return torch.clamp(round_ste(x) if ste else torch.round(x), 0, self.spec.maxq)

    def fake_weight(self) -> torch.Tensor:
        """Ŵ [N, K] = (q - z)·s with the current parameters (differentiable through STE)."""
        s, z, _ = self._stats()
        q = self._codes(s, z, ste=True)
        n = self.weight.shape[0]
        return ((q - z) * s).reshape(n, -1)[:, : self.in_features]

    @torch.no_grad()
    def quantized(self) -> QuantizedWeight:
        """The stored form of the current parameters: codes re-rounded against the stored statistics."""
        s, z, fields = self._stats()
        q = self._codes(s, z, ste=False)
        n = self.weight.shape[0]
        codes = q.reshape(n, -1)[:, : self.in_features].to(torch.uint8)
        scales, zeros = s.detach(), z.detach()
        stored = st.stored_stats(self.spec, **fields)
        return QuantizedWeight(
            qweight=pack_codes(codes, self.spec.bits),
            stored=stored,
            scales=from_grouped_stats(scales).to(torch.float16),
            zeros=from_grouped_stats(zeros).to(torch.float16),
            spec=self.spec,
            in_features=self.in_features,
            out_features=n,
            name=self.name,
        )

    def start_stats_stage(self) -> None:
        """Freeze the codes of the current parameters and make log-scale (and zero) offsets the parameters."""
        with torch.no_grad():
            s, z, _ = self._stats()
            self.codes = self._codes(s, z, ste=False)
            hi = self.hi if self.a_max is None else self.hi * self.a_max
            lo = self.lo if self.a_min is None else self.lo * self.a_min
            raw = (2.0 * hi if not self.spec.asymmetric else hi - lo) / self.spec.maxq
            self.base_s = raw.clamp(min=SCALE_FLOOR)
            self.base_z = z.clone()
        self.log_s = torch.zeros_like(self.base_s).requires_grad_(True)
        if self.spec.asymmetric and not self.spec.integer_zeros:
            self.d_z = torch.zeros_like(self.base_z).requires_grad_(True)


@dataclass
class MixTuner:
    """A channel-mix linear's tunable state: one LinearTuner per part (columns perm[slice_i]), same interface."""

    mix: ChannelMix
    parts: list[LinearTuner]
    inverse: torch.Tensor  # inverse[j] = position of original input j in the permuted order

    @classmethod
    def create(
        cls, name: str, linear: nn.Linear, mix: ChannelMix, config: CalibConfig, device: torch.device | str
    ) -> MixTuner:
        """Start every part from min-max rounding, like `LinearTuner.create`."""
        k = linear.in_features
        if mix.in_features != k:
            raise BadInputError(f"{name}: the mix {mix.name} covers {mix.in_features} inputs, the layer has {k}")
        perm = torch.arange(k) if mix.perm is None else torch.tensor(mix.perm, dtype=torch.int64)
        w = linear.weight.detach()
        cols = [w.index_select(1, perm[a:b].to(w.device)) for a, b in mix.slices]
        parts = [
            LinearTuner.from_weight(f"{name}.parts.{i}", c, spec, config, device)
            for i, (c, spec) in enumerate(zip(cols, mix.specs))
        ]
        return cls(mix, parts, torch.argsort(perm).to(device))

    def params(self) -> list[torch.Tensor]:
        """The tensors being tuned in the current stage, over all parts."""
        return [p for t in self.parts for p in t.params()]

    def clamp_(self, clip_min: float) -> None:
        """Clamp every part's parameters."""
        for t in self.parts:
            t.clamp_(clip_min)

    def snapshot(self) -> list[list[torch.Tensor]]:
        """Copies of every part's parameters."""
        return [t.snapshot() for t in self.parts]

    def restore(self, saved: list[list[torch.Tensor]]) -> None:
        """Put saved parameters back."""
        for t, s in zip(self.parts, saved):
            t.restore(s)

    def fake_weight(self) -> torch.Tensor:
        """Ŵ [N, K] in the original input order (differentiable through every part)."""
        return torch.cat([t.fake_weight() for t in self.parts], dim=1).index_select(1, self.inverse)

    @torch.no_grad()
    def quantized(self) -> MixedWeight:
        """The stored form: every part's codes and statistics, and the permutation."""
        return mixed_weight_from_parts(self.mix, [t.quantized() for t in self.parts])

    def start_stats_stage(self) -> None:
        """Freeze every part's codes; scales (and zeros) become the parameters."""
        for t in self.parts:
            t.start_stats_stage()


def make_tuner(
    name: str, linear: nn.Linear, fmt: QuantSpec | ChannelMix, config: CalibConfig, device: torch.device | str
) -> LinearTuner | MixTuner:
    """The tuner of one linear: a LinearTuner for a single format, a MixTuner for a channel-mix."""
    if isinstance(fmt, ChannelMix):
        return MixTuner.create(name, linear, fmt, config, device)
    return LinearTuner.create(name, linear, fmt, config, device)


# -- one block --------------------------------------------------------------------------------------
@dataclass
class BlockResult:
    """The outcome of tuning one block: its new QuantLinears and the losses before and after."""

    index: int
    name: str
    linears: dict[str, nn.Module]  # QuantLinear, or ChannelMixLinear for a channel-mix
    loss_before: float
    loss_after: float
    best_loss: float = math.inf
    best_iter: int = -1
    losses: list[float] = field(default_factory=list)
    kept_start: bool = False
    seconds: float = 0.0
    batch_size: int = 0


class _Optimizer:
    """SignSGD (p -= lr·sign(g)) or Adam over a parameter list, with a linearly decaying learning rate."""

    def __init__(self, params: list[torch.Tensor], kind: str, lr: float, iters: int) -> None:
        self.params, self.kind, self.lr, self.iters = params, kind, lr, max(iters, 1)
        self.adam = torch.optim.Adam(params, lr=lr) if kind == "adam" and params else None

    def step(self, it: int) -> None:
        lr = self.lr * (1.0 - it / self.iters)
        if self.adam is not None:
            for group in self.adam.param_groups:
                group["lr"] = lr
            self.adam.step()
        else:
            with torch.no_grad():
                for p in self.params:
                    if p.grad is not None:
                        p.add_(torch.sign(p.grad), alpha=-lr)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


def _block_fn(block: nn.Module, tuners: dict[str, LinearTuner | MixTuner], args: tuple, kwargs: dict, device):
    """x -> block(x) with each tuned linear's weight replaced by its fake-quantized Ŵ."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):  # statistics and codes always in fp32
            params = {f"{n}.weight": t.fake_weight().to(x.dtype) for n, t in tuners.items()}
        out = functional_call(block, params, (x, *args), kwargs, strict=False)
        return out[0] if isinstance(out, (tuple, list)) else out

    return fn


def _replace(block: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(block.get_submodule(parent_name) if parent_name else block, child, module)


def _run_stage(
    tuners: dict[str, LinearTuner | MixTuner],
    fn: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    iters: int,
    kind: str,
    lr: float,
    batch_size: int,
    config: CalibConfig,
    generator: torch.Generator,
    device: torch.device | str,
    what: str,
    check_cancel: Callable[[], None] | None,
    losses: list[float],
) -> tuple[float, int, int]:
    """One tuning stage (SignRound or scales); leaves the best parameters in place. Returns (best, iter, batch)."""
    params = [p for t in tuners.values() for p in t.params()]
    opt = _Optimizer(params, kind, lr, iters)
    dev_type = torch.device(device).type
    amp = config.use_amp(device) and dev_type in ("cpu", "cuda")
    n = inputs.shape[0]
    pick = min(config.batch_size, n)
    micro = min(batch_size, pick)
    best_loss, best_iter, best = math.inf, -1, None
    for it in range(iters):
        if check_cancel is not None and it % CANCEL_EVERY == 0:
            check_cancel()
        idx = torch.randperm(n, generator=generator)[:pick]

        def one_iteration(mb: int, idx: torch.Tensor = idx) -> float:
            opt.zero_grad()
            total = 0.0
            for j in range(0, pick, mb):
                sel = idx[j : j + mb]
                x = inputs[sel].to(device)
                y = targets[sel].to(device)
                with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=amp):
                    out = fn(x)
                loss = block_loss(out, y, config.token_cap) * (len(sel) / pick)
                loss.backward()
                total += float(loss.detach())
            return total

        try:
            loss, micro = with_oom_retry(one_iteration, micro, f"{what} (tuning)", device)
        except Exception:
            opt.zero_grad()
            raise
        if not math.isfinite(loss):
            raise CalibrationError(
                f"{what}: the reconstruction loss became {loss} at iteration {it}",
                hint="the block's checkpoint was not written; retry with the Adam optimizer, a lower lr, "
                "or keep this block's layers in higher precision",
            )
        losses.append(loss)
        if loss < best_loss:
            best_loss, best_iter = loss, it
            if config.keep_best:
                best = [t.snapshot() for t in tuners.values()]
        opt.step(it)
        opt.zero_grad()
        for t in tuners.values():
            t.clamp_(config.clip_min)
    if config.keep_best and best is not None:
        for t, saved in zip(tuners.values(), best):
            t.restore(saved)
    return best_loss, best_iter, micro


def tune_block(
    block: nn.Module,
    specs: dict[str, QuantSpec | ChannelMix],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    args: tuple,
    kwargs: dict,
    config: CalibConfig,
    *,
    device: torch.device | str = "cpu",
    index: int = 0,
    name: str = "block",
    outputs: torch.Tensor | None = None,
    check_cancel: Callable[[], None] | None = None,
    micro_batch: int | None = None,
) -> BlockResult:
    """Tune the linears named in `specs` (name inside `block` -> format), then replace them by QuantLinears.

    `inputs` is the quantized stream [n, T, H], `targets` what the block must reproduce [n, T, H]
    (both may live on the CPU; mini-batches go to `device`, where `block` and `args`/`kwargs` must be).
    The block's outputs with the new QuantLinears are written into `outputs` (may be `inputs`: in place).
    Raises BadInputError for non-finite inputs or targets, CalibrationError for a NaN loss, and
    OutOfMemoryError when even one sample does not fit; the block is left unchanged on any error.
    `micro_batch` caps the samples per forward (gradients accumulate up to `config.batch_size`).
    """
    started = time.monotonic()
    check_finite(inputs, f"{name}: the quantized-stream input")
    check_finite(targets, f"{name}: the full-precision target")
    linears = {n: block.get_submodule(n) for n in specs}
    tuners = {n: make_tuner(f"{name}.{n}", linears[n], specs[n], config, device) for n in specs}
    frozen = [p for p in block.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    seed = (config.seed * 1_000_003 + index) % (2**63)
    generator = torch.Generator().manual_seed(seed)
    fn = _block_fn(block, tuners, args, kwargs, device)
    batch = min(config.batch_size, micro_batch or config.batch_size)
    try:
        loss_before = stream_mse(fn, inputs, targets, device=device, batch=batch, name=name, cap=config.token_cap)
        start = {n: t.quantized() for n, t in tuners.items()}
        losses: list[float] = []
        best_loss, best_iter = math.inf, -1
        common = dict(config=config, generator=generator, device=device, what=name, check_cancel=check_cancel)
        if config.iters and (config.tune_rounding or config.tune_clip):
            best_loss, best_iter, batch = _run_stage(
                tuners, fn, inputs, targets, iters=config.iters, kind=config.optimizer, lr=config.resolved_lr,
                batch_size=batch, losses=losses, **common,
            )
        if config.stats_iters:
            for t in tuners.values():
                t.start_stats_stage()
            stats_best, stats_iter, batch = _run_stage(
                tuners, fn, inputs, targets, iters=config.stats_iters, kind="adam", lr=config.stats_lr,
                batch_size=batch, losses=losses, **common,
            )
            if stats_best < best_loss:
                best_loss, best_iter = stats_best, config.iters + stats_iter
        final = {n: t.quantized() for n, t in tuners.items()}
    except Exception as exc:
        if is_oom(exc):
            free_memory(device)
        raise
    finally:
        for p in frozen:
            p.requires_grad_(True)
    where = (inputs, targets, args, kwargs, device, config.token_cap, name)
    loss_after, y, qlinears, batch = _install(block, linears, final, batch, *where)
    kept_start = loss_after > loss_before
    if kept_start:
        loss_after, y, qlinears, batch = _install(block, linears, start, batch, *where)
    if outputs is not None:
        outputs.copy_(y)
    return BlockResult(
        index=index,
        name=name,
        linears=qlinears,
        loss_before=loss_before,
        loss_after=loss_after,
        best_loss=best_loss,
        best_iter=best_iter,
        losses=losses,
        kept_start=kept_start,
        seconds=time.monotonic() - started,
        batch_size=batch,
    )


def _install(
    block: nn.Module,
    linears: dict[str, nn.Linear],
    quantized: dict[str, QuantizedWeight | MixedWeight],
    batch: int,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    args: tuple,
    kwargs: dict,
    device: torch.device | str,
    cap: float | None,
    name: str,
) -> tuple[float, torch.Tensor, dict[str, nn.Module], int]:
    """Put QuantLinears in the block and run it on all inputs: (loss, outputs, the QuantLinears, batch)."""
    qlinears = {n: build_module(qw, linears[n].bias) for n, qw in quantized.items()}
    for n, q in qlinears.items():
        _replace(block, n, q)
    try:
        y, batch = run_block(block, inputs, args, kwargs, device=device, batch=batch, name=name)
        check_finite(y, f"{name}: the quantized block's output")
        total = count = 0.0
        for i in range(0, y.shape[0], max(batch, 1)):
            s, c = loss_terms(y[i : i + batch], targets[i : i + batch], cap)
            total, count = total + s, count + c
    except Exception:
        for n, lin in linears.items():
            _replace(block, n, lin)
        raise
    return total / count, y, qlinears, batch
