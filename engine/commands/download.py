"""`bitsmith download`: fetch a model's safetensors, config and tokenizer files from the Hub (resumable)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO


def register(subparsers: Any) -> None:
    """Add the `download` subcommand."""
    p = subparsers.add_parser(
        "download",
        help="download a model from the Hugging Face Hub",
        description="Download the files a model needs (safetensors weights, config, tokenizer, chat template) "
        "into the Bitsmith models folder. Interrupted downloads resume; every file is hash-checked. Gated and "
        "private models use the HF_TOKEN environment variable (or your `hf auth login`).",
    )
    p.add_argument("model", help="Hub model id, e.g. HuggingFaceTB/SmolLM2-135M-Instruct")
    p.add_argument("--revision", help="branch, tag or commit (default: main)")
    p.add_argument("--dir", help="folder to put the model in (default: <models folder>/<owner>--<name>)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="accept pickle weights (*.bin, *.pt) when a model has no safetensors: they can run code")
    p.add_argument("--json", action="store_true", help="print the result as JSON (no progress bar)")
    p.set_defaults(func=run)


class ProgressBar:
    """A one-line progress bar on a stream: redrawn in place on a terminal, a line every few seconds otherwise."""

    def __init__(self, stream: TextIO | None = None, width: int = 28, plain_every_s: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.width, self.plain_every_s = width, plain_every_s
        self.last_plain = 0.0
        self.drawn = False

    def __call__(self, p: Any) -> None:
        frac = p.done / p.total if p.total else 0.0
        filled = int(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        line = (f"[{bar}] {frac * 100:5.1f}%  {p.done / 1e6:,.1f}/{p.total / 1e6:,.1f} MB  "
                f"{p.speed_bps / 1e6:.1f} MB/s  {p.files_done}/{p.files_total} files  {p.file}")
        if self.tty:
            self.stream.write("\r" + line[:150].ljust(150))
            self.drawn = True
        elif time.monotonic() - self.last_plain >= self.plain_every_s or p.done == p.total:
            self.stream.write(line + "\n")
            self.last_plain = time.monotonic()
        self.stream.flush()

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def run(args: argparse.Namespace) -> int:
    """Download, show progress on stderr, print the model folder on stdout."""
    from bitsmith.engine.errors import CancelledError
    from bitsmith.engine.hub import download_model

    bar = None if args.json else ProgressBar()
    try:
        result = download_model(args.model, revision=args.revision, dest=args.dir, allow_pickle=args.allow_pickle,
                                progress=bar)
    except KeyboardInterrupt:
        raise CancelledError(f"download of {args.model} interrupted",
                             hint="what was downloaded is kept; run the same command again to resume") from None
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
        return 0
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if result.source == "local" and result.downloaded_bytes == 0:
        print(f"{result.model_id} is already here (commit {str(result.commit)[:10]})", file=sys.stderr)
    print(result.path)
    return 0
