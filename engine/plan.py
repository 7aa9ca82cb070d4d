"""Will it fit? Disk, accelerator memory and RAM per pipeline stage for a model at a bit budget.

`plan_model` answers for each stage (download, measure, calibrate, Q-SFT, chat; and the quantize job's teacher and
distill stages when it distils) with a verdict for this machine: "gpu" (fits on the accelerator), "offload" (fits
only with part of it in RAM), "cpu" (no usable accelerator, or it is too small, but RAM holds it) or "no_fit".
Sizes are GiB (2**30 bytes). Torch-free: the GUI calls it live while the user drags the budget slider.

The estimates are checked against measured peaks (tests/engine/test_plan.py, docs/benchmarks/plan.md): chat and
download on this CPU, the quantize job's measure, teacher, calibrate and distill stages (engine/plan_quantize.py:
whole and block-streamed, the evaluations that follow them included) on real runs, Q-SFT on an H100.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from bitsmith.engine import plan_quantize as pq
from bitsmith.engine.errors import BadInputError
from bitsmith.engine.hardware import HardwareProfile
from bitsmith.engine.modelinfo import ModelInfo
from bitsmith.engine.plan_quantize import QuantizeSettings

GIB = 2**30
STAGES = ("download", "measure", "calibrate", "qsft", "chat")
"""The stages every plan has."""
DISTILL_STAGES = ("teacher", "distill")
"""The quantize job's end-to-end distillation stages: in a plan only when its settings distil (distill_epochs > 0)."""
ALL_STAGES = ("download", "measure", "teacher", "calibrate", "distill", "qsft", "chat")
"""Every stage a plan may have, in the order they run."""
CPU_STAGES = ("measure", "teacher", "distill")
"""The quantize job's stages that run on the CPU, where the pipeline loads the model, whatever the machine."""
VERDICTS = ("gpu", "offload", "cpu", "no_fit")
MIN_BPW, MAX_BPW = 2.0, 16.0

ACT_BYTES = 2          # activations in fp16/bf16
KV_BYTES = 2           # KV cache in fp16/bf16
LOGIT_BYTES = 4        # logits are upcast to fp32
PREFILL_CHUNK = 512    # prompt tokens per forward when chat fills its KV cache
CE_CHUNK = 1024        # tokens per chunk of Q-SFT's cross-entropy
QSFT_RESIDUAL_BITS = 4  # Q-SFT's default residual per weight (engine/finetune/optim.py)
QSFT_UPDATE_TEMP_BYTES = 6 * 4 * (1 << 24)  # the code update works in 16M-element blocks, ~6 fp32/int32 copies
# Measured on an H100 (docs/benchmarks/qsft.md, 2026-11-22), an 8B-shaped Q-SFT step at sequence 2048 peaks at
# 10.26 GiB at 2.5 bpw (these terms: 10.65) and 12.55 GiB at 4.0 bpw, 1.5 GiB more than the terms explain; the gap
# grows with the INT4 share of the layout, so a margin proportional to that share covers it (4.0 bpw: 12.8 GiB)
# until the missing term is found, and a plan never promises a fit that then runs out of memory.
QSFT_INT4_MARGIN = 0.15

# Host memory of a CPU process once torch 2.13 (CPU) and transformers 5.23 are imported, and what its
# first model build and forward add beyond weights, KV cache and activations. Measured 2026-11-22 on the
# dev box (AMD EPYC, 2 cores, 23 GiB, Linux, Python 3.11) with
#   python tests/engine/fixtures/measure_chat.py '{"hidden_size":64,"intermediate_size":128,
#     "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":4,"vocab_size":1000}' 2048 512 OUT
# RSS after the imports: 398.4 MiB; the peak after building that 0.2 M-parameter bf16 Llama and filling a
# 2048-token static KV cache 512 tokens at a time: 431.1 MiB, of which 31.3 MiB beyond weights and cache.
CPU_RUNTIME_BYTES = int(398 * 2**20)
CPU_WORKSPACE_BYTES = int(32 * 2**20)
# Not measured yet (no NVIDIA GPU or Mac here): a CUDA context with cuBLAS/Triton workspaces (which
# NVML's free memory does not include before the process starts), host memory of a torch process with
# CUDA or MPS initialised, and the share of unified memory Metal lets one process use
# (recommendedMaxWorkingSetSize is roughly 2/3 to 3/4 of RAM).
CUDA_CONTEXT_BYTES = int(0.5 * GIB)
CUDA_HOST_RUNTIME_BYTES = int(1.0 * GIB)
MPS_HOST_RUNTIME_BYTES = int(0.6 * GIB)
MPS_WORKING_SET_FRACTION = 0.70


