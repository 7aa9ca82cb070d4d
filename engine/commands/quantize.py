"""`bitsmith quantize SOURCE --bpw B --out DIR`: the quantization pipeline as a job with a progress bar."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `bitsmith quantize`."""
    p = subparsers.add_parser(
        "quantize",
        help="compress a model to a mixed low-bit layout under a bits-per-weight budget",
        description="Measure each layer's sensitivity, choose INT4/INT2 per layer under the budget, "
        "calibrate block by block, evaluate and save. Run it again on the same --out to resume.",
    )
    p.add_argument("source", help="Hub id, HF folder, .gguf file, or 'bundled' (SmolLM2-135M-Instruct)")
    p.add_argument("--bpw", type=float, required=True, help="bits-per-weight budget of the quantized layers")
    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.add_argument("--calib", default="stdlib", help="calibration text: a .txt/.jsonl/.parquet file or 'stdlib'")
    p.add_argument("--eval-text", default="stdlib:heldout", help="held-out text for perplexity")
    p.add_argument("--preset", default="default", choices=("demo", "default", "best"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--formats", default=None, help="comma-separated candidate formats for the layout search "
                   "(default: the preset's), e.g. int4_g128_dq8,int3_g128_dq8,int2_g64_dq8")
    p.add_argument("--mode", default="layer-mix", choices=("layer-mix", "channel-mix"),
                   help="layer-mix: one format per layer; channel-mix: a layer may also split its input channels "
                   "between two formats (a stored permutation; finer use of the budget)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model's own Python code")
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                   help="read the decoder blocks from the safetensors files one at a time instead of loading the "
                   "whole model (default: only when the model loaded whole would not fit in RAM)")
    p.add_argument("--distill-epochs", type=int, default=None, metavar="N",
                   help="epochs of end-to-end distillation from the full-precision model after calibration "
                   "(tunes scales and norms; default: the preset's — 2 for default and best, 0 for demo)")
    p.add_argument("--json", action="store_true", help="print the job's events as JSON lines")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from bitsmith.engine.progress import run_job_cli

    params = {
        "source": args.source, "bpw": args.bpw, "out": args.out, "calib": args.calib,
        "eval_text": args.eval_text, "preset": args.preset, "seed": args.seed,
        "trust_remote_code": args.trust_remote_code, "formats": args.formats, "stream": args.stream,
        "mode": args.mode, "distill_epochs": args.distill_epochs,
    }
    return run_job_cli("quantize", params, json_mode=args.json)
