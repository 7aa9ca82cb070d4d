"""The trainer shared by Q-SFT and the LoRA baseline: same data order, schedule, loss, evaluation and seeds.

One step = `grad_accum` micro-batches. Each runs the backbone (decoder blocks recomputed in the backward
when gradient checkpointing is on: the default on CUDA), the chunked cross-entropy on the scored tokens,
and the backward, during which every quantized layer moves its codes from its dW block by block
(optim.CodeOptimizer) and every float parameter takes its Adam step from a post-accumulate-grad hook
(optim.InBackwardAdam): no full set of gradients ever exists. Embeddings and the output layer stay frozen.

Learning rate: linear warm-up, then cosine decay to `min_lr_ratio` of the peak, for codes and Adam alike.
A step whose loss or gradients are not finite stops training (`NonFiniteError`): nothing was updated with
a non-finite value, and the caller keeps the last good state. `state_tensors` / `load_state` hold the
exact training state (codes, statistics, optimizer moments, residuals, random generators, step), so a
resumed run continues bit for bit where it stopped; the data order is a pure function of (seed, step).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from bitsmith.engine.errors import BadInputError, BitsmithError

from .lora import LoRALinear, add_adapters, remove_adapters
from .loss import chunked_lm_loss
from .optim import CodeOptimizer, InBackwardAdam, lr_factor
from .packing import Batch, BatchPlan
from .qlinear import QSFTLinear, unwrap_model, wrap_model

METHODS = ("qsft", "lora")
COMPUTE_DTYPES = ("auto", "float32", "bfloat16")


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX): about 4x fp32 on the dev box."""
    from bitsmith.engine.hardware import detect_cpu

    try:
        return detect_cpu().fast_bf16
    except Exception:  # detection is best effort; fp32 is always correct
        return False


