"""Memory of the quantize job's measure, teacher, calibrate and distill stages, term by term, for engine/plan.py.

Each term counts the tensors the code holds at the stage's peak × their shapes × their dtype (engine/search/
measure.py and measure_stream.py, engine/calibrate/, engine/eval/perplexity.py, engine/model_stream.py), plus
what the process itself takes (measured). Host terms are RAM; on a CUDA machine calibration puts one block, its
tuning state and activations on the GPU (`device`), the activation streams there when they fit (`prefer`), the
rest in RAM (`host`). The pipeline measures and evaluates on the CPU, where the model is loaded, whatever the
machine; the teacher and distill stages of end-to-end distillation run on the CPU too (engine/calibrate/e2e.py).
Checked against measured peaks of real jobs: docs/benchmarks/plan.md, tests/engine/test_plan.py.
Torch-free.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from bitsmith.engine.errors import BadInputError
from bitsmith.engine.modelinfo import ModelInfo

F32 = 4
BF16 = 2
MIB = 2**20

# The quantize job's CPU process once torch 2.13, transformers 5.23, the tokenizer and model classes are imported
# and SmolLM2's 49 k-token tokenizer is loaded (RSS 486 MiB, measured 2026-11-22 on the dev box, AMD EPYC, 2 cores,
# Linux, Python 3.11: docs/benchmarks/plan.md), and what its first forward adds (thread pools, oneDNN caches).
CPU_PIPELINE_RUNTIME_BYTES = 486 * MIB
CPU_PIPELINE_WORKSPACE_BYTES = 32 * MIB

# The calibration text is tokenized whole and its ids kept as a Python list: an 8-byte slot and a 28-byte int per
# token. The offline default (the standard library's docstrings, 1.1 M characters) is 295 k tokens for SmolLM2's
# tokenizer. The fast tokenizer's encode buffers (~630 bytes a token at their peak) are freed into the C heap, which
# keeps ~440 bytes a token resident until something returns it (engine/memory.py; the pipeline does not yet).
PY_TOKEN_BYTES = 8 + 28
CALIB_TEXT_TOKENS = 300_000
TOKENIZER_KEPT_BYTES_PER_TOKEN = 440

# Calibration (engine/calibrate/signround.py) holds per quantized weight of the block being tuned, at the peak (the
# backward of a tuning step): the rounding offsets V and their gradient (fp32), the best V so far (keep-best copy),
# what autograd keeps of the fake-quantized weight's graph (the clamp's input and q - z, fp32), the fake-quantized
# weight as the linear sees it (bf16 under autocast, else fp32) and the starting codes kept to fall back to.
TUNE_V_BYTES = F32 + F32 + F32
TUNE_GRAPH_BYTES = F32 + F32
TUNE_START_BYTES = 0.5

# glibc serves blocks below its mmap threshold (which rises with use up to 32 MiB on 64-bit) from the C heap and keeps
# what is freed there. A tuning step allocates and frees the same mix of differently sized tensors every iteration
# (forward, then backward), and on the CPU the heap settles near twice the live tuning state: measured on one
# block (tests/benchmarks/bench_block_memory.py, hidden 1024: 594 MiB with glibc's defaults, 347 MiB with every
# block above 64 KiB mmapped, 320 MiB of live tensors counted here) and in whole jobs on two shapes (plan.md). So
# tuning tensors under the threshold are counted twice. Tensors above it (an 8B model's linears) are mmapped and
# go back to the system when freed.
GLIBC_MMAP_THRESHOLD_MAX = 32 * MIB


@dataclass(frozen=True)
class QuantizeSettings:
    """What a quantize job runs with (engine/pipeline/presets.py): candidate formats measured, the measure and
    calibration windows, the calibration mini-batch, the perplexity window and tokens, streaming (None: the
    pipeline's own rule, engine/plan.py: loads_whole), and end-to-end distillation (engine/calibrate/e2e.py: epochs,
    0 for none; its training windows and their length, the held-out windows, the optimizer's batch of windows, the
    teacher's k, whether zero-points train as well as scales)."""

    formats: int = 3  # the default preset's candidate formats
    measure_samples: int = 16
    measure_seq_len: int = 512
    calib_samples: int = 128
    calib_seq_len: int = 2048
    calib_batch: int = 8
    eval_window: int = 512
    eval_tokens: int = 32768
    stream: bool | None = None
    distill_epochs: int = 0
    distill_samples: int = 32  # engine/pipeline/presets.py: Preset's defaults
    distill_seq_len: int = 512
    distill_val_samples: int = 4  # engine/calibrate/e2e.py: DistillConfig's defaults (which imports torch)
    distill_batch: int = 4
    distill_top_k: int = 32
    distill_zeros: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.distill_epochs, int) or self.distill_epochs < 0:
            raise BadInputError(f"distillation epochs must be a whole number ≥ 0, got {self.distill_epochs!r}",
                                hint="Give 0 (no distillation) or more, e.g. --distill-epochs 2.")

    @property
    def distills(self) -> bool:
        """Whether the job runs the teacher and distill stages."""
        return self.distill_epochs > 0

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_preset(cls, name: str, device: str = "cpu", stream: bool | None = None,
                    distill_epochs: int | None = None) -> QuantizeSettings:
        """The settings `bitsmith quantize --preset NAME [--distill-epochs N]` runs with on a device of this kind
        ("cpu", "cuda", ...): the preset's measure and evaluation windows and formats, the calibration preset it
        names (with its CPU overrides on a CPU, as engine/pipeline/quantize.py: calibration_settings applies them),
        and its distillation (epochs as given, else the preset's; the rest DistillConfig's defaults, as
        engine/pipeline/quantize.py: distill_settings)."""
        from bitsmith.engine.calibrate.config import CalibConfig
        from bitsmith.engine.pipeline.presets import get_preset
        from bitsmith.engine.quant.spec import parse_spec

        preset = get_preset(name)
        cpu = device.split(":")[0] == "cpu"
        calib = CalibConfig.preset(preset.calib_preset, device=device, **(dict(preset.cpu_calib_overrides) if cpu
                                                                          else {}))
        epochs = preset.distill_epochs if distill_epochs is None else distill_epochs
        specs = [parse_spec(f) for f in preset.formats]
        return cls(formats=len(preset.formats), measure_samples=preset.measure_samples,
                   measure_seq_len=preset.measure_seq_len, calib_samples=calib.samples, calib_seq_len=calib.seq_len,
                   calib_batch=calib.batch_size, eval_window=preset.eval_window, eval_tokens=preset.eval_tokens,
                   stream=stream, distill_epochs=epochs, distill_samples=preset.distill_samples,
                   distill_seq_len=preset.distill_seq_len,
                   distill_zeros=any(s.float_zeros or s.double_quant_zeros for s in specs))


