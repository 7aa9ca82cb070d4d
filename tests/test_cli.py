"""The console command answers --version and --help without importing torch."""

import subprocess
import sys

from bitsmith.engine import __version__


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bitsmith.engine", *args], capture_output=True, text=True)


def test_version() -> None:
    out = _run("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"bitsmith {__version__}"


def test_help_is_light() -> None:
    code = "import sys; from bitsmith.engine.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    assert "usage: bitsmith" in _run("--help").stdout