def resolve_compute_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The matmul dtype of the CPU training path (None: fp32; on CUDA the model's own dtype governs)."""
    if setting == "bfloat16":
        return torch.bfloat16
    if setting == "float32" or device.type != "cpu":
        return None
    return torch.bfloat16 if cpu_has_fast_bf16() else None
DEFAULT_LR = {"qsft": 1e-3, "lora": 5e-4}


@dataclass
class TrainConfig:
    """Every knob of a fine-tuning run (the ones that change its result are in `fingerprint`)."""

    method: str = "qsft"
    steps: int = 200
    lr: float | None = None  # Adam: Q-SFT's log-scales and norms, or LoRA's adapters (None: DEFAULT_LR)
    code_lr: float = 0.01  # Q-SFT: code steps per update for a typical weight (also Adam's lr of float zeros);
    # 0.01 beat 0.005, 0.02 and 0.05 over 200 steps on SmolLM2 (docs/benchmarks/qsft.md)
    seq_len: int = 512
    batch_size: int = 1
    grad_accum: int = 1
    warmup: int | None = None  # None: 10 % of the steps, at most 100
    min_lr_ratio: float = 0.1
    residual_bits: int = 4
    code_decay: float = 0.0  # Q-SFT: leak of the residual toward its bin's centre per update (0: pure accumulation)
    max_move_frac: float | None = None
    train_norms: bool = True
    lora_rank: int = 16
    lora_alpha: float = 32.0
    seed: int = 0
    grad_checkpointing: bool | None = None  # None: on for CUDA, off on the CPU (memory is not the limit there)
    compute_dtype: str = "auto"  # CPU matmuls in training: "float32", "bfloat16", or auto (bf16 where native)
    backend: str = "auto"
    eval_every: int = 50
    eval_tokens: int = 16384
    save_every: int = 50

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise BadInputError(f"unknown fine-tuning method {self.method!r}", f"choose one of: {', '.join(METHODS)}")
        for name in ("steps", "seq_len", "batch_size", "grad_accum", "lora_rank"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise BadInputError(f"{name.replace('_', '-')} must be a positive whole number, got {value!r}")
        if self.lr is None:
            self.lr = DEFAULT_LR[self.method]
        if not self.lr > 0 or not self.code_lr >= 0:
            raise BadInputError(f"learning rates must be positive (lr {self.lr}, code lr {self.code_lr})",
                                "use e.g. --lr 1e-4")
        if self.warmup is None:
            self.warmup = min(100, self.steps // 10)
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise BadInputError(f"compute dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {self.compute_dtype!r}")

    def fingerprint(self) -> str:
        """A hash of the settings that shape the training trajectory (not evaluation or saving cadence)."""
        d = asdict(self)
        for k in ("eval_every", "eval_tokens", "save_every", "backend", "grad_checkpointing"):  # no effect on results
            d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


class NonFiniteError(BitsmithError):
    """The loss or a gradient stopped being finite (training diverged)."""

    kind = "bad_input"

    def __init__(self, step: int, what: str, lr: float) -> None:
        super().__init__(f"training diverged at step {step + 1}: the {what} is not finite (NaN or Inf)",
                         f"run again with a lower learning rate, e.g. --lr {lr / 3:.1e}")
        self.step, self.what = step, what


@dataclass
class StepResult:
    """What one optimizer step did."""

    step: int
    loss: float
    tokens: int
    targets: int
    seconds: float
    lr_factor: float
    moved: float | None = None  # fraction of codes that moved (Q-SFT)


@dataclass
class History:
    """Curves kept across resumes."""

    train: list[tuple[int, float]] = field(default_factory=list)
    heldout: list[tuple[int, float]] = field(default_factory=list)
    heldout_before: float | None = None
    tokens: int = 0
    seconds: float = 0.0


def backbone_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(decoder stack returning hidden states, output layer) of a transformers causal LM."""
    backbone = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if backbone is None or head is None or not hasattr(head, "weight"):
        raise BadInputError(f"cannot find the decoder and output layer of {type(model).__name__}",
                            "fine-tuning supports transformers causal LMs (Llama, Qwen, Mistral, Gemma...)")
    return backbone, head


def norm_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The normalisation layers' parameters (RMSNorm / LayerNorm weights and biases)."""
    out = []
    for mname, mod in model.named_modules():
        if "norm" in type(mod).__name__.lower():
            out += [(f"{mname}.{pname}", p) for pname, p in mod.named_parameters(recurse=False)]
    return out


class Trainer:
    """Runs Q-SFT or LoRA on a model whose linears are QuantLinears (modified in place)."""

    def __init__(self, model: nn.Module, config: TrainConfig, plan: BatchPlan, heldout: list[Batch],
                 device: torch.device | str) -> None:
        self.model, self.config, self.plan, self.heldout = model, config, plan, heldout
        self.device = torch.device(device)
        self.backbone, self.head = backbone_and_head(model)
        self.softcap = getattr(model.config, "final_logit_softcapping", None)
        self.history = History()
        self.step = 0
        for p in model.parameters():
            p.requires_grad_(False)
        self.code_opt: CodeOptimizer | None = None
        self.layers: dict[str, nn.Module]
        if config.method == "qsft":
            self.layers = wrap_model(model, backend=config.backend)
            for layer in self.layers.values():
                layer.cache_dequantized = self.device.type == "cpu"
            self.code_opt = CodeOptimizer(config.code_lr, residual_bits=config.residual_bits,
                                          max_move_frac=config.max_move_frac, decay=config.code_decay,
                                          seed=config.seed)
            for layer in self.layers.values():
                layer.code_optimizer = self.code_opt
            groups = [("scales", [(f"{n}.log_scales", m.log_scales) for n, m in self.layers.items()], config.lr),
                      ("zeros", [(f"{n}.zeros", m.zeros) for n, m in self.layers.items() if m.zeros is not None],
                       config.code_lr)]
            if config.train_norms:
                norms = norm_parameters(model)
                for _, p in norms:
                    p.requires_grad_(True)
                groups.append(("norms", norms, config.lr))
        else:
            self.layers = add_adapters(model, config.lora_rank, config.lora_alpha, seed=config.seed)
            groups = [("lora", [(f"{n}.{k}", getattr(m, k)) for n, m in self.layers.items()
                                for k in ("lora_a", "lora_b")], config.lr)]
        if not self.layers:
            raise BadInputError("the model has no quantized linear layers to fine-tune", "quantize it first")
        self.adam = InBackwardAdam(groups, accumulate=config.grad_accum)
        checkpointing = config.grad_checkpointing
        if checkpointing is None:
            checkpointing = self.device.type == "cuda"
        if checkpointing and hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.checkpointing = bool(checkpointing)
        self.compute_dtype = resolve_compute_dtype(config.compute_dtype, self.device)
        self._set_compute(self.compute_dtype)

    def _set_compute(self, dtype: torch.dtype | None) -> None:
        for layer in self.layers.values():
            layer.compute_dtype = dtype

    # -- facts ------------------------------------------------------------------------------------
    def trainable_parameters(self) -> int:
        """Float parameters trained by Adam (the codes come on top for Q-SFT)."""
        return sum(p.numel() for p, _ in self.adam.params.values())

    def quantized_weights(self) -> int:
        """Weights in the quantized linears."""
        return sum(m.base.in_features * m.base.out_features for m in self.layers.values())

    def optimizer_state_bytes(self) -> dict[str, int]:
        """Bytes of optimizer state by kind (residuals, factored moments, Adam moments and masters)."""
        out = {"code_residual": 0, "code_moments": 0, "adam": 0}
        if self.code_opt is not None:
            for st in self.code_opt.state.values():
                for key, t in st.items():
                    out["code_residual" if key == "residual" else "code_moments"] += t.numel() * t.element_size()
        for st in self.adam.state.values():
            out["adam"] += sum(t.numel() * t.element_size() for t in st.values())
        return out

    # -- training ---------------------------------------------------------------------------------
    def _forward_loss(self, batch: Batch, compute_dtype: torch.dtype | None = None) -> torch.Tensor:
        out = self.backbone(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False)
        return chunked_lm_loss(out.last_hidden_state, self.head.weight, batch.targets, softcap=self.softcap,
                               compute_dtype=compute_dtype)

    def train_step(self) -> StepResult:
        """One optimizer step (all micro-batches); raises NonFiniteError before anything non-finite is applied."""
        cfg, step = self.config, self.step
        t0 = time.perf_counter()
        factor = lr_factor(step, cfg.steps, cfg.warmup or 0, cfg.min_lr_ratio)
        self.adam.lr_scale = factor
        if self.code_opt is not None:
            self.code_opt.lr_scale = factor / cfg.grad_accum
            self.code_opt.take_counts()
        batches = [self.plan.micro_batch(step * cfg.grad_accum + i).to(self.device) for i in range(cfg.grad_accum)]
        targets = sum(b.n_targets for b in batches)
        self.model.train()
        total = 0.0
        for micro, batch in enumerate(batches):
            self.adam.micro = micro
            loss_sum = self._forward_loss(batch, self.compute_dtype)
            value = float(loss_sum.detach())
            if not torch.isfinite(torch.tensor(value)):
                raise NonFiniteError(step, "loss", cfg.lr)
            (loss_sum / max(targets, 1)).backward()
            if self.adam.bad or (self.code_opt is not None and self.code_opt.bad):
                raise NonFiniteError(step, "gradient", cfg.lr)
            total += value
        moved = None
        if self.code_opt is not None:
            n_moved, n_seen = self.code_opt.take_counts()
            moved = n_moved / max(n_seen, 1)
        self.step += 1
        seconds = time.perf_counter() - t0
        tokens = sum(b.n_tokens for b in batches)
        loss = total / max(targets, 1)
        self.history.train.append((self.step, loss))
        self.history.tokens += tokens
        self.history.seconds += seconds
        return StepResult(self.step, loss, tokens, targets, seconds, factor, moved)

    @torch.no_grad()
    def evaluate(self, batches: list[Batch] | None = None) -> float | None:
        """Mean loss per scored token over the held-out batches (None if there are none), in fp32 on the CPU
        whatever the training compute dtype, so it is the loss `bitsmith eval` and chat would see."""
        batches = self.heldout if batches is None else batches
        if not batches:
            return None
        self.model.eval()
        self._set_compute(None)
        total, count = 0.0, 0
        try:
            for batch in batches:
                b = batch.to(self.device)
                total += float(self._forward_loss(b))
                count += b.n_targets
        finally:
            self._set_compute(self.compute_dtype)
        return total / max(count, 1)

    # -- state ------------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything that changes during training, by name."""
        out: dict[str, torch.Tensor] = {}
        for name, layer in self.layers.items():
            if isinstance(layer, QSFTLinear):
                out[f"layer.{name}.qweight"] = layer.base.qweight
        for name, (p, _) in self.adam.params.items():
            out[f"param.{name}"] = p
        out.update(self.adam.state_tensors())
        if self.code_opt is not None:
            out.update(self.code_opt.state_tensors())
        return out

    @torch.no_grad()
    def load_state(self, tensors: dict[str, torch.Tensor], step: int, history: dict[str, Any]) -> None:
        """Restore what `state_tensors` returned (plus the step and curves)."""
        for name, layer in self.layers.items():
            key = f"layer.{name}.qweight"
            if isinstance(layer, QSFTLinear):
                layer.base.qweight.copy_(tensors[key])
        for name, (p, _) in self.adam.params.items():
            p.copy_(tensors[f"param.{name}"])
        self.adam.load_state_tensors({k: v for k, v in tensors.items() if k.startswith("adam.")})
        if self.code_opt is not None:
            self.code_opt.load_state_tensors({k: v for k, v in tensors.items() if k.startswith("code")}, self.layers)
        self.step = step
        self.history = History(train=[tuple(x) for x in history.get("train", [])],
                               heldout=[tuple(x) for x in history.get("heldout", [])],
                               heldout_before=history.get("heldout_before"), tokens=history.get("tokens", 0),
                               seconds=history.get("seconds", 0.0))

    def history_dict(self) -> dict[str, Any]:
        """The curves as JSON-ready data."""
        return asdict(self.history)

    def finish(self, merge: bool = True) -> nn.Module:
        """Return the model with plain QuantLinears: statistics written back (Q-SFT) or adapters merged (LoRA)."""
        self.adam.close()
        if self.checkpointing and hasattr(self.model, "gradient_checkpointing_disable"):
            self.model.gradient_checkpointing_disable()
        if self.config.method == "qsft":
            unwrap_model(self.model)
        else:
            remove_adapters(self.model, merge=merge)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()
        return self.model

    def adapters(self) -> dict[str, LoRALinear]:
        """LoRA layers by name (empty for Q-SFT)."""
        return {n: m for n, m in self.layers.items() if isinstance(m, LoRALinear)}


def memory_now(device: torch.device) -> dict[str, float]:
    """GiB in use: peak allocated / reserved on CUDA, resident and peak resident set on the CPU."""
    gib = 2**30
    if device.type == "cuda":
        return {"allocated_gib": torch.cuda.memory_allocated(device) / gib,
                "peak_allocated_gib": torch.cuda.max_memory_allocated(device) / gib,
                "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / gib}
    import psutil

    out = {"rss_gib": psutil.Process().memory_info().rss / gib}
    try:
        import resource

        out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / gib
    except (ImportError, AttributeError):
        pass
    return out


ProgressFn = Callable[[StepResult], None]
