"""The `quantize` job: source model → measure → search → calibrate → evaluate → save.

Every expensive result is kept so that nothing is paid twice: the sensitivity measurement and the
full-precision perplexity are cached per model and data; calibration checkpoints after every block
in `<out>/../.<name>.partial`, so running the same command again resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from bitsmith.engine.data import load_text, token_windows
from bitsmith.engine.errors import BadInputError
from bitsmith.engine.eval.perplexity import perplexity
from bitsmith.engine.jobs import JobContext, job
from bitsmith.engine.memory import release_free_memory
from bitsmith.engine.model import _cache_root, load_model
from bitsmith.engine.pipeline.loading import source_identity
from bitsmith.engine.pipeline.presets import Preset, get_preset
from bitsmith.engine.quant.mix import MODES, format_label
from bitsmith.engine.quant.store import model_bpw, round_kept_, save_quantized
from bitsmith.engine.search.calibration_gain import gain_for, history_path, record_run
from bitsmith.engine.search.channel_mix import channel_mix_choices, mixed_layers, plan_layout, search_channel_mix
from bitsmith.engine.search.layout import feasible_range, quality_curve, search_layout
from bitsmith.engine.search.measure import Measurement, cache_key, load_cached, measure_model, save_cached
from bitsmith.engine.search.measure_stream import measure_streamed
from bitsmith.engine.stream_forward import streamed_perplexity


def _param(params: dict[str, Any], name: str, kind: type, default: Any = None) -> Any:
    """A typed request parameter, or BadInputError naming it."""
    value = params.get(name, default)
    if value is None:
        raise BadInputError(f"the quantize request lacks {name!r}", f"pass --{name.replace('_', '-')}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise BadInputError(f"{name} must be a {kind.__name__}, got {value!r}") from None


def candidate_formats(value: str | list[str]) -> tuple[str, ...]:
    """The layout search's candidate formats from 'a,b' or a list; BadInputError for an unknown or unpackable one."""
    from bitsmith.engine.quant.spec import parse_spec

    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    if len(names) < 1:
        raise BadInputError("no candidate format given", "pass e.g. --formats int4_g128,int2_g64")
    out = []
    for name in names:
        try:
            spec = parse_spec(name)
        except ValueError as exc:
            raise BadInputError(f"unknown format {name!r}: {exc}",
                                "formats look like int4_g128, int2_g64_dq8") from None
        if not spec.packable:
            raise BadInputError(f"{name}: {spec.bits}-bit codes cannot be stored", "use 2-, 3-, 4- or 8-bit formats")
        out.append(spec.name)
    return tuple(dict.fromkeys(out))


def eval_tokens(tokenizer: Any, source: str, limit: int) -> torch.Tensor:
    """Held-out tokens for perplexity: the text source tokenized, the first `limit` tokens (0: all)."""
    ids = tokenizer(load_text(source))["input_ids"]
    return torch.tensor(ids[:limit] if limit else ids)