@dataclass(frozen=True)
class StageEstimate:
    """One stage on this machine: GiB of disk it writes, GiB placed on the accelerator and in RAM, the
    verdict, the gap (GiB short when > 0, or for "offload" the GiB spilled to RAM; ≤ 0: GiB to spare on
    the deciding tier), readable notes, and the GiB per component behind the figures."""

    disk_gb: float
    gpu_gb: float
    cpu_gb: float
    verdict: str
    gap_gb: float
    notes: tuple[str, ...] = ()
    breakdown: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out = asdict(self)
        out["notes"] = list(self.notes)
        return out


@dataclass(frozen=True)
class Plan:
    """Every stage's estimate for one model at one budget on one machine, with the assumptions used."""

    model_id: str
    bpw: float
    device: str
    size_gb: float            # the quantized model on disk and in memory (linears at bpw, the rest 16-bit)
    source_gb: float          # the source weights as stored
    accelerator_gb: float     # memory the planner lets the accelerator use (0 without one)
    ram_gb: float             # RAM available at detection time
    disk_free_gb: float | None
    settings: dict[str, int]
    stages: dict[str, StageEstimate]  # in ALL_STAGES order; teacher and distill only when the quantize job distils
    notes: tuple[str, ...] = ()
    quantize: dict[str, Any] = field(default_factory=dict)  # the quantize job's settings planned for

    @property
    def fits(self) -> bool:
        """True when chat fits this machine at all (any verdict but no_fit)."""
        return self.stages["chat"].verdict != "no_fit"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out = asdict(self)
        out["stages"] = {name: est.to_dict() for name, est in self.stages.items()}
        out["notes"] = list(self.notes)
        return out


@dataclass(frozen=True)
class _Accel:
    kind: str            # "cuda", "mps" or "cpu"
    name: str
    budget: int          # bytes the planner may place on it


@dataclass
class _Need:
    """A stage's memory by component: `must` stays on the accelerator, `prefer` goes there if room, `host`
    is RAM. Without an accelerator everything is RAM."""

    must: dict[str, int] = field(default_factory=dict)
    prefer: dict[str, int] = field(default_factory=dict)
    host: dict[str, int] = field(default_factory=dict)
    disk: int = 0
    notes: list[str] = field(default_factory=list)

    def total(self) -> int:
        return sum(self.must.values()) + sum(self.prefer.values()) + sum(self.host.values())


def check_bpw(bpw: float) -> float:
    """The budget as a float, or BadInputError when it is outside [2, 16] bits per weight."""
    try:
        value = float(bpw)
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"bits per weight must be a number, got {bpw!r}", hint=_BPW_HINT) from exc
    if not math.isfinite(value) or not MIN_BPW <= value <= MAX_BPW:
        raise BadInputError(f"bits per weight must be between {MIN_BPW:g} and {MAX_BPW:g}, got {bpw!r}",
                            hint=_BPW_HINT)
    return value


_BPW_HINT = ("Pick a budget such as 2.5 (mostly INT2), 3, 4.25 (INT4 with group 128) or 16 "
             "(no quantization); it counts codes plus scales and zeros.")


def accelerator(hw: HardwareProfile) -> _Accel:
    """The device the planner places work on and how many bytes it may use there."""
    device = hw.best_device
    if device.startswith("cuda:"):
        gpu = hw.gpu(int(device.split(":")[1]))
        assert gpu is not None
        return _Accel("cuda", gpu.name, gpu.free_bytes)
    if device == "mps" and hw.apple is not None:
        budget = int(hw.apple.unified_memory_bytes * MPS_WORKING_SET_FRACTION)
        return _Accel("mps", hw.apple.chip, budget)
    return _Accel("cpu", hw.cpu.model, 0)


