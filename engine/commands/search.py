"""`bitsmith search`: find text-generation models on the Hub, with size and a fit verdict for this machine."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: Any) -> None:
    """Add the `search` subcommand."""
    p = subparsers.add_parser(
        "search",
        help="search the Hugging Face Hub for text-generation models",
        description="Search text-generation models on the Hugging Face Hub and show whether each fits this "
        "machine at a given bit budget (judged from config.json and safetensors headers; nothing is downloaded).",
    )
    p.add_argument("query", nargs="?", default=None, help="text in the model id, e.g. 'qwen2.5 instruct'")
    p.add_argument("--author", help="only models from this user or organisation")
    p.add_argument("--min-params", help="smallest parameter count, e.g. 500M or 1.5B")
    p.add_argument("--max-params", help="largest parameter count, e.g. 8B")
    p.add_argument("--library", help="only models of this library, e.g. transformers")
    p.add_argument("--license", help="only models under this license id, e.g. apache-2.0")
    p.add_argument("--sort", choices=["downloads", "likes", "recent", "trending"], default="downloads")
    p.add_argument("--bpw", type=float, default=2.5, help="bit budget for the fit verdict (default 2.5)")
    p.add_argument("--no-fit", action="store_true", help="skip the fit verdict (faster: one request in all)")
    p.add_argument("--limit", type=int, default=20, help="number of results (default 20)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.set_defaults(func=run)


def _count(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _fit(model: Any) -> str:
    """gpu / cpu / 'offload 2.1 GiB' (spilled to RAM) / 'no fit (3.0 GiB short)'; '?' when unknown."""
    if model.fit is None:
        return "?" if model.fit_note else "-"
    verdict, gap = model.fit.verdict, model.fit.gap_gb
    if verdict == "offload" and gap is not None:
        return f"offload {gap:.1f} GiB"
    if verdict == "no_fit":
        return f"no fit ({gap:.1f} GiB short)" if gap is not None and gap > 0 else "no fit"
    return verdict


def render_table(models: list[Any], bpw: float | None) -> str:
    """The results as an aligned text table."""
    head = ["MODEL", "PARAMS", "WEIGHTS", f"FIT@{bpw:g}bpw" if bpw is not None else "FIT", "DOWNLOADS", "LIKES",
            "LICENSE", "UPDATED"]
    rows = [head]
    for m in models:
        rows.append([
            m.id + (" [gated]" if m.gated else ""), _count(m.params), _bytes(m.size_bytes), _fit(m),
            _count(m.downloads), _count(m.likes), m.license or "-",
            m.last_modified.strftime("%Y-%m-%d") if m.last_modified else "-",
        ])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    notes = sorted({m.fit_note for m in models if m.fit is None and m.fit_note})
    if notes:
        lines.append("")
        lines += [f"? {n}" for n in notes[:5]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the search and print a table (or JSON)."""
    from huggingface_hub.utils import disable_progress_bars

    from bitsmith.engine.hub import search_models

    disable_progress_bars()  # the fit check's header reads would otherwise draw bars
    bpw = None if args.no_fit else args.bpw
    models = search_models(
        args.query, author=args.author, min_params=args.min_params, max_params=args.max_params,
        library=args.library, license=args.license, sort=args.sort, limit=args.limit, bpw=bpw,
    )
    if args.json:
        print(json.dumps([m.to_dict() for m in models], indent=1))
    elif not models:
        print("no text-generation models match", file=sys.stderr)
    else:
        print(render_table(models, bpw))
    return 0
