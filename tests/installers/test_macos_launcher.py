"""The macOS .app's launcher script (taken from installers/macos/build.sh), run on Linux with stand-ins for `open`
and uv. The .app and .dmg themselves need a Mac to build (sips, iconutil, hdiutil) and are not tested here; this
checks only the launcher's decisions: install on the first start, start the app once installed, install again
after an interrupted install or an update of the .app, with the user's folder quoted (it has a space)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="a bash script")

LOGGER = """#!/bin/bash
echo "$(basename "$0") $*" >> "$CALLS"
"""


def launcher_text() -> str:
    """The launcher exactly as build.sh writes it into Bitsmith.app/Contents/MacOS/Bitsmith."""
    build = (REPO / "installers/macos/build.sh").read_text()
    m = re.search(r"<<'LAUNCH'\n(.*?)\nLAUNCH\n", build, re.S)
    assert m, "build.sh no longer writes the launcher with a quoted LAUNCH here-document"
    return m.group(1) + "\n"


class Mac:
    """A home folder, a Bitsmith.app laid out as build.sh makes it, and stand-ins for open and uv."""

    def __init__(self, tmp: Path) -> None:
        self.home = tmp / "home"
        self.calls = tmp / "calls.txt"
        self.bin = tmp / "bin"
        self.bin.mkdir(parents=True)
        (self.bin / "open").write_text(LOGGER)
        (self.bin / "open").chmod(0o755)
        self.root = self.home / "Library" / "Application Support" / "Bitsmith"
        self.app_dir = self.root / "app"
        self.make_app(tmp / "v1", "0.1.0")

    def make_app(self, where: Path, version: str) -> None:
        contents = where / "Bitsmith.app" / "Contents"
        res = contents / "Resources"
        (res / "wheels").mkdir(parents=True)
        (contents / "MacOS").mkdir(parents=True)
        self.launcher = contents / "MacOS" / "Bitsmith"
        self.launcher.write_text(launcher_text())
        self.launcher.chmod(0o755)
        shutil.copy(REPO / "installers/bootstrap.py", res / "bootstrap.py")
        shutil.copy(REPO / "installers/versions.env", res / "versions.env")
        (res / "uv").write_text(LOGGER)
        (res / "uv").chmod(0o755)
        (res / "wheels" / f"bitsmith-{version}-py3-none-any.whl").write_bytes(b"PK")

    def start(self) -> subprocess.CompletedProcess:
        env = {"HOME": str(self.home), "PATH": f"{self.bin}:/usr/bin:/bin", "CALLS": str(self.calls)}
        done = subprocess.run([str(self.launcher)], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done

    def log(self) -> list[str]:
        lines = self.calls.read_text().splitlines() if self.calls.exists() else []
        self.calls.unlink(missing_ok=True)
        return lines

    def finish_install(self, bs, version: str) -> None:
        """What the bootstrap leaves after a successful install: an environment and its record, as it writes it."""
        (self.app_dir / "env" / "bin").mkdir(parents=True, exist_ok=True)
        python = self.app_dir / "env" / "bin" / "python"
        python.write_text(LOGGER)
        python.chmod(0o755)
        record = {"format": bs.STATE_FORMAT, "bitsmith": version, "build": "default"}
        bs.write_json(self.app_dir / "install.json", record)


def test_first_start_installs_in_a_terminal_then_later_starts_open_the_app(bs, tmp_path) -> None:
    mac = Mac(tmp_path)
    mac.start()
    script = mac.app_dir / "first-start.command"
    assert mac.log() == [f"open -a Terminal {script}"]
    assert (mac.app_dir / "wheels" / "bitsmith-0.1.0-py3-none-any.whl").is_file()
    # The script Terminal runs: the same bootstrap, paths quoted ("Application Support" has a space).
    env = {"HOME": str(mac.home), "PATH": f"{mac.bin}:/usr/bin:/bin", "CALLS": str(mac.calls)}
    ran = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    uv = str(mac.app_dir / "uv")
    assert mac.log() == [
        "uv python install 3.12",
        f"uv run --no-project --managed-python --python 3.12 {mac.app_dir}/bootstrap.py install --root {mac.root} "
        f"--uv {uv} --pause --ask",
        f"open -a {mac.launcher.parent.parent.parent / 'Contents' / 'Resources'}/../..",
    ]

    mac.finish_install(bs, "0.1.0")
    mac.start()
    assert mac.log() == ["python -m bitsmith.app"]

    (mac.app_dir / "install-incomplete.json").write_text("{}")  # an install that was interrupted
    mac.start()
    assert mac.log()[0].startswith("open -a Terminal")


def test_an_updated_app_installs_its_new_wheel(bs, tmp_path) -> None:
    """A new .app whose bootstrap did not change must still install its new Bitsmith wheel."""
    mac = Mac(tmp_path)
    mac.start()
    mac.finish_install(bs, "0.1.0")
    mac.log()
    mac.make_app(tmp_path / "v2", "0.2.0")
    mac.start()
    assert mac.log()[0].startswith("open -a Terminal")
    assert [w.name for w in (mac.app_dir / "wheels").iterdir()] == ["bitsmith-0.2.0-py3-none-any.whl"]
    mac.start()  # until the install has finished, every start offers it again
    assert mac.log()[0].startswith("open -a Terminal")
    mac.finish_install(bs, "0.2.0")
    mac.start()
    assert mac.log() == ["python -m bitsmith.app"]