def plan_model(info: ModelInfo, bpw: float, hw: HardwareProfile, *, seq_len: int = 2048, batch: int = 1,
               context: int = 4096, calib_samples: int = 128, source_on_disk: bool = False,
               quantize: QuantizeSettings | None = None) -> Plan:
    """Estimate every stage for `info` quantized to `bpw` bits per weight on `hw`. `seq_len`×`batch` is
    the Q-SFT sequence shape, `context` the chat KV-cache length, `source_on_disk` skips the
    download's disk need (a local model). The quantize job's settings are `quantize`'s, or else `calib_samples`
    windows of `seq_len` tokens for both measure and calibration and the other defaults of QuantizeSettings."""
    bpw = check_bpw(bpw)
    for name, value in (("seq_len", seq_len), ("batch", batch), ("context", context),
                        ("calib_samples", calib_samples)):
        if not isinstance(value, int) or value <= 0:
            raise BadInputError(f"{name} must be a positive integer, got {value!r}",
                                hint=f"Give --{name.replace('_', '-')} a whole number above 0.")
    quantize = quantize or QuantizeSettings(measure_samples=calib_samples, measure_seq_len=seq_len,
                                            calib_samples=calib_samples, calib_seq_len=seq_len)
    acc = accelerator(hw)
    settings = dict(seq_len=seq_len, batch=batch, context=context, calib_samples=calib_samples)
    streamed = _streams(info, quantize, hw.ram_available_bytes)
    amp = calibration_amp(acc.kind, hw)
    builders = {
        "download": lambda kind: _download(info, source_on_disk),
        "measure": lambda kind: _measure(info, kind, quantize, streamed, hw.ram_available_bytes),
        "teacher": lambda kind: _teacher(info, kind, quantize, streamed, hw.ram_available_bytes),
        "calibrate": lambda kind: _calibrate(info, bpw, kind, quantize, streamed, amp if kind == acc.kind else
                                             calibration_amp("cpu", hw)),
        "distill": lambda kind: _distill(info, bpw, kind, quantize, streamed, hw.cpu.fast_bf16),
        "qsft": lambda kind: _qsft(info, bpw, kind, seq_len, batch),
        "chat": lambda kind: _chat(info, bpw, kind, context, batch),
    }
    stages: dict[str, StageEstimate] = {}
    disk_so_far = 0
    for stage in ALL_STAGES:
        if stage in DISTILL_STAGES and not quantize.distills:
            continue
        need = builders[stage](acc.kind)
        disk_so_far += need.disk
        stages[stage] = _place(stage, need, lambda b=builders[stage]: b("cpu"), acc, hw, disk_so_far)
    notes = []
    if len(hw.gpus) > 1:
        notes.append(f"{len(hw.gpus)} GPUs found; the plan uses one ({hw.best_device}, the most free memory)")
    return Plan(
        model_id=info.model_id, bpw=bpw, device=hw.best_device, size_gb=_gb(quantized_bytes(info, bpw)),
        source_gb=_gb(info.source_bytes), accelerator_gb=_gb(acc.budget), ram_gb=_gb(hw.ram_available_bytes),
        disk_free_gb=None if hw.disk_free_bytes is None else _gb(hw.disk_free_bytes), settings=settings,
        stages=stages, notes=tuple(notes), quantize=quantize.to_dict())


def max_bpw_that_fits(info: ModelInfo, hw: HardwareProfile, stage: str = "chat", *,
                      allow_offload: bool = False, **kwargs: Any) -> float | None:
    """The largest budget in [2, 16] (to 0.01 bit) at which `stage` runs on this machine's best device
    ("gpu", or "cpu" without an accelerator or for a stage that always runs there; "offload" too if allowed), or
    None if even 2 bits do not."""
    if stage not in ALL_STAGES:
        raise BadInputError(f"unknown stage {stage!r}", hint=f"Use one of: {', '.join(ALL_STAGES)}.")
    quantize = kwargs.get("quantize")
    if stage in DISTILL_STAGES and not (quantize is not None and quantize.distills):
        raise BadInputError(f"the {stage} stage runs only when the quantize job distils",
                            hint="Plan with quantize settings whose distill_epochs is above 0.")
    ok = {"gpu"} if accelerator(hw).kind != "cpu" and stage not in CPU_STAGES else {"cpu"}
    if allow_offload:
        ok.add("offload")

    def fits(bpw: float) -> bool:
        return plan_model(info, bpw, hw, **kwargs).stages[stage].verdict in ok

    if fits(MAX_BPW):
        return MAX_BPW
    if not fits(MIN_BPW):
        return None
    lo, hi = 200, 1600  # hundredths of a bit; memory grows with bpw, so bisect
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid / 100) else (lo, mid)
    return lo / 100


