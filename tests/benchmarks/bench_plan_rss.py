"""Exact peak resident memory per stage of a real `quantize` job, next to engine/plan.py's estimate (run by hand).

Runs the quantize job in this process (as `bitsmith quantize` does) with tests/benchmarks/rss_probe.py tracking
the kernel's high-water mark per stage (reset at every stage and sub-stage event: load, evaluate-fp,
measure-*, search, teacher, capture, calibrate, distill, evaluate, save), optionally labelling the calls inside
calibration, measurement and distillation (--probe), and prints one JSON line: per-stage peaks, the planner's figures
for the same settings and the machine's available RAM. `--distill-epochs N` turns on end-to-end distillation (the
teacher and distill stages), `--distill-samples` cuts its windows, `--iters` / `--eval-tokens` cut calibration and
the evaluations (none of the three changes what is held at once, only how long it takes). Run one at a time, each
in its own process, e.g.

    OMP_NUM_THREADS=1 BITSMITH_HOME=$(mktemp -d) /usr/bin/time -v .venv/bin/python \
        tests/benchmarks/bench_plan_rss.py <SmolLM2 folder> --bpw 3.0 --preset demo --no-stream --report r.json

`<SmolLM2 folder>` is the cached safetensors folder of the bundled GGUF (engine.model_stream.checkpoint_folder
("bundled")); any HF folder works (tests/benchmarks/make_random_llama.py builds random-weight ones).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from rss_probe import StageTracker, probe, rss_bytes, write_report  # noqa: E402

BASE = rss_bytes()  # before torch is imported


def trim_heap() -> None:
    """Collect garbage, then hand the C heap's free pages back to the system (glibc only)."""
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def planner_figures(source: str, bpw: float, preset_name: str, stream: bool | None, ram_available: int,
                    distill_epochs: int | None = None) -> dict:
    """engine/plan.py's quantize-stage cpu_gb (and breakdowns) for the settings the job runs with."""
    from bitsmith.engine.hardware import detect
    from bitsmith.engine.modelinfo import ModelInfo
    from bitsmith.engine.plan import plan_model
    from bitsmith.engine.plan_quantize import QuantizeSettings

    hw = dataclasses.replace(detect(), ram_available_bytes=ram_available)
    plan = plan_model(ModelInfo.from_path(source), bpw, hw, source_on_disk=True,
                      quantize=QuantizeSettings.from_preset(preset_name, "cpu", stream, distill_epochs=distill_epochs))
    return {stage: {"cpu_gb": plan.stages[stage].cpu_gb, "breakdown": plan.stages[stage].breakdown}
            for stage in ("measure", "teacher", "calibrate", "distill") if stage in plan.stages}


