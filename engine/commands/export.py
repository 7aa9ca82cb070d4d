"""`bitsmith export QMODEL --gguf OUT.gguf [--mode exact|compact]`: a GGUF file llama.cpp can run."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `bitsmith export`."""
    p = subparsers.add_parser(
        "export",
        help="write a model as a GGUF file for llama.cpp (exact Q4_1, or compact Q2_K for INT2 layers)",
        description="Write a Bitsmith model (or a Llama/Qwen2/Qwen3/Gemma HF model) as GGUF. exact: quantized "
        "layers keep their codes (Q4_1; exact up to fp16 rounding of the offsets). compact: INT2 layers are "
        "re-fitted into Q2_K where their rows are a multiple of 256 long.",
    )
    p.add_argument("model", help="a Bitsmith folder (or an HF folder, .gguf file, Hub id or 'bundled')")
    p.add_argument("--gguf", required=True, metavar="OUT.gguf", help="the GGUF file to write (atomically)")
    p.add_argument("--mode", choices=("exact", "compact"), default="exact", help="how INT2 layers are stored")
    p.add_argument("--json", action="store_true", help="print the job's events as JSON lines (last: the report)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from bitsmith.engine.progress import run_job_cli

    params = {"model": args.model, "out": args.gguf, "mode": args.mode}
    return run_job_cli("export", params, json_mode=args.json, result_last=True)