def quantized_bytes(info: ModelInfo, bpw: float) -> int:
    """Size of the quantized model: linears at `bpw` (codes + scales + zeros), everything else 16-bit."""
    return int(info.linear_params * bpw / 8) + info.other_params * 2


# ---- per-stage needs -------------------------------------------------------------------------------

_dims = pq.dims


def _infer_token_bytes(info: ModelInfo) -> int:
    """Live activations per token inside one block during a no-grad forward in 16 bits (chat)."""
    return pq.infer_token_bytes(info, ACT_BYTES)


def _train_token_bytes(info: ModelInfo) -> int:
    """Activations and their gradients per token for one block under autograd in 16 bits (Q-SFT)."""
    return pq.train_token_bytes(info, ACT_BYTES)


AUTO_STREAM_RAM_SHARE = 0.9
"""The quantize pipeline streams blocks when loading the model whole would take more than this share of RAM."""


STREAM_ACTIVATION_SHARE = 0.25
"""Streamed, the stages keep at most this share of the available RAM in activations (more windows: more passes)."""


def stream_activation_budget(ram_available: int) -> int:
    """Bytes the streamed stages may keep in activations at once: a share of the available RAM, at least 256 MiB."""
    return max(256 * 2**20, int(STREAM_ACTIVATION_SHARE * ram_available))


def loads_whole(float32_bytes: int, formats: int, ram_available: int) -> bool:
    """Whether the quantize pipeline loads the model whole, else it streams it block by block
    (engine/model_stream.py): whole, it holds about (2 + formats) x the float32 weights (the model, the
    measure stage's per-format weight errors, their products; measured on SmolLM2 in docs/benchmarks/plan.md)."""
    return (2 + formats) * float32_bytes <= AUTO_STREAM_RAM_SHARE * ram_available


def _pipeline_host(info: ModelInfo, streamed: bool) -> dict[str, int]:
    """RAM the quantize job keeps through its stages: the whole model in fp32 (its pages stay resident even after
    calibration replaced the linears: transformers maps the checkpoint as one copy-on-write file), or, streamed,
    what lies outside the blocks in fp32."""
    return ({"outside_blocks_fp32": pq.outside_params(info) * 4} if streamed
            else {"model_fp32": info.total_params * 4})


def _streams(info: ModelInfo, settings: QuantizeSettings, ram_available: int) -> bool:
    """Whether the quantize pipeline streams this model: as asked, or by its rule on this much free RAM."""
    if settings.stream is not None:
        return settings.stream
    return not loads_whole(info.total_params * 4, settings.formats, ram_available)


def calibration_device(hw: HardwareProfile) -> str:
    """The device kind the quantize pipeline calibrates on here, for QuantizeSettings.from_preset: "cuda" when the
    plan uses a CUDA GPU, else "cpu" (engine/pipeline/quantize.py calibrates on CUDA only)."""
    return "cuda" if hw.best_device.startswith("cuda") else "cpu"


def calibration_amp(kind: str, hw: HardwareProfile) -> bool:
    """Whether calibration tunes under bf16 autocast here (CalibConfig.use_amp's rule: CUDA with bf16, CPUs whose
    oneDNN does bf16, i.e. AVX-512 or AMX)."""
    if kind == "cuda":
        gpu = hw.gpu(int(hw.best_device.split(":")[1])) if hw.best_device.startswith("cuda:") else None
        return gpu is None or gpu.compute_capability is None or gpu.compute_capability >= (8, 0)
    if kind == "cpu":
        return any(f.startswith(("avx512", "amx")) for f in hw.cpu.flags)
    return False