def add_probes(tracker: StageTracker) -> None:
    """Label the calls that hold memory inside the stages (the engine's code is unchanged: names are rebound)."""
    import bitsmith.engine.calibrate.e2e as e2e
    import bitsmith.engine.calibrate.pipeline as cp
    import bitsmith.engine.calibrate.runner as cr
    import bitsmith.engine.calibrate.signround as sr
    import bitsmith.engine.model_stream as ms
    import bitsmith.engine.pipeline.quantize as pq
    import bitsmith.engine.search.measure_stream as mst
    import bitsmith.engine.stream_forward as sf

    for mod, names in (
        (pq, ("load_model", "_open_streamed", "perplexity", "_fp_perplexity", "measure_model", "measure_streamed",
              "save_quantized", "_search", "eval_tokens", "load_text", "token_windows")),
        (cp, ("capture_block_inputs", "tune_block", "run_block", "quantize_model_rtn", "_calibrate_block",
              "_save_block", "_load_block")),
        (sr, ("_run_stage", "_install", "stream_mse", "make_tuner", "run_block")),
        (cr, ("run_block",)),
        (mst, ("_forward", "_top_gradients", "_backward_block", "capture_block_inputs")),
        (sf, ("run_blocks", "capture_block_inputs")),
        (e2e, ("teacher_targets", "save_teacher", "_stat_snapshot", "wrap_model", "unwrap_model", "chunked_lm_loss")),
    ):
        for name in names:
            if hasattr(mod, name):
                probe(mod, name, tracker, f"{mod.__name__.rsplit('.', 1)[-1]}.{name}")
    probe(ms.StreamedModel, "load_block", tracker, "StreamedModel.load_block")
    for name in ("loss", "val_loss", "_epoch"):
        probe(e2e._Distiller, name, tracker, f"e2e._Distiller.{name}")
    probe(ms, "open_streamed", tracker, "model_stream.open_streamed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("--bpw", type=float, default=3.0)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--probe", action="store_true", help="label calls inside the stages")
    parser.add_argument("--report", default=None, help="write the full report (stages, calls, timeline) here")
    parser.add_argument("--out", default=None)
    parser.add_argument("--trim", action="store_true", help="at every stage event, collect garbage and return the "
                        "C heap's free memory to the system (glibc malloc_trim) before the stage's peak is tracked: "
                        "a stage's rise is then its own working set, its start what is really live")
    parser.add_argument("--distill-epochs", type=int, default=None, help="end-to-end distillation epochs (the "
                        "preset's when not given)")
    parser.add_argument("--distill-samples", type=int, default=None, help="distillation windows (the preset's)")
    parser.add_argument("--iters", type=int, default=None, help="calibration iterations on the CPU (the preset's)")
    parser.add_argument("--eval-tokens", type=int, default=None, help="evaluation tokens (the preset's)")
    args = parser.parse_args()

    import psutil

    ram_available = int(psutil.virtual_memory().available)
    tracker = StageTracker().start()
    tracker.stage("import")
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from bitsmith.engine.jobs import JobContext
    from bitsmith.engine.pipeline import presets
    from bitsmith.engine.pipeline.quantize import run_quantize

    preset = presets.get_preset(args.preset)
    if args.iters is not None:
        preset = dataclasses.replace(preset, cpu_calib_overrides=tuple(
            {**dict(preset.cpu_calib_overrides), "iters": args.iters}.items()))
    if args.eval_tokens is not None:
        preset = dataclasses.replace(preset, eval_tokens=args.eval_tokens)
    if args.distill_samples is not None:
        preset = dataclasses.replace(preset, distill_samples=args.distill_samples)
    presets.PRESETS[args.preset] = preset  # the planner below reads the same preset
    after_import = rss_bytes()
    if args.probe:
        add_probes(tracker)
    events: list[dict] = []

    def emit(event: dict) -> None:
        if event["event"] == "stage":
            if args.trim:
                trim_heap()
            tracker.stage(event["stage"])
        if event["event"] in ("result", "metric") and event.get("name") != "predicted_ppl_curve":
            events.append(event)

    out = args.out or tempfile.mkdtemp(prefix="bench_plan_rss-") + "/q"
    started = time.perf_counter()
    ctx = JobContext(emit, Path(tempfile.mkdtemp(prefix="bench_plan_job-")))
    run_quantize(ctx, {"source": args.source, "bpw": args.bpw, "out": out, "preset": args.preset,
                       "stream": args.stream, "distill_epochs": args.distill_epochs})
    tracker.stage("end")
    report = tracker.finish()
    peaks = tracker.stage_peaks()
    summary = {
        "source": args.source, "bpw": args.bpw, "preset": args.preset, "stream": args.stream, "trim": args.trim,
        "omp_threads": os.environ.get("OMP_NUM_THREADS"), "torch_threads": torch.get_num_threads(),
        "ram_available": ram_available, "rss_python": BASE, "rss_after_import": after_import,
        "seconds": round(time.perf_counter() - started, 1),
        "stage_peaks_mib": {k: round(v / 2**20, 1) for k, v in peaks.items()},
        "distill_epochs": args.distill_epochs, "distill_samples": preset.distill_samples, "iters": args.iters,
        "eval_tokens": preset.eval_tokens,
        "planner": planner_figures(args.source, args.bpw, args.preset, args.stream, ram_available, args.distill_epochs),
        "events": events,
    }
    if args.report:
        write_report(args.report, {**summary, **report})
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
