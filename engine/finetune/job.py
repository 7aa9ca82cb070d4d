"""The `finetune` job: a quantized Bitsmith folder + data -> a fine-tuned Bitsmith folder of the same bpw.

Stages: load, data, evaluate (held-out loss before), train (progress with loss, tokens/s and memory;
held-out loss every `eval_every` steps; a checkpoint every `save_every` steps and on cancel), save (the
held-out loss of the model exactly as saved, then an ordinary Bitsmith folder that `bitsmith chat` and
`bitsmith eval` load as is). The job's last event is a `result` with train_loss, heldout_loss_before and
heldout_loss_after. Running the same request again resumes from `<out>/../.<name>.partial`.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from bitsmith.engine.errors import BadInputError, CancelledError, OutOfMemoryError
from bitsmith.engine.jobs import JobContext, job

from .checkpoint import load_checkpoint, save_checkpoint
from .data import describe_skipped, load_dataset
from .packing import BatchPlan, eval_batches, fit_examples, pack_rows
from .qsft import NonFiniteError, StepResult, TrainConfig, Trainer, memory_now
from .split import DEFAULT_HELDOUT, split_documents
from .template import ensure_chat_template, tokenize_record

LOG_LINES = 50  # about this many progress lines per run


def _get(params: dict[str, Any], name: str, kind: type, default: Any = None, required: bool = False) -> Any:
    value = params.get(name, default)
    if value is None:
        if required:
            raise BadInputError(f"the finetune request lacks {name!r}", f"pass --{name.replace('_', '-')}")
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise BadInputError(f"{name.replace('_', '-')} must be a {kind.__name__}, got {value!r}") from None


def config_from_params(params: dict[str, Any]) -> TrainConfig:
    """TrainConfig from a job request (unknown keys are ignored; missing ones take the defaults)."""
    fields = {"method": str, "steps": int, "lr": float, "code_lr": float, "seq_len": int, "batch_size": int,
              "grad_accum": int, "warmup": int, "residual_bits": int, "max_move_frac": float, "lora_rank": int,
              "lora_alpha": float, "seed": int, "eval_every": int, "eval_tokens": int, "save_every": int,
              "backend": str, "min_lr_ratio": float, "compute_dtype": str,
              "code_decay": float}
    kwargs = {k: _get(params, k, t) for k, t in fields.items() if params.get(k) is not None}
    if params.get("batch") is not None:
        kwargs["batch_size"] = _get(params, "batch", int)
    if params.get("grad_checkpointing") is not None:
        kwargs["grad_checkpointing"] = bool(params["grad_checkpointing"])
    if params.get("train_norms") is not None:
        kwargs["train_norms"] = bool(params["train_norms"])
    try:
        return TrainConfig(**kwargs)
    except ValueError as exc:
        raise BadInputError(str(exc)) from None


def _device(params: dict[str, Any]) -> torch.device:
    want = params.get("device")
    if want:
        if str(want).startswith("cuda") and not torch.cuda.is_available():
            raise BadInputError(f"device {want!r} asked for, but no CUDA GPU is usable here", "leave --device out")
        return torch.device(want)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _load(ctx: JobContext, source: str, device: torch.device) -> Any:
    from bitsmith.engine.quant.store import is_quantized_folder, load_quantized

    if not is_quantized_folder(source):
        name = Path(source).name or source
        raise BadInputError(
            f"{source} is not a quantized Bitsmith model (no bitsmith.json): Q-SFT trains the quantized weights",
            f"quantize it first: `bitsmith quantize {source} --bpw 3.0 --out {name}-3bpw`, then "
            f"`bitsmith finetune {name}-3bpw --data ...`",
        )
    dtype = torch.float32
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        dtype = torch.bfloat16
    ctx.stage("load", total=1)
    saved = load_quantized(source, device=str(device), dtype=dtype)
    ctx.progress(1)
    return saved


def _data(ctx: JobContext, params: dict[str, Any], tok: Any, cfg: TrainConfig) -> tuple[BatchPlan, list, dict]:
    """Training plan, held-out batches and facts about the data."""
    ctx.stage("data", total=1)
    on_bad = str(params.get("on_bad_line") or "stop")
    data = load_dataset(_get(params, "data", str, required=True), on_bad)
    if data.skipped:
        ctx.log(describe_skipped(data.skipped), level="warning")
    eval_source = params.get("eval_data")
    if eval_source:
        held_data = load_dataset(str(eval_source), on_bad)
        if held_data.skipped:
            ctx.log(describe_skipped(held_data.skipped), level="warning")
        train_recs, held_recs = data.records, held_data.records
    else:
        train_recs, held_recs = split_documents(data.records, _get(params, "heldout", float, DEFAULT_HELDOUT), cfg.seed)
    if any(r.kind == "chat" for r in (*train_recs, *held_recs)) and ensure_chat_template(tok):
        ctx.log("the tokenizer has no chat template: using ChatML (<|im_start|>role ... <|im_end|>); it is saved "
                "with the model, so chat uses the format it was trained on", level="warning")
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)

    def fit(records: list) -> tuple[list, Any]:
        examples = [tokenize_record(tok, r) for r in records]
        return fit_examples(examples, [r.kind for r in records], cfg.seq_len)

    train_ex, train_rep = fit(train_recs)
    held_ex, held_rep = fit(held_recs)
    if train_rep.truncated or train_rep.dropped:
        ctx.log(f"train: {train_rep.describe(cfg.seq_len)}", level="warning")
    else:
        ctx.log(f"train: {train_rep.describe(cfg.seq_len)}")
    if held_recs:
        ctx.log(f"held-out: {held_rep.describe(cfg.seq_len)}")
    rows = pack_rows(train_ex, cfg.seq_len)
    plan = BatchPlan(rows, train_ex, cfg.batch_size, cfg.seed, pad)
    held = eval_batches(held_ex, cfg.seq_len, cfg.eval_tokens, pad)
    micro = cfg.steps * cfg.grad_accum
    ctx.log(f"{len(train_recs)} training documents packed into {len(rows)} rows of up to {cfg.seq_len} tokens; "
            f"{cfg.steps} steps × {cfg.grad_accum} × {plan.batch_size} rows = "
            f"{micro / plan.batches_per_epoch:.2f} epochs; {len(held_recs)} held-out documents, "
            f"{sum(b.n_targets for b in held)} scored tokens evaluated")
    ctx.progress(1)
    facts = {"train_documents": len(train_recs), "heldout_documents": len(held_recs), "train_rows": len(rows),
             "truncated": train_rep.truncated + held_rep.truncated, "dropped": train_rep.dropped + held_rep.dropped,
             "skipped_records": len(data.skipped), "kinds": sorted(data.kinds)}
    return plan, held, facts


def _fingerprint(cfg: TrainConfig, params: dict[str, Any]) -> str:
    from bitsmith.engine.pipeline.loading import source_identity

    ident = [cfg.fingerprint(), source_identity(str(params["model"])), source_identity(str(params["data"])),
             str(params.get("eval_data") or ""), str(params.get("heldout", DEFAULT_HELDOUT)),
             str(params.get("on_bad_line"))]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]


def _save_ckpt(trainer: Trainer, folder: Path, fingerprint: str) -> None:
    meta = {"fingerprint": fingerprint, "step": trainer.step, "history": trainer.history_dict(),
            "config": trainer.config.__dict__}
    save_checkpoint(folder, trainer.state_tensors(), meta)


def _describe_step(r: StepResult, total: int, mem: dict[str, float]) -> str:
    rate = r.tokens / max(r.seconds, 1e-9)
    mem_txt = ", ".join(f"{k.replace('_gib', '')} {v:.2f} GiB" for k, v in mem.items())
    moved = f"  codes moved {r.moved * 100:.3f}%" if r.moved is not None else ""
    return f"step {r.step}/{total}  loss {r.loss:.4f}  lr×{r.lr_factor:.2f}  {rate:.0f} tok/s  {mem_txt}{moved}"


def _train(ctx: JobContext, trainer: Trainer, ckpt: Path, fingerprint: str) -> None:
    cfg = trainer.config
    every = max(1, cfg.steps // LOG_LINES)
    ctx.stage("train", total=cfg.steps, done=trainer.step)
    while trainer.step < cfg.steps:
        if ctx.cancelled:
            _save_ckpt(trainer, ckpt, fingerprint)
            ctx.check_cancel()
        r = trainer.train_step()
        ctx.progress(trainer.step, cfg.steps)
        if trainer.step % every == 0 or trainer.step in (1, cfg.steps):
            mem = memory_now(trainer.device)
            ctx.log(_describe_step(r, cfg.steps, mem))
            ctx.metric("train_loss", r.loss, step=r.step, tokens_per_s=round(r.tokens / max(r.seconds, 1e-9), 1),
                       lr_factor=round(r.lr_factor, 4), codes_moved=r.moved,
                       **{k: round(v, 3) for k, v in mem.items()})
        if cfg.eval_every and trainer.step % cfg.eval_every == 0 and trainer.step < cfg.steps and trainer.heldout:
            h = trainer.evaluate()
            trainer.history.heldout.append((trainer.step, h))
            ctx.metric("heldout_loss", h, step=trainer.step)
        if cfg.save_every and trainer.step % cfg.save_every == 0 and trainer.step < cfg.steps:
            _save_ckpt(trainer, ckpt, fingerprint)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" and not isinstance(
        exc, OutOfMemoryError)


def run_finetune(ctx: JobContext, params: dict[str, Any]) -> Path:
    """The whole job; returns the output folder. Parameters: see `bitsmith finetune --help`."""
    from bitsmith.engine.quant.store import model_bpw, save_quantized

    started = time.perf_counter()
    source = _get(params, "model", str, required=True)
    _get(params, "data", str, required=True)
    out = Path(_get(params, "out", str, required=True)).expanduser().resolve()
    if out.exists() and not (out / "bitsmith.json").is_file() and any(out.iterdir()):
        raise BadInputError(f"{out} exists and is not a Bitsmith model folder", "choose a new or empty output path")
    if out == Path(source).expanduser().resolve():
        raise BadInputError("the output folder is the model being fine-tuned", "choose another --out")
    cfg = config_from_params(params)
    device = _device(params)
    if params.get("threads"):
        torch.set_num_threads(int(params["threads"]))
    torch.manual_seed(cfg.seed)

    saved = _load(ctx, source, device)
    model, tok = saved.model, saved.tokenizer
    bpw_before = model_bpw(model)
    ctx.log(f"loaded {source}: {bpw_before['quantized_weights'] / 1e6:.1f} M quantized weights at "
            f"{bpw_before['quantized_linears']:.3f} bpw, on {device}")
    plan, held, facts = _data(ctx, params, tok, cfg)

    trainer = Trainer(model, cfg, plan, held, device)
    state_note = (f"; codes: {trainer.code_opt.bytes_per_weight:g} bytes of optimizer state per weight"
                  if trainer.code_opt is not None else "")
    matmuls = str(trainer.compute_dtype or model.dtype).removeprefix("torch.")
    ctx.log(f"{cfg.method}: {trainer.trainable_parameters() / 1e6:.2f} M float parameters trained by Adam"
            f"{state_note}; gradient checkpointing {'on' if trainer.checkpointing else 'off'}; "
            f"training matmuls in {matmuls}")
    partial = out.with_name(f".{out.name}.partial")
    ckpt = partial / "checkpoint"
    fingerprint = _fingerprint(cfg, params)
    if params.get("fresh"):
        shutil.rmtree(partial, ignore_errors=True)
    found = load_checkpoint(ckpt)
    if found is not None:
        tensors, meta = found
        if meta.get("fingerprint") != fingerprint:
            raise BadInputError(
                f"{ckpt} holds a checkpoint of a different run (other model, data or settings)",
                "fine-tune into another --out, or pass --fresh to discard that checkpoint",
            )
        trainer.load_state(tensors, int(meta["step"]), meta.get("history", {}))
        ctx.log(f"resuming from the checkpoint at step {trainer.step}")

    if trainer.history.heldout_before is None and held:
        ctx.stage("evaluate", total=1)
        trainer.history.heldout_before = trainer.evaluate()
        ctx.progress(1)
    if trainer.history.heldout_before is not None:
        ctx.metric("heldout_loss", trainer.history.heldout_before, step=0)

    diverged: NonFiniteError | None = None
    try:
        _train(ctx, trainer, ckpt, fingerprint)
    except NonFiniteError as exc:
        diverged = exc
        ctx.log(f"{exc}; keeping the last good state (after step {trainer.step})", level="error")
    except CancelledError:
        raise
    except BaseException as exc:
        if not _is_oom(exc):
            raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        from .advice import oom_advice

        hint = oom_advice(model.config.to_dict(), bpw_before["quantized_linears"] or 4.0, cfg.seq_len,
                          cfg.batch_size)
        resume = f" (the checkpoint at step {_last_saved(ckpt)} is kept)" if _last_saved(ckpt) else ""
        raise OutOfMemoryError(f"out of memory while fine-tuning at --seq-len {cfg.seq_len}{resume}", hint) from exc

    ctx.stage("save", total=2)
    result = _finish(ctx, trainer, cfg)
    ctx.progress(1)
    model = trainer.model
    bpw_after = model_bpw(model)
    if not math.isclose(bpw_after["quantized_linears"], bpw_before["quantized_linears"], rel_tol=1e-12):
        raise RuntimeError(f"bpw changed from {bpw_before['quantized_linears']} to {bpw_after['quantized_linears']}")
    h = trainer.history
    tail = [loss for _, loss in h.train[-max(1, min(50, cfg.steps // 10)):]]
    metrics = {
        "method": cfg.method, "steps": trainer.step, "train_loss": sum(tail) / len(tail) if tail else None,
        "train_loss_first": h.train[0][1] if h.train else None, "heldout_loss_before": h.heldout_before,
        **result, "tokens": h.tokens, "train_seconds": round(h.seconds, 1),
        "tokens_per_s": round(h.tokens / h.seconds, 1) if h.seconds else None,
        "curve_train": h.train, "curve_heldout": h.heldout, "data": facts, "device": str(device),
        "peak_memory": memory_now(trainer.device),
    }
    if diverged is not None:
        metrics["stopped"] = str(diverged)
    meta = saved.meta
    recipe = {**meta.get("recipe", {}), "finetune": {**cfg.__dict__, "data": str(params["data"]),
                                                      "eval_data": params.get("eval_data")}}
    all_metrics = {**meta.get("metrics", {}), "finetune": metrics}
    save_quantized(model, tok, out, source={**meta.get("source", {}), "finetuned_from": str(source)},
                   recipe=recipe, metrics=all_metrics)
    shutil.rmtree(partial, ignore_errors=True)
    ctx.progress(2)
    ctx.artifact("model", out, bpw=bpw_after["quantized_linears"])
    if diverged is not None:
        raise NonFiniteError(diverged.step, diverged.what, cfg.lr) from None
    summary = {k: v for k, v in metrics.items() if not k.startswith("curve_") and k not in ("data",)}
    summary["seconds"] = round(time.perf_counter() - started, 1)
    ctx.emit({"event": "result", "out": str(out), "bpw": bpw_after["quantized_linears"], **summary})
    return out


def _last_saved(ckpt: Path) -> int | None:
    try:
        return int(json.loads((ckpt / "trainer.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return None


def _finish(ctx: JobContext, trainer: Trainer, cfg: TrainConfig) -> dict[str, Any]:
    """Turn the trained model into plain QuantLinears and measure it as it will be saved."""
    from bitsmith.engine.quant.store import round_kept_

    out: dict[str, Any] = {}
    if cfg.method == "lora" and trainer.heldout:
        out["heldout_loss_after_unmerged"] = trainer.evaluate()
        ctx.metric("heldout_loss", out["heldout_loss_after_unmerged"], step=trainer.step, merged=False)
    round_kept_(trainer.finish(merge=True))  # as it will be stored: 16-bit norms
    after = trainer.evaluate()
    out["heldout_loss_after"] = after
    if after is not None:
        ctx.metric("heldout_loss", after, step=trainer.step, final=True)
    return out


@job("finetune")
def finetune_job(ctx: JobContext, params: dict[str, Any]) -> None:
    """Worker entry point for `finetune`."""
    run_finetune(ctx, params)
