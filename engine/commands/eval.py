"""`bitsmith eval MODEL --text FILE`: perplexity with a stated window; `--json` ends with a `ppl` object."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `bitsmith eval`."""
    p = subparsers.add_parser("eval", help="perplexity of a model over a text")
    p.add_argument("model", help="Bitsmith folder, HF folder, .gguf file, Hub id or 'bundled'")
    p.add_argument("--text", default="stdlib:heldout", help="a .txt/.jsonl/.parquet file, or 'stdlib:heldout'")
    p.add_argument("--window", type=int, default=512, help="tokens of context per window")
    p.add_argument("--stride", type=int, default=None, help="tokens between windows (default: the window)")
    p.add_argument("--max-tokens", type=int, default=0, help="score at most this many tokens (0: all)")
    p.add_argument("--tasks", default=None, help="zero-shot tasks through lm-eval instead of perplexity, e.g. "
                   "piqa,boolq or 'greenbitai' (needs the lm-eval package and the network); --max-tokens then "
                   "limits the examples per task")
    p.add_argument("--json", action="store_true", help="JSON-line events; the last line holds `ppl` (or `tasks`)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from bitsmith.engine.progress import run_job_cli

    params = {"model": args.model, "text": args.text, "window": args.window, "stride": args.stride,
              "max_tokens": args.max_tokens, "tasks": args.tasks}
    return run_job_cli("eval", params, json_mode=args.json, result_last=True)
