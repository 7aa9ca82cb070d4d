"""The `bitsmith` command line: discovers subcommands in engine/commands and runs one."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from bitsmith import engine
from bitsmith.engine import commands
from bitsmith.engine.errors import BitsmithError


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every subcommand module registered (imports stay light)."""
    parser = argparse.ArgumentParser(
        prog="bitsmith",
        description="Compress, fine-tune and chat with large language models on one consumer GPU.",
    )
    parser.add_argument("--version", action="version", version=f"bitsmith {engine.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run the chosen subcommand, turn known errors into a message and exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except BitsmithError as exc:
        print(f"bitsmith: error: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"  what to do: {exc.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bitsmith: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
