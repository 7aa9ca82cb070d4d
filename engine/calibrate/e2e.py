"""End-to-end distillation: after block-wise calibration, tune every quantized linear's statistics and the norms
together, codes fixed, so the quantized model's next-token distribution matches the full-precision model's.

Why: block-wise calibration fits each block's hidden-state MSE, one block at a time; what the model is judged by
is its next-token distribution, which this stage fits across all blocks at once (EfficientQAT's end-to-end stage
of quantization parameters, E2E-QP, does the same with the data's labels). The target here is the full-precision
model's own distribution — a teacher's k probabilities per token carry far more signal than one label, which
matters with calibration sets of a few ten thousand tokens.

* Teacher: its top-k next-token probabilities per position and the probability of all other tokens together
  (not renormalised over the k: that would teach the student to give every other token nothing, which showed as
  a lower distillation loss and a higher perplexity on other text), computed once from the full-precision model
  before calibration (`teacher_targets`): k × 6 + 4 bytes per token.
* Tuned: log-scales and float or double-quantized zero-points of every QuantLinear (QSFTLinear, codes fixed),
  and the norm weights, by Adam with a linear warm-up and cosine decay. The loss is the cross-entropy against
  the teacher distribution, in chunks of tokens (engine/finetune/loss.py), summed over micro-batches of one
  window.
* Never worse: `val_samples` windows are held out of training. The stage keeps the state with the lowest
  held-out loss seen (checked before training and after each epoch), stores it in the layers' own formats
  (double-quantized scales re-encoded, norms rounded to 16 bits), and checks the stored model once more: if it
  is not better on the held-out windows than the calibrated model, the calibrated statistics are restored.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from bitsmith.engine.errors import BadInputError
from bitsmith.engine.finetune.loss import chunked_lm_loss
from bitsmith.engine.finetune.optim import lr_factor
from bitsmith.engine.finetune.qlinear import QSFTLinear, unwrap_model, wrap_model
from bitsmith.engine.finetune.qsft import backbone_and_head, norm_parameters, resolve_compute_dtype
from bitsmith.engine.quant.linear import QuantLinear


@dataclass(frozen=True)
class DistillConfig:
    """How much end-to-end distillation: epochs over the training windows (0: none), learning rates, teacher k."""

    epochs: int = 0
    lr: float = 1e-3  # measured on SmolLM2 at 4.0 bpw against 1e-4 (and 3e-3 before the rest was kept): distill.md
    norm_lr: float = 1e-3
    batch_size: int = 4
    top_k: int = 32
    val_samples: int = 4
    warmup_frac: float = 0.1
    compute_dtype: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise BadInputError(f"distillation epochs must be a whole number ≥ 0, got {self.epochs!r}")
        for name in ("batch_size", "top_k"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise BadInputError(f"distillation {name} must be a whole number ≥ 1, got {getattr(self, name)!r}")
        if not isinstance(self.val_samples, int) or self.val_samples < 0:
            raise BadInputError(f"distillation val_samples must be a whole number ≥ 0, got {self.val_samples!r}")
        if not (self.lr > 0 and self.norm_lr >= 0):
            raise BadInputError(f"distillation learning rates must be positive (lr {self.lr}, norm lr {self.norm_lr})")

    def to_dict(self) -> dict:
        """JSON-ready (recorded in the recipe)."""
        return asdict(self)


@dataclass
class Teacher:
    """The full-precision model's top-k next-token distribution on each window: ids [N, L], index and prob [N, L, k],
    and rest [N, L], the probability of all the other tokens (1 - the sum of prob, in fp32)."""

    ids: torch.Tensor
    index: torch.Tensor
    prob: torch.Tensor
    rest: torch.Tensor

    @property
    def windows(self) -> int:
        """N."""
        return self.ids.shape[0]


@torch.no_grad()
def teacher_targets(ids: torch.Tensor, logit_rows: Iterable[torch.Tensor], top_k: int,
                    check_cancel: Callable[[], None] = lambda: None) -> Teacher:
    """The teacher distribution on windows ids [N, L], from their logits [L, V] one window at a time, in order."""
    if ids.ndim != 2 or ids.shape[0] == 0:
        raise BadInputError("no calibration windows to distil on", "use a longer calibration text")
    index, prob, rest = [], [], []
    for logits in logit_rows:
        check_cancel()
        logits = logits.float()  # a no-op for the pipeline's fp32 models; one copy otherwise
        values, top = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1)
        p = torch.exp(values - torch.logsumexp(logits, dim=-1, keepdim=True)).to(torch.float16)
        index.append(top.to(torch.int32))
        prob.append(p)
        rest.append((1.0 - p.float().sum(-1)).clamp_min(0.0))  # from the stored values: the rows sum to 1
        del logits
    if len(index) != ids.shape[0]:
        raise ValueError(f"got logits for {len(index)} of {ids.shape[0]} windows")
    return Teacher(ids.long(), torch.stack(index), torch.stack(prob), torch.stack(rest))


def save_teacher(path: Path, teacher: Teacher) -> None:
    """Write the teacher distribution atomically (a resumed quantization reuses it: the model is no longer fp)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({"ids": teacher.ids, "index": teacher.index, "prob": teacher.prob, "rest": teacher.rest}, str(tmp))
    os.replace(tmp, path)