def _runtime(kind: str, pipeline: bool = False) -> tuple[dict[str, int], dict[str, int]]:
    """(accelerator, host) overheads of a worker process on this kind of device; `pipeline`: a quantize job's
    (its tokenizer and model classes loaded)."""
    if kind == "cuda":
        return {"cuda_context": CUDA_CONTEXT_BYTES}, {"runtime": CUDA_HOST_RUNTIME_BYTES}
    if kind == "mps":
        return {}, {"runtime": MPS_HOST_RUNTIME_BYTES}
    if pipeline:
        return {}, {"runtime": pq.CPU_PIPELINE_RUNTIME_BYTES, "workspace": pq.CPU_PIPELINE_WORKSPACE_BYTES}
    return {}, {"runtime": CPU_RUNTIME_BYTES, "workspace": CPU_WORKSPACE_BYTES}


def _download(info: ModelInfo, source_on_disk: bool) -> _Need:
    need = _Need(disk=0 if source_on_disk else info.source_bytes)
    need.notes.append("the model is already on disk" if source_on_disk
                      else f"downloads {_gb(info.source_bytes):.2f} GiB of weights ({info.source_format})")
    return need


def _measure(info: ModelInfo, kind: str, settings: QuantizeSettings, streamed: bool, ram_available: int) -> _Need:
    _, host = _runtime(kind, pipeline=True)
    work = pq.measure_terms(info, settings, streamed, stream_activation_budget(ram_available))
    need = _Need(host={**host, **_pipeline_host(info, streamed), **work},
                 disk=max(len(info.linears), 7 * info.num_layers) * settings.formats * 8)
    need.notes.append(
        ("streamed block by block: one block of full-precision weights in RAM at a time" if streamed
         else "the full-precision model is held in RAM in fp32 with each linear's weight error per candidate format "
              "(a model that does not fit so is streamed block by block)")
        + f"; {settings.measure_samples} windows × {settings.measure_seq_len} tokens, {settings.formats} formats, "
          "on the CPU (where the pipeline loads the model), after the full-precision perplexity")
    return need


def _calibrate(info: ModelInfo, bpw: float, kind: str, settings: QuantizeSettings, streamed: bool,
               amp: bool) -> _Need:
    acc, host = _runtime(kind, pipeline=True)
    device, prefer, work = pq.calibrate_terms(info, bpw, settings, streamed, amp, on_accelerator=kind != "cpu")
    need = _Need(must={**acc, **device}, prefer=prefer,
                 host={**host, **_pipeline_host(info, streamed), **pq.text_terms(False), **work},
                 disk=quantized_bytes(info, bpw))
    need.notes.append(f"{settings.calib_samples} samples × {settings.calib_seq_len} tokens, mini-batches of "
                      f"{min(settings.calib_batch, settings.calib_samples)}; full-precision and quantized-stream "
                      "activations kept for every sample; one block tuned at a time; "
                      + ("then distilled" if settings.distills else
                         f"the quantized model is then evaluated on the CPU at a window of {settings.eval_window}"))
    return need


def _teacher(info: ModelInfo, kind: str, settings: QuantizeSettings, streamed: bool, ram_available: int) -> _Need:
    _, host = _runtime(kind, pipeline=True)
    work = pq.teacher_terms(info, settings, streamed, stream_activation_budget(ram_available))
    need = _Need(host={**host, **_pipeline_host(info, streamed), **pq.text_terms(False), **work},
                 disk=pq.teacher_target_bytes(settings))
    need.notes.append(f"the full-precision model's top {settings.distill_top_k} next tokens on "
                      f"{pq.teacher_windows(settings)} windows × {settings.distill_seq_len} tokens, one window at a "
                      "time on the CPU (where the pipeline loads the model), kept for distillation")
    return need