def dims(info: ModelInfo) -> tuple[int, int, int, int, int]:
    """(hidden, intermediate, query width, key/value width, vocabulary)."""
    q = info.num_heads * info.head_dim
    kv = info.num_kv_heads * info.head_dim
    return info.hidden_size, info.intermediate_size, q, kv, info.vocab_size


def infer_token_bytes(info: ModelInfo, act_bytes: int) -> int:
    """Live activations per token inside one block during a no-grad forward (the block's peak)."""
    h, inter, q, kv, _ = dims(info)
    return (4 * h + 3 * inter + 2 * (q + 2 * kv)) * act_bytes


def train_token_bytes(info: ModelInfo, act_bytes: int) -> int:
    """Activations and their gradients per token for one block under autograd (its forward kept for the backward)."""
    h, inter, q, kv, _ = dims(info)
    return (10 * h + 6 * inter + 3 * (q + 2 * kv)) * act_bytes


def block_other_params(info: ModelInfo) -> int:
    """Non-linear parameters (norms, biases) of one block."""
    h, v = info.hidden_size, info.vocab_size
    embeddings = v * h * (1 if info.tie_word_embeddings else 2) + h
    return max(0, info.other_params - embeddings) // max(info.num_layers, 1)


def block_params(info: ModelInfo) -> int:
    """Parameters of the largest decoder block (its linears and the rest)."""
    return info.block_linear_params + block_other_params(info)