def load_teacher(path: Path, ids: torch.Tensor, top_k: int) -> Teacher | None:
    """The teacher saved at `path` if it was computed on these windows with this k; else None."""
    from safetensors.torch import load_file

    try:
        saved = load_file(str(path))
    except Exception:  # missing, partial or not safetensors: compute it again
        return None
    teacher = Teacher(saved.get("ids"), saved.get("index"), saved.get("prob"), saved.get("rest"))
    if any(x is None for x in (teacher.ids, teacher.index, teacher.prob, teacher.rest)):
        return None  # incomplete, or from before the rest was kept: compute it again
    if teacher.ids.shape != ids.shape or not torch.equal(teacher.ids, ids.long()) or teacher.index.shape[-1] != top_k:
        return None
    return teacher


def model_logit_rows(model: nn.Module, ids: torch.Tensor) -> Iterator[torch.Tensor]:
    """Logits [L, V] of each window of ids [N, L] from a model loaded whole, one window at a time."""
    device = model.get_input_embeddings().weight.device
    with torch.no_grad():
        for row in ids:
            yield model(input_ids=row[None].to(device), use_cache=False).logits[0]


@dataclass
class DistillReport:
    """What the stage did (recorded in the recipe, logged)."""

    steps: int
    val_before: float | None
    val_after: float | None
    kept: bool
    seconds: float

    def to_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)


def _quant_layers(model: nn.Module) -> dict[str, QuantLinear]:
    return {name: mod for name, mod in model.named_modules() if isinstance(mod, QuantLinear)}