def _distill(info: ModelInfo, bpw: float, kind: str, settings: QuantizeSettings, streamed: bool,
             bf16: bool) -> _Need:
    _, host = _runtime(kind, pipeline=True)
    work = pq.distill_terms(info, bpw, _int4_share(bpw), settings, bf16)
    need = _Need(host={**host, **_pipeline_host(info, streamed), **pq.text_terms(False), **work})
    need.notes.append(f"{settings.distill_epochs} epoch{'s' if settings.distill_epochs != 1 else ''} over "
                      f"{settings.distill_samples} windows × {settings.distill_seq_len} tokens on the CPU: one "
                      "window's forward and backward through the whole quantized model at a time, every linear's "
                      f"dequantized weight kept for it in {'bf16' if bf16 else 'fp32'}; then the quantized model is "
                      f"evaluated at a window of {settings.eval_window}")
    return need


def _int4_share(bpw: float) -> float:
    """Share of INT4/g128 (4.25 bpw) against INT2/g64 (2.5 bpw) layers in a layout that meets `bpw`
    (smooth, so more bits never need less memory)."""
    return min(1.0, max(0.0, (bpw - 2.5) / (4.25 - 2.5)))


def _stats_per_weight(bpw: float) -> float:
    """Scales + zeros per weight for a layout at `bpw` (see _int4_share)."""
    share = _int4_share(bpw)
    return (1 - share) * 2 / 64 + share * 2 / 128


def _qsft(info: ModelInfo, bpw: float, kind: str, seq_len: int, batch: int) -> _Need:
    h, _, _, _, v = _dims(info)
    acc, host = _runtime(kind)
    n_scales = int(info.linear_params * _stats_per_weight(bpw) / 2)  # Adam trains the scales; zeros are codes
    tokens = seq_len * batch
    must = {
        "weights": quantized_bytes(info, bpw),
        "code_residual": info.linear_params * QSFT_RESIDUAL_BITS // 8,  # sub-step accumulators of the codes
        "code_moments": sum(4 * (lin.out_features + lin.in_features) for lin in info.linears),  # factored, fp32
        "stats_optimizer": n_scales * 12,  # fp32 log-scales + Adam m, v; gradients live one layer at a time
        "weight_grad": info.largest_linear * 4,  # one layer's fp32 gradient, applied at once
        "code_update_temporaries": QSFT_UPDATE_TEMP_BYTES,
        "checkpoints": info.num_layers * tokens * h * ACT_BYTES,
        "block_recompute": tokens * _train_token_bytes(info),
        "cross_entropy": min(CE_CHUNK, tokens) * v * LOGIT_BYTES * 2 + tokens * h * ACT_BYTES * 2,
    }
    must["margin"] = int(QSFT_INT4_MARGIN * _int4_share(bpw) * sum(must.values()))
    need = _Need(must={**acc, **must}, host=host, disk=2 * quantized_bytes(info, bpw))
    need.notes.append("codes updated inside the backward pass; activations recomputed per block; "
                      f"cross-entropy in chunks of {CE_CHUNK} tokens; embeddings and lm_head frozen")
    return need


def _chat(info: ModelInfo, bpw: float, kind: str, context: int, batch: int) -> _Need:
    h = info.hidden_size
    acc, host = _runtime(kind)
    chunk = min(PREFILL_CHUNK, context)
    activations = batch * chunk * (_infer_token_bytes(info) + context * ACT_BYTES)  # block + attention mask
    need = _Need(
        must={**acc, "activations": activations + batch * info.vocab_size * LOGIT_BYTES + h * 2},
        prefer={"weights": quantized_bytes(info, bpw),
                "kv_cache": batch * context * info.kv_bytes_per_token(KV_BYTES)},
        host=host,
    )
    need.notes.append(f"KV cache for {context} tokens; prompt processed {chunk} tokens at a time")
    return need


# ---- placement ---------------------------------------------------------------------------------------

def _gb(n: float) -> float:
    return round(n / GIB, 3)


