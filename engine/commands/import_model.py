"""`bitsmith import CHECKPOINT --out DIR`: a GPTQ checkpoint (AutoGPTQ / GPTQModel) or a GreenBitAI layer-mix
model as a Bitsmith model folder."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `bitsmith import`."""
    p = subparsers.add_parser(
        "import", help="convert a GPTQ or GreenBitAI layer-mix checkpoint folder into a Bitsmith model folder",
        description="GPTQ: layers without act-order come across bit for bit (codes and scales copied); act-order "
        "layers are re-quantized in the same bits and group size. GreenBitAI layer-mix: codes and scales are "
        "copied, zeros become zero-points (integer where exact, else fp16); layers with an input permutation or "
        "channel scale are re-quantized. The report counts each kind and the largest weight error.",
    )
    p.add_argument("source", help="the checkpoint folder: AutoGPTQ / GPTQModel (2, 4 or 8 bits) or GreenBitAI "
                   "layer-mix (config.json, quant_strategy.json, safetensors)")
    p.add_argument("--out", required=True, help="the Bitsmith model folder to write (atomically)")
    p.add_argument("--from", dest="source_format", choices=("auto", "gptq", "greenbit"), default="auto",
                   help="the source's layout (default: detected from its files)")
    p.add_argument("--json", action="store_true", help="print the job's events as JSON lines (last: the report)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from bitsmith.engine.progress import run_job_cli

    params = {"source": args.source, "out": args.out, "format": args.source_format}
    return run_job_cli("import", params, json_mode=args.json, result_last=True)
