"""`bitsmith inspect DIR`: layout, bits per weight per layer and metrics of a Bitsmith model (no torch needed)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `bitsmith inspect`."""
    p = subparsers.add_parser("inspect", help="show a Bitsmith model's layout, bits per weight and metrics")
    p.add_argument("model", help="a Bitsmith model folder")
    p.add_argument("--layers", action="store_true", help="list every quantized layer with its format and bpw")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from bitsmith.engine.errors import BitsmithError
    from bitsmith.engine.model_summary import summarize

    try:
        summary = summarize(Path(args.model))
    except BitsmithError as exc:
        print(f"error: {exc}" + (f"\n  what to do: {exc.hint}" if exc.hint else ""))
        return 2
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{summary['path']}")
    print(f"  source:   {summary['source'] or '?'}")
    print(f"  bpw:      {summary['bpw_quantized']:.3f} over the quantized linears, "
          f"{summary['bpw_all']:.3f} over all weights" if summary["bpw_quantized"] else "  bpw:      ?")
    print(f"  budget:   {summary['budget_bpw'] if summary['budget_bpw'] is not None else '–'} bpw, "
          f"preset {summary['preset'] or '–'}")
    print(f"  layout:   {summary['layout_mode']}: "
          + ", ".join(f"{n} × {f}" for f, n in summary["format_counts"].items()))
    for name, value in summary["metrics"].items():
        print(f"  {name}: {value}")
    if args.layers:
        for row in summary["layers"]:
            fmt = row["format"]
            if row.get("parts"):  # channel-mix: each format with its share of the inputs
                fmt = " + ".join(f"{p['format']} ×{p['share']:.0%}" for p in row["parts"])
            print(f"    {row['name']:<48} {fmt:<18} {row['bpw']:.3f} bpw  {row['shape']}")
    return 0