def _place(stage: str, need: _Need, cpu_need: Any, acc: _Accel, hw: HardwareProfile,
           disk_so_far: int) -> StageEstimate:
    """Choose gpu / offload / cpu / no_fit for one stage and say how much goes where."""
    ram = hw.ram_available_bytes
    notes = list(need.notes)
    must, prefer, host = (sum(d.values()) for d in (need.must, need.prefer, need.host))
    breakdown = {k: _gb(v) for d in (need.must, need.prefer, need.host) for k, v in d.items()}

    on_acc = must + prefer
    host_ok = (on_acc + host <= ram) if acc.kind == "mps" else host <= ram  # Apple: one memory pool
    if stage == "download":
        verdict, gpu, cpu, gap = ("gpu" if acc.kind != "cpu" else "cpu"), 0, 0, 0
    elif acc.kind != "cpu" and on_acc == 0:  # a stage that runs on the CPU whatever the machine (measure)
        verdict, gpu, cpu, gap = ("cpu", 0, host, host - ram) if host <= ram else ("no_fit", 0, host, host - ram)
        if verdict == "no_fit":
            notes.append(f"short of {_gb(gap):.2f} GiB of memory")
    elif acc.kind != "cpu" and on_acc <= acc.budget and host_ok:
        verdict, gpu, cpu, gap = "gpu", must + prefer, host, must + prefer - acc.budget
    elif acc.kind == "cuda" and must <= acc.budget and host + must + prefer - acc.budget <= ram:
        spill = must + prefer - acc.budget
        verdict, gpu, cpu, gap = "offload", acc.budget, host + spill, spill
        notes.append(f"{_gb(spill):.2f} GiB does not fit the {acc.name} and lives in RAM (slower)")
    else:
        on_cpu: _Need = cpu_need() if acc.kind != "cpu" else need
        total = on_cpu.total()
        if acc.kind != "cpu":
            breakdown = {k: _gb(v) for d in (on_cpu.must, on_cpu.prefer, on_cpu.host) for k, v in d.items()}
        if total <= ram:
            verdict, gpu, cpu, gap = "cpu", 0, total, total - ram
            if acc.kind != "cpu":
                notes.append(f"needs {_gb(must):.2f} GiB on the {acc.name} at least, which has "
                             f"{_gb(acc.budget):.2f}: runs on the CPU (slow)")
        else:
            gap = total - ram
            if acc.kind == "cuda":
                spill = max(0, on_acc - acc.budget)
                gap = min(gap, max(0, must - acc.budget) + max(0, host + spill - ram))
                gpu, cpu = min(on_acc, acc.budget), host + spill
            else:
                gpu, cpu = 0, total
            verdict = "no_fit"
            notes.append(f"short of {_gb(gap):.2f} GiB of memory")
    disk_free = hw.disk_free_bytes
    if need.disk and disk_free is not None and disk_so_far > disk_free:
        short = disk_so_far - disk_free
        notes.append(f"disk: the pipeline so far needs {_gb(disk_so_far):.2f} GiB, {_gb(disk_free):.2f} free "
                     f"at {hw.disk_path}")
        gap = max(gap, short) if verdict == "no_fit" else short
        verdict = "no_fit"
    return StageEstimate(disk_gb=_gb(need.disk), gpu_gb=_gb(gpu), cpu_gb=_gb(cpu), verdict=verdict,
                         gap_gb=_gb(gap), notes=tuple(notes), breakdown=breakdown)


def describe(plan: Plan) -> str:
    """A readable table of a plan, for `bitsmith plan`."""
    lines = [f"{plan.model_id or '(model)'} at {plan.bpw:g} bits per weight on {plan.device}: "
             f"{plan.size_gb:.2f} GiB quantized (source {plan.source_gb:.2f} GiB)",
             f"memory: accelerator {plan.accelerator_gb:.2f} GiB usable, RAM {plan.ram_gb:.2f} GiB available"
             + (f", disk {plan.disk_free_gb:.2f} GiB free" if plan.disk_free_gb is not None else "")]
    header = f"{'stage':<10} {'verdict':<8} {'disk':>8} {'gpu':>8} {'ram':>8} {'gap':>8}"
    lines += ["", header, "-" * len(header)]
    for name, est in plan.stages.items():
        lines.append(f"{name:<10} {est.verdict:<8} {est.disk_gb:>8.2f} {est.gpu_gb:>8.2f} {est.cpu_gb:>8.2f} "
                     f"{est.gap_gb:>8.2f}")
    lines.append("(GiB; gap > 0: missing, or spilled to RAM for offload; gap ≤ 0: to spare)")
    for name, est in plan.stages.items():
        for note in est.notes:
            lines.append(f"  {name}: {note}")
    lines += [f"note: {n}" for n in plan.notes]
    return "\n".join(lines)
