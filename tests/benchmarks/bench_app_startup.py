"""Cold start of the desktop app: wall time from launching the process to the main window shown and usable.

    QT_QPA_PLATFORM=offscreen python tests/benchmarks/bench_app_startup.py [--runs 10]

Each run starts `python -m bitsmith.app --exit-when-shown` in a fresh BITSMITH_HOME; the app prints the wall-clock
time once the window is shown and its event loop is running (hardware detection then runs in a worker).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def one_run(page: str) -> float:
    """Seconds from Popen to the window being shown."""
    env = dict(os.environ, BITSMITH_HOME=tempfile.mkdtemp(prefix="bitsmith-start-"))
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    t0 = time.time()
    out = subprocess.run([sys.executable, "-m", "bitsmith.app", "--exit-when-shown", "--page", page],
                         capture_output=True, text=True, env=env, timeout=120, check=True)
    shown = float(next(line for line in out.stdout.splitlines() if line.startswith("shown_at=")).split("=")[1])
    return shown - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--page", default="chat")
    args = parser.parse_args()
    one_run(args.page)  # warm the OS file cache once, as a second launch would be
    times = [one_run(args.page) for _ in range(args.runs)]
    print(f"cold start to a usable window ({args.page} page), {args.runs} runs: "
          f"median {statistics.median(times):.3f} s, min {min(times):.3f} s, max {max(times):.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