def _stat_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every QuantLinear buffer except the codes, and the norm weights: what this stage may change."""
    snap = {}
    for name, mod in _quant_layers(model).items():
        for key, buf in mod.named_buffers(recurse=False):
            if key != "qweight" and buf is not None:
                snap[f"{name}.{key}"] = buf.detach().clone()
    for name, p in norm_parameters(model):
        snap[name] = p.detach().clone()
    return snap


@torch.no_grad()
def _restore(model: nn.Module, snap: dict[str, torch.Tensor]) -> None:
    own = dict(model.named_buffers()) | dict(model.named_parameters())
    for key, value in snap.items():
        own[key].copy_(value)
    for mod in _quant_layers(model).values():
        mod._materialize()


@torch.no_grad()
def _round_norms_(model: nn.Module) -> None:
    for _, p in norm_parameters(model):
        p.copy_(p.to(torch.float16).to(p.dtype))


class _Distiller:
    """The training loop of one distillation run (model modified in place)."""

    def __init__(self, model: nn.Module, teacher: Teacher, config: DistillConfig, device: torch.device) -> None:
        self.model, self.teacher, self.config, self.device = model, teacher, config, device
        self.backbone, self.head = backbone_and_head(model)
        self.softcap = getattr(model.config, "final_logit_softcapping", None)
        self.compute_dtype: torch.dtype | None = None  # matmul dtype while training (None: fp32)
        n_val = min(config.val_samples, max(teacher.windows - 1, 0))
        self.train_rows = list(range(teacher.windows - n_val))
        self.val_rows = list(range(teacher.windows - n_val, teacher.windows))

    def loss(self, rows: list[int]) -> torch.Tensor:
        """Summed cross-entropy against the teacher on windows `rows` (one forward)."""
        t = self.teacher
        ids = t.ids[rows].to(self.device)
        hidden = self.backbone(input_ids=ids, use_cache=False).last_hidden_state
        return chunked_lm_loss(hidden, self.head.weight, t.index[rows].to(self.device),
                               target_probs=t.prob[rows].to(self.device), target_rest=t.rest[rows].to(self.device),
                               softcap=self.softcap,
                               compute_dtype=self.compute_dtype)

    @torch.no_grad()
    def val_loss(self) -> float | None:
        """Mean per-token loss on the held-out windows, in fp32 whatever the training compute dtype."""
        if not self.val_rows:
            return None
        saved, self.compute_dtype = self.compute_dtype, None
        self._set_compute(None)
        self.model.eval()
        try:
            total = sum(float(self.loss([r])) for r in self.val_rows)
        finally:
            self.compute_dtype = saved
            self._set_compute(saved)
        return total / (len(self.val_rows) * self.teacher.ids.shape[1])

    def _set_compute(self, dtype: torch.dtype | None) -> None:
        for mod in self.model.modules():
            if isinstance(mod, QSFTLinear):
                mod.compute_dtype = dtype

    def _epoch(self, opt: torch.optim.Optimizer, base_lr: list[float], step: int, total: int, warmup: int,
               gen: torch.Generator, on_progress: Callable[[int, int], None], check_cancel: Callable[[], None],
               log: Callable[[str], None]) -> tuple[int, bool]:
        """One pass over the training windows in a seeded order: (steps taken so far, whether the loss stayed
        finite — a non-finite step is not applied and ends training)."""
        cfg = self.config
        order = [self.train_rows[i] for i in torch.randperm(len(self.train_rows), generator=gen)]
        for b0 in range(0, len(order), cfg.batch_size):
            check_cancel()
            self.model.train()
            factor = lr_factor(step, total, warmup)
            for g, lr in zip(opt.param_groups, base_lr):
                g["lr"] = lr * factor
            batch = order[b0: b0 + cfg.batch_size]
            tokens = len(batch) * self.teacher.ids.shape[1]
            value = 0.0
            for row in batch:
                loss = self.loss([row]) / tokens
                loss.backward()
                value += float(loss.detach())
            if not math.isfinite(value):
                log(f"distillation stopped at step {step + 1}: the loss is not finite")
                opt.zero_grad(set_to_none=True)
                return step, False
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            on_progress(step, total)
        return step, True

    def run(self, on_progress: Callable[[int, int], None], check_cancel: Callable[[], None],
            log: Callable[[str], None]) -> DistillReport:
        cfg, model = self.config, self.model
        started = time.perf_counter()
        original = _stat_snapshot(model)
        for p in model.parameters():
            p.requires_grad_(False)
        layers = wrap_model(model, backend="auto")
        self.compute_dtype = resolve_compute_dtype(cfg.compute_dtype, self.device)
        try:
            for layer in layers.values():
                layer.cache_dequantized = self.device.type == "cpu"
            self._set_compute(self.compute_dtype)
            stats = [layer.log_scales for layer in layers.values()]
            stats += [layer.zeros for layer in layers.values() if layer.zeros is not None]
            norms = [p for _, p in norm_parameters(model)]
            for p in norms:
                p.requires_grad_(cfg.norm_lr > 0)
            groups = [{"params": stats, "lr": cfg.lr}]
            if cfg.norm_lr > 0:
                groups.append({"params": norms, "lr": cfg.norm_lr})
            params = [p for g in groups for p in g["params"]]
            opt = torch.optim.Adam(groups, betas=(0.9, 0.95), eps=1e-10)
            base_lr = [g["lr"] for g in opt.param_groups]
            total = cfg.epochs * math.ceil(len(self.train_rows) / cfg.batch_size)
            warmup = int(cfg.warmup_frac * total)
            gen = torch.Generator().manual_seed(0)
            best_val = val_before = self.val_loss()
            best = [p.detach().clone() for p in params]
            step = 0
            for epoch in range(cfg.epochs):
                step, finite = self._epoch(opt, base_lr, step, total, warmup, gen, on_progress, check_cancel, log)
                if not finite:
                    break
                val = self.val_loss()
                log(f"distillation epoch {epoch + 1}/{cfg.epochs}: held-out loss {val}")
                if val is None or best_val is None or val < best_val:
                    best_val = val
                    best = [p.detach().clone() for p in params]
            with torch.no_grad():
                for p, value in zip(params, best):
                    p.copy_(value)
        finally:
            unwrap_model(model)  # writes the statistics back in the layers' formats
            for p in model.parameters():
                p.requires_grad_(False)
            self.compute_dtype = None
        _round_norms_(model)
        improved = best_val is None or val_before is None or best_val < val_before
        stored = self.val_loss() if improved else None  # the model as stored: QuantLinears, fp32
        kept = improved and (val_before is None or (stored is not None and stored < val_before))
        if not kept:
            _restore(model, original)
            log(f"distillation did not improve the held-out windows (best {stored or best_val} vs {val_before}): "
                "the calibrated model is kept")
        return DistillReport(step, val_before, stored if kept else val_before, kept,
                             round(time.perf_counter() - started, 1))


def distill(model: nn.Module, teacher: Teacher, config: DistillConfig, *,
            on_progress: Callable[[int, int], None] = lambda done, total: None,
            check_cancel: Callable[[], None] = lambda: None,
            log: Callable[[str], None] = lambda message: None) -> DistillReport:
    """Tune `model`'s quantization statistics and norms against `teacher` in place (see the module docstring)."""
    if config.epochs == 0:
        return DistillReport(0, None, None, False, 0.0)
    if not _quant_layers(model):
        raise BadInputError("the model has no quantized linear layers to distil", "quantize it first")
    device = next(model.parameters()).device
    return _Distiller(model, teacher, config, device).run(on_progress, check_cancel, log)
