"""`bitsmith import CHECKPOINT --out DIR`: a GPTQ checkpoint (AutoGPTQ / GPTQModel) as a Bitsmith model."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `bitsmith import`."""
    p = subparsers.add_parser(
        "import", help="convert a GPTQ checkpoint folder into a Bitsmith model folder",
        description="Layers without act-order come across bit for bit (codes and scales copied); act-order "
        "layers are re-quantized in the same bits and group size, and the report counts them.",
    )
    p.add_argument("source", help="the folder of an AutoGPTQ / GPTQModel checkpoint (2, 4 or 8 bits)")
    p.add_argument("--out", required=True, help="the Bitsmith model folder to write (atomically)")
    p.add_argument("--json", action="store_true", help="print the job's events as JSON lines (last: the report)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from bitsmith.engine.progress import run_job_cli

    return run_job_cli("import", {"source": args.source, "out": args.out}, json_mode=args.json, result_last=True)