def outside_params(info: ModelInfo) -> int:
    """Parameters outside the decoder blocks: embeddings, final norm, an untied head."""
    return max(0, info.total_params - info.num_layers * block_params(info))


def quantized_linear_bytes(info: ModelInfo, bpw: float) -> int:
    """The quantized linears (codes + scales + zeros) at `bpw`."""
    return int(info.linear_params * bpw / 8)


def padded_share(info: ModelInfo, group: int = 128) -> float:
    """Share of block weights whose input size is not a whole number of groups: the tuner copies those padded."""
    total = sum(lin.params for lin in info.linears) or 1
    return sum(lin.params for lin in info.linears if lin.in_features % group) / total


def text_terms(tokenizer_kept: bool) -> dict[str, int]:
    """The tokenized calibration text the job keeps, and (`tokenizer_kept`) what the tokenizer left in the C heap:
    resident through the full-precision perplexity and the measurement, which returns it (engine/memory.py); when
    the measurement was cached, calibration reuses it for its own tensors."""
    per_token = PY_TOKEN_BYTES + (TOKENIZER_KEPT_BYTES_PER_TOKEN if tokenizer_kept else 0)
    return {"calibration_text": CALIB_TEXT_TOKENS * per_token}


def head_bytes(info: ModelInfo, tokens: int, copies: int) -> int:
    """fp32 logits over the vocabulary for `tokens` tokens, `copies` of them (logits, log-softmax, their gradient)."""
    return copies * tokens * info.vocab_size * F32


def evaluate_terms(info: ModelInfo, window: int, streamed_hidden: int = 0, quantized: bool = False) -> dict[str, int]:
    """Scoring one perplexity window (engine/eval/perplexity.py): its logits and their log-softmax, the KV cache the
    model's own forward builds (fp32, every layer), one block's activations; `streamed_hidden`: the hidden states of
    a streamed pass; `quantized`: a QuantLinear dequantizes its weight for each product."""
    _, _, _, kv, _ = dims(info)
    terms = {"eval_logits": head_bytes(info, window, 2),
             "eval_activations": window * infer_token_bytes(info, F32)}
    if streamed_hidden:
        terms["eval_hidden_states"] = streamed_hidden
    else:
        terms["eval_kv_cache"] = 2 * info.num_layers * window * kv * F32
    if quantized:
        terms["eval_dequantized_weight"] = info.largest_linear * F32
    return terms


def _max_terms(*options: dict[str, int]) -> dict[str, int]:
    """The option with the largest total (a stage's phases follow each other: its peak is the largest)."""
    return max(options, key=lambda d: sum(d.values()))


