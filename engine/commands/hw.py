"""`bitsmith hw`: what this machine has (NVIDIA GPUs, Apple silicon, CPU, RAM, disk), as a table or JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    """Add the `hw` subcommand."""
    p = subparsers.add_parser(
        "hw",
        help="show this machine's GPUs, CPU, memory and free disk",
        description="Detect NVIDIA GPUs (through NVML), Apple silicon, the CPU, RAM and the free disk where "
        "models live, and name the device heavy work will run on. Nothing here imports torch.",
    )
    p.add_argument("--json", action="store_true", help="print the hardware profile as JSON")
    p.add_argument("--models-dir", help="folder whose disk to report (default: the Bitsmith models folder)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Detect and print."""
    from bitsmith.engine import hardware

    profile = hardware.detect(models_dir=args.models_dir)
    if args.json:
        print(json.dumps(profile.to_dict(), indent=2))
    else:
        print(hardware.describe(profile))
    return 0