def _cached_json(path: Path, compute: Any) -> Any:
    """Read a cached JSON value, or compute it and write it atomically."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        value = compute()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(value))
        os.replace(tmp, path)
        return value


def run_quantize(ctx: JobContext, params: dict[str, Any]) -> Path:
    """The whole pipeline; returns the output folder. Parameters: see `bitsmith quantize --help`."""
    source = _param(params, "source", str)
    bpw = _param(params, "bpw", float)
    out = Path(_param(params, "out", str)).expanduser().resolve()
    preset: Preset = get_preset(_param(params, "preset", str, "default"))
    if params.get("formats"):
        preset = dataclasses.replace(preset, formats=candidate_formats(params["formats"]))
    if params.get("distill_epochs") is not None:
        preset = dataclasses.replace(preset, distill_epochs=_param(params, "distill_epochs", int))
    distill_settings(preset)  # a bad setting is an error now, not after calibration
    calib_source = _param(params, "calib", str, "stdlib")
    eval_source = _param(params, "eval_text", str, "stdlib:heldout")
    seed = _param(params, "seed", int, 0)
    mode = _param(params, "mode", str, MODES[0])
    if mode not in MODES:
        raise BadInputError(f"unknown layout mode {mode!r}", f"choose one of: {', '.join(MODES)}")
    if not 2.0 <= bpw <= 16.0:
        raise BadInputError(f"a budget of {bpw} bpw is outside [2, 16]", "choose a budget such as 2.5, 3.0 or 4.0")
    if out.exists() and not (out / "bitsmith.json").is_file() and any(out.iterdir()):
        raise BadInputError(f"{out} exists and is not a Bitsmith model folder", "choose a new or empty output path")
    partial = out.with_name(f".{out.name}.partial")
    torch.manual_seed(seed)
    started = time.perf_counter()
    model_id = source_identity(source)
    cache = _cache_root()

    ctx.stage("load", total=1)
    remote = bool(params.get("trust_remote_code"))
    streamed = _open_streamed(ctx, source, params.get("stream"), remote, len(preset.formats))
    if streamed is not None:  # blocks stay in the files until a stage needs one (engine/model_stream.py)
        model, tok = streamed.model, streamed.tokenizer
    else:
        model, tok = load_model(source, dtype=torch.float32, trust_remote_code=remote)
        round_kept_(model)  # the reference is the model as it will be stored: 16-bit
    ctx.progress(1)
    ctx.log(f"loaded {source}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")

    calib_ids = tok(load_text(calib_source))["input_ids"]
    windows = token_windows(calib_ids, preset.measure_samples, preset.measure_seq_len, seed=seed)
    held = eval_tokens(tok, eval_source, preset.eval_tokens)

    ctx.stage("evaluate-fp", total=1)
    fp_key = cache_key(model_id, ["fp"], f"ppl-{preset.eval_window}", [held.tolist()])
    fp = _cached_json(cache / "eval" / f"{fp_key}.json", lambda: _fp_perplexity(ctx, model, streamed, held, preset))
    ctx.progress(1)
    ctx.metric("ppl", fp["ppl"], split="heldout", model="full-precision", tokens=fp["tokens"])

    ctx.stage("measure", total=None)
    mkey = cache_key(model_id, preset.formats, preset.measure_method, windows)
    mpath = cache / "measure" / f"{mkey}.json"
    measurement = load_cached(mpath)
    if measurement is not None and mode == "channel-mix" and not measurement.unit:
        measurement = None  # cached without per-channel errors (an older cache): measure again, with them
    if measurement is None:
        measure, target = (measure_model, model) if streamed is None else (measure_streamed, streamed)
        measurement = measure(
            target, windows, preset.formats, preset.measure_method,
            on_progress=lambda stage, done, total: ctx.progress(done, total, stage=f"measure-{stage}"),
            check_cancel=ctx.check_cancel,
        )
        save_cached(mpath, measurement)
        ctx.log(f"measured {len(measurement.layers)} layers in {measurement.seconds:.0f} s (cached)")
    else:
        ctx.log(f"using the cached measurement {mpath.name}")

    ctx.stage("search", total=1)
    runs_path = history_path(mpath)
    layout = _search(ctx, measurement, bpw, fp["nll"], gain_for(runs_path, preset.name), mode)
    ctx.progress(1)
    partial.mkdir(parents=True, exist_ok=True)
    (partial / "layout.json").write_text(json.dumps(layout.formats, indent=1))
    plan = plan_layout(measurement, layout.formats) if mode == "channel-mix" else layout.formats

    teacher = _teacher(ctx, model, calib_ids, preset, partial, seed, streamed)

    ctx.stage("calibrate", total=None)
    summary = _calibrate(ctx, model, tok, calib_ids, plan, preset, partial, seed, streamed)
    if teacher is not None:
        summary = {**summary, "distill": _distill(ctx, model, teacher, preset)}

    ctx.stage("evaluate", total=1)
    q = perplexity(model, held, preset.eval_window).to_dict()
    ctx.progress(1)
    ctx.metric("ppl", q["ppl"], split="heldout", model="quantized", tokens=q["tokens"])
    ctx.metric("ppl_ratio", q["ppl"] / fp["ppl"], split="heldout")
    record_run(runs_path, preset.name, layout.bpw, layout.predicted_error, math.log(q["ppl"]) - fp["nll"])

    ctx.stage("save", total=1)
    metrics = {
        "heldout_ppl_fp": fp["ppl"], "heldout_ppl": q["ppl"], "eval_tokens": int(held.numel()),
        "scored_tokens": q["tokens"],
        "eval_window": q["window"], "eval_text": eval_source,
        "predicted_ppl": math.exp(fp["nll"] + layout.predicted_error),
        "seconds": round(time.perf_counter() - started, 1),
    }
    recipe = {
        "budget_bpw": bpw, "preset": preset.to_dict(), "calib_text": calib_source, "seed": seed, "mode": mode,
        "measure_signal": measurement.signal, "calibration": summary,
    }
    save_quantized(model, tok, out, source={"model": source, "identity": model_id}, recipe=recipe, metrics=metrics)
    shutil.rmtree(partial, ignore_errors=True)
    ctx.progress(1)
    achieved = model_bpw(model)["quantized_linears"]
    ctx.metric("bpw", achieved, scope="quantized_linears")
    ctx.artifact("model", out, bpw=achieved, ppl=q["ppl"])
    ctx.emit({
        "event": "result", "out": str(out), "bpw": achieved, "ppl_fp": fp["ppl"], "ppl": q["ppl"],
        "seconds": metrics["seconds"],
    })
    return out


def _search(ctx: JobContext, measurement: Measurement, bpw: float, fp_nll: float, gain: Any = None,
            mode: str = "layer-mix"):
    """The layout for the budget, with the predicted quality curve reported for plotting: round-to-nearest's
    predicted error, scaled by what calibration achieved in earlier runs of this measurement when there are any.
    In channel-mix mode each layer may also split its input channels between two formats
    (engine/search/channel_mix.py)."""
    choices = measurement.choices() if mode == "layer-mix" else _mix_choices(ctx, measurement)
    low, high = feasible_range(choices)
    if bpw < low:
        raise BadInputError(
            f"a budget of {bpw} bpw is below the smallest layout this model allows ({low:.3f} bpw: every layer "
            "in its cheapest format)",
            f"choose at least {low:.2f} bpw",
        )
    if bpw > high:
        ctx.log(f"the budget {bpw} bpw is above the largest layout ({high:.3f} bpw): every layer gets its largest "
                "format")
    layout = search_layout(choices, bpw) if mode == "layer-mix" else search_channel_mix(measurement, bpw,
                                                                                        choices=choices)
    scale = gain.ratio if gain is not None else 1.0
    basis = gain.describe() if gain is not None else "before calibration (round-to-nearest), from the measurement"
    curve = [(b, math.exp(fp_nll + scale * e)) for b, e in quality_curve(choices, points=21)]
    ctx.metric("predicted_ppl_curve", curve, basis=basis)
    ctx.metric("predicted_ppl", math.exp(fp_nll + scale * layout.predicted_error), bpw=layout.bpw, basis=basis)
    if gain is not None:
        ctx.log(f"predicted quality {basis}")
    counts: dict[str, int] = {}
    for fmt in layout.formats.values():
        counts[format_label(fmt)] = counts.get(format_label(fmt), 0) + 1
    ctx.log(f"layout at {layout.bpw:.3f} bpw: " + ", ".join(f"{n} × {f}" for f, n in sorted(counts.items())))
    if mode == "channel-mix":
        ctx.log(f"channel-mix: {len(mixed_layers(layout.formats))} of {len(layout.formats)} layers split their input "
                "channels between two formats (permutations stored; calibrated part by part)")
    return layout


def _mix_choices(ctx: JobContext, measurement: Measurement) -> list:
    """The channel-mix search problem; a measurement without per-channel errors offers the pure formats only."""
    if not measurement.unit:
        ctx.log("this measurement has no per-channel errors: channel-mix adds no options, the layout is a "
                "layer-mix", level="warning")
    return channel_mix_choices(measurement)


def calibration_settings(preset: Preset, device: str):
    """The CalibConfig a preset calibrates with on `device` ("cpu" applies the preset's CPU overrides)."""
    from bitsmith.engine.calibrate import CalibConfig

    overrides = dict(preset.cpu_calib_overrides) if device == "cpu" else {}
    return CalibConfig.preset(preset.calib_preset, device=device, **overrides)


def calibration_samples(calib_ids: list[int], config: Any, seed: int) -> list[list[int]]:
    """The token windows calibration trains on (benchmarks feed peers the very same ones)."""
    return token_windows(calib_ids, config.samples, config.seq_len, seed=seed + 1)


def _open_streamed(ctx: JobContext, source: str, stream: Any, trust_remote_code: bool, formats: int) -> Any:
    """A StreamedModel when `stream` is true, or when it is unset and the model loaded whole would not fit in RAM;
    else None (the model is then loaded whole, as always)."""
    from bitsmith.engine.model_stream import choose_streaming, open_streamed

    requested = None if stream in (None, "auto") else bool(stream)
    on, why = choose_streaming(source, requested, trust_remote_code, formats)
    if not on:
        return None
    ctx.log(f"streaming the model block by block ({why})")
    return open_streamed(source, dtype=torch.float32, trust_remote_code=trust_remote_code)


def _fp_perplexity(ctx: JobContext, model: Any, streamed: Any, held: torch.Tensor, preset: Preset) -> dict:
    """The full-precision held-out perplexity, block-streamed when the model is."""
    if streamed is not None:
        return streamed_perplexity(streamed, held, preset.eval_window, check_cancel=ctx.check_cancel).to_dict()
    return perplexity(model, held, preset.eval_window).to_dict()


def _calibrate(ctx, model, tok, calib_ids, formats, preset: Preset, partial: Path, seed: int, streamed=None) -> dict:
    """Block-wise calibration of the layout, resumable from `partial`; a streamed model's blocks are read one
    at a time and stay, quantized, in the model."""
    from bitsmith.engine.calibrate import calibrate_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = calibration_settings(preset, device)
    windows = calibration_samples(calib_ids, config, seed)
    result = calibrate_model(
        model, windows, formats, config,
        checkpoint_dir=partial / "calibrate",
        on_progress=lambda stage, done, total: ctx.progress(done, total, stage=stage),
        check_cancel=ctx.check_cancel,
        materialise=None if streamed is None else (lambda i: streamed.materialise(i, keep=True)),
    )
    if streamed is not None and not streamed.is_complete():
        raise RuntimeError("streamed calibration left weights unread")  # every block is visited: a bug if reached
    return result if isinstance(result, dict) else getattr(result, "to_dict", lambda: {})()


def distill_settings(preset: Preset):
    """The DistillConfig of a preset (its epochs; the other settings are DistillConfig's defaults)."""
    from bitsmith.engine.calibrate.e2e import DistillConfig

    return DistillConfig(epochs=preset.distill_epochs)


def _teacher(ctx: JobContext, model: Any, calib_ids: list[int], preset: Preset, partial: Path, seed: int,
             streamed: Any = None) -> Any:
    """The full-precision model's top-k distribution on the distillation windows (None when the preset does not
    distil), computed before calibration changes the model and kept in `partial` for a resumed run."""
    if preset.distill_epochs < 1:
        return None
    from bitsmith.engine.calibrate.e2e import load_teacher, model_logit_rows, save_teacher, teacher_targets
    from bitsmith.engine.stream_forward import window_logits

    config = distill_settings(preset)
    ids = torch.tensor(token_windows(calib_ids, preset.distill_samples + config.val_samples, preset.distill_seq_len,
                                     seed=seed + 2))
    path = partial / "teacher.safetensors"
    teacher = load_teacher(path, ids, config.top_k)
    if teacher is not None:
        ctx.log(f"using the teacher distribution saved in {path.name}")
        return teacher
    ctx.stage("teacher", total=ids.shape[0])
    logit_rows = model_logit_rows(model, ids) if streamed is None else window_logits(
        streamed, ids, check_cancel=ctx.check_cancel)

    def rows():
        done = 0  # not enumerate: its cached result tuple would hold each window's logits through the next forward
        for logits in logit_rows:
            yield logits
            del logits
            # a window's logits (and their temporaries) are served from the heap an earlier stage freed and land
            # at shifting places in it: without handing the pages back, the stage grew by a window's logits every
            # few windows (SmolLM2, 36 windows: +1.3 GB; docs/benchmarks/plan.md)
            release_free_memory()
            done += 1
            ctx.progress(done, ids.shape[0])

    teacher = teacher_targets(ids, rows(), config.top_k, check_cancel=ctx.check_cancel)
    save_teacher(path, teacher)
    return teacher


def _distill(ctx: JobContext, model: Any, teacher: Any, preset: Preset) -> dict:
    """End-to-end distillation of the calibrated model (engine/calibrate/e2e.py); its report for the recipe."""
    from bitsmith.engine.calibrate.e2e import distill

    config = distill_settings(preset)
    release_free_memory()  # calibration's freed heap, fragmented by its tuning steps: training starts clean
    ctx.stage("distill", total=None)
    report = distill(model, teacher, config, on_progress=lambda done, total: ctx.progress(done, total),
                     check_cancel=ctx.check_cancel, log=ctx.log)
    if report.kept:
        ctx.log(f"distillation: held-out loss {report.val_before:.4f} → {report.val_after:.4f} in {report.steps} steps")
    return {**config.to_dict(), **report.to_dict()}


@job("quantize")
def quantize_job(ctx: JobContext, params: dict[str, Any]) -> None:
    """Worker entry point for `quantize`."""
    run_quantize(ctx, params)