def measure_terms(info: ModelInfo, s: QuantizeSettings, streamed: bool, budget: int) -> dict[str, int]:
    """Host bytes of loading (streamed), the full-precision evaluation and the sensitivity measurement beyond what the
    job keeps loaded (the tokenized calibration text included): the largest of them, since they run one after the
    other."""
    h = info.hidden_size
    t, n = s.measure_seq_len, s.measure_samples
    if streamed:  # engine/search/measure_stream.py: every block's input kept for the backward pass down the blocks
        per_window = (info.num_layers + 2) * t * h * F32
        windows = max(1, min(n, budget // max(per_window, 1)))  # more windows than the budget: more passes
        stored = {"block_inputs": windows * per_window}
        top = {"head_gradient": head_bytes(info, t, 3)}  # one window's logits, log-softmax and their gradient
        backward = {"block_fp32": block_params(info) * F32,  # the block read back, its Fisher sum, one window's
                    "fisher_and_weight_grads": 2 * info.block_linear_params * F32,  # weight gradients
                    "block_autograd": t * train_token_bytes(info, F32),
                    "weight_errors": (s.formats + 1) * info.largest_linear * F32}
        measure = {**text_terms(True), **stored, **_max_terms(top, backward)}
        # opening the model (engine/model_stream.py) reads every tensor outside the blocks in its stored dtype, then
        # converts them to fp32 one by one through fp16, before it frees the copies it read
        embedding = info.vocab_size * h
        loading = {"reading_outside_blocks": outside_params(info) * info.source_dtype_bytes
                   + embedding * (BF16 + (F32 if info.source_dtype_bytes != F32 else 0))}
        fit = budget // (s.eval_window * h * F32)
        eval_windows = max(1, min(-(-s.eval_tokens // s.eval_window), fit) if s.eval_tokens else fit)  # 0: all text
        evaluate = {**text_terms(True),
                    **evaluate_terms(info, s.eval_window, streamed_hidden=eval_windows * s.eval_window * h * F32)}
        return _max_terms(loading, measure, evaluate)  # the text is tokenized after loading
    else:  # engine/search/measure.py: every linear's ΔW² per format, then one backward through the whole model
        measure = {"weight_errors": s.formats * info.linear_params * F32,
                   "model_autograd": info.num_layers * t * train_token_bytes(info, F32),
                   "head_gradient": head_bytes(info, t, 3)}
        evaluate = evaluate_terms(info, s.eval_window)
    return {**text_terms(True), **_max_terms(measure, evaluate)}


def tune_bytes_per_weight(amp: bool) -> float:
    """Tuning state per weight of the block being calibrated (see TUNE_* above)."""
    return TUNE_V_BYTES + TUNE_GRAPH_BYTES + (BF16 if amp else F32) + TUNE_START_BYTES


def _block_linears(info: ModelInfo) -> list[int]:
    """Weights of each linear of the largest decoder block (one average linear per block when shapes are unknown)."""
    per_block: dict[str, list[int]] = {}
    for lin in info.linears:
        m = re.search(r"layers\.(\d+)\.", lin.name)
        if m:
            per_block.setdefault(m.group(1), []).append(lin.params)
    return max(per_block.values(), key=sum) if per_block else [info.block_linear_params]


def calibrate_block_terms(info: ModelInfo, samples: int, seq_len: int, batch: int, amp: bool,
                          heap: bool = True) -> dict[str, int]:
    """What tuning one block adds at its peak: the full-precision and quantized activation streams (fp32, every
    sample), the tuning state of its weights, a mini-batch's activations under autograd, and (`heap`: on the CPU)
    the C heap's overhead on the tuning tensors it serves (GLIBC_MMAP_THRESHOLD_MAX)."""
    per_weight = tune_bytes_per_weight(amp) + F32 * padded_share(info)
    tokens = min(batch, samples) * seq_len
    terms = {
        "activation_streams": 2 * samples * seq_len * info.hidden_size * F32,
        "tuning_state": int(info.block_linear_params * per_weight),
        "tuning_activations": tokens * train_token_bytes(info, BF16 if amp else F32),
    }
    if heap:
        small = sum(n for n in _block_linears(info) if n * F32 < GLIBC_MMAP_THRESHOLD_MAX)
        widest = tokens * max(info.intermediate_size, info.hidden_size) * F32
        terms["c_heap_overhead"] = int(small * per_weight) + (
            terms["tuning_activations"] if widest < GLIBC_MMAP_THRESHOLD_MAX else 0)
    return terms


def calibrate_terms(info: ModelInfo, bpw: float, s: QuantizeSettings, streamed: bool, amp: bool,
                    on_accelerator: bool) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """(device, prefer, host) bytes of calibration and the evaluation after it, beyond what the job keeps loaded
    (with distillation the evaluation follows the distill stage instead, and the teacher's targets are kept).

    Nothing returns the C heap between calibration and the evaluation of the quantized model, so on the CPU the
    evaluation runs next to the heap calibration grew: its small tensors (KV cache, activations, a dequantized
    weight) fit in that heap's free space, its logits (above the mmap threshold) come on top."""
    block = calibrate_block_terms(info, s.calib_samples, s.calib_seq_len, s.calib_batch, amp,
                                  heap=not on_accelerator)
    streams = {"activation_streams": block.pop("activation_streams")}
    tuning = {**block}
    if streamed or on_accelerator:  # the block being tuned, read from the files or moved to the device
        tuning["block_fp32"] = block_params(info) * F32
    quantized = {"quantized_linears": quantized_linear_bytes(info, bpw)}
    if s.distills:
        quantized["teacher_targets"] = teacher_target_bytes(s)
    if on_accelerator:
        evaluation = {} if s.distills else evaluate_terms(info, s.eval_window, quantized=True)
        return tuning, streams, {**quantized, **evaluation}
    logits = s.eval_window * info.vocab_size * F32
    evaluation = {"eval_logits": 2 * logits} if logits >= GLIBC_MMAP_THRESHOLD_MAX and not s.distills else {}
    return {}, {}, {**streams, **tuning, **quantized, **evaluation}


# ---- end-to-end distillation (engine/calibrate/e2e.py) ------------------------------------------------------------
# Both stages run on the CPU, where the pipeline keeps the model (calibration moves each block back), whatever the
# machine: the teacher before calibration (the full-precision model's top-k next-token distribution on the windows),
# distill after it (Adam on every QuantLinear's log-scales, zero-points where they train, and the norms; one window's
# forward and backward through the whole quantized model at a time, against the teacher).

TEACHER_ID_BYTES = 8 + 4  # per token: its id (int64) and the probability of the tokens outside the k (fp32)
TEACHER_K_BYTES = 4 + 2  # per token and k: the index (int32) and the probability (fp16)
LOSS_LOGIT_BUDGET = 1 << 26  # engine/finetune/loss.py: LOGIT_BUDGET, logit elements per chunk of the loss
STREAM_BLOCK_BATCH = 8  # engine/stream_forward.py: BATCH, windows through one block at a time
# A trained statistic holds, at the peak: its fp32 value, gradient, Adam's two moments, the kept best copy, and the
# scales the forward exponentiated and autograd saved; the snapshot taken to fall back to adds the layer's own
# 16-bit scale and zero per group.
DISTILL_STAT_BYTES = 6 * F32
DISTILL_SNAPSHOT_BYTES = 2 * BF16
# glibc serves a request above its mmap threshold from a free chunk of the heap when one is large enough, before it
# maps fresh memory. After the heap is trimmed (engine/memory.py: release_free_memory, before distillation) its free
# chunks hold no pages; steps that allocate and free a chunk of logits after another land them at shifting places in
# those chunks and leave the pages resident. Measured (plan.md): about three chunks of logits beyond the live set
# (+290 to +330 MiB at 512 × 49152 × 4 B each) on SmolLM2 and on hidden 1024, whole and streamed.
HEAP_REUSE_WINDOWS = 3


def teacher_windows(s: QuantizeSettings) -> int:
    """Windows the teacher scores: the training windows and the held-out ones."""
    return s.distill_samples + s.distill_val_samples


def teacher_target_bytes(s: QuantizeSettings) -> int:
    """The teacher's targets, kept from the teacher stage to the end of distillation."""
    return teacher_windows(s) * s.distill_seq_len * (TEACHER_ID_BYTES + s.distill_top_k * TEACHER_K_BYTES)


def distill_token_bytes(info: ModelInfo) -> int:
    """What autograd keeps per token of one block for distillation's backward (fp32, the pipeline's model dtype): the
    input and output of both norms (4h); the rotated queries, the keys and values (repeated to the query width on the
    CPU), the attention output and its contiguous copy for o_proj (5q); the MLP's gate, its activation, up and their
    product (4i). Counted with saved-tensor hooks on SmolLM2 and hidden 1024 (docs/benchmarks/plan.md: within 1 %)."""
    h, inter, q, _, _ = dims(info)
    return (4 * h + 5 * q + 4 * inter) * F32


def stat_groups(info: ModelInfo, int4_share: float) -> int:
    """Quantization groups of every linear (one scale and one zero each) for a layout with this share of 128-wide
    groups (INT4/INT3 g128) against 64-wide ones (INT2 g64); shorter last groups count whole."""
    return int(sum(lin.out_features * (int4_share * -(-lin.in_features // 128)
                                       + (1 - int4_share) * -(-lin.in_features // 64)) for lin in info.linears))


def teacher_terms(info: ModelInfo, s: QuantizeSettings, streamed: bool, budget: int) -> dict[str, int]:
    """Host bytes of the teacher stage beyond what the job keeps loaded: the targets gathered so far, and one
    window's forward at a time (no gradients, the heap handed back after each window): a block's activations, the
    window's logits and, while its top k and log-sum-exp are taken, the exponentials logsumexp makes (as large).
    Streamed (engine/stream_forward.py: window_logits), the hidden states of the windows of one pass, and the block
    read from the files (fp32) with a batch of windows through it, whose activations are still in the heap when the
    head computes the first window's logits."""
    t, h, v = s.distill_seq_len, info.hidden_size, info.vocab_size
    terms = {"teacher_targets": teacher_target_bytes(s), "teacher_logits": 2 * t * v * F32}
    if streamed:
        per_pass = max(1, min(teacher_windows(s), budget // max(t * h * F32, 1)))
        return {**terms, "teacher_hidden_states": per_pass * t * h * F32, "block_fp32": block_params(info) * F32,
                "block_activations": min(STREAM_BLOCK_BATCH, per_pass) * t * infer_token_bytes(info, F32)}
    return {**terms, "teacher_activations": t * infer_token_bytes(info, F32)}


def distill_terms(info: ModelInfo, bpw: float, int4_share: float, s: QuantizeSettings,
                  bf16: bool) -> dict[str, int]:
    """Host bytes of the distill stage and the evaluation after it, beyond what the job keeps loaded (the
    quantized linears and the teacher's targets included).

    At a step's peak (the loss of one window, every block's forward kept for the backward): the saved activations;
    each linear's dequantized weight, which QSFTLinear keeps from the forward for the backward on the CPU (bf16 where
    the CPU multiplies bf16, `bf16`, else fp32); the trained statistics with their gradients, Adam state and copies;
    the loss's chunk of logits, its softmax and their 16-bit copy, with the head's weight in the compute dtype; and
    the heap those logits re-populate after the trim that starts the stage (HEAP_REUSE_WINDOWS). The evaluation of
    the quantized model follows in that heap; its logits (2 × window × V × 4 B) take the place of the loss's, so the
    stage's peak has the larger of the two."""
    t, h, v = s.distill_seq_len, info.hidden_size, info.vocab_size
    cd = BF16 if bf16 else F32
    groups = stat_groups(info, int4_share)
    trained = groups * (2 if s.distill_zeros else 1)
    chunk = min(t, max(16, LOSS_LOGIT_BUDGET // max(v, 1)))
    terms = {
        "quantized_linears": quantized_linear_bytes(info, bpw),
        "teacher_targets": teacher_target_bytes(s),
        "distill_activations": info.num_layers * t * distill_token_bytes(info) + 3 * t * h * F32,
        "dequantized_weights": info.linear_params * cd,
        "distill_statistics": trained * DISTILL_STAT_BYTES + groups * DISTILL_SNAPSHOT_BYTES,
        "c_heap_reuse": HEAP_REUSE_WINDOWS * chunk * v * F32,
    }
    loss = {"distill_logits": chunk * v * (F32 + F32 + cd) + (v * h * cd if bf16 else 0)}
    evaluation = {"eval_logits": head_bytes(info, s.eval_window, 2)}
    return {**terms, **_max_terms(loss, evaluation)}
