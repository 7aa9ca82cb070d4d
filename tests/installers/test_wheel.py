"""The wheel the installers carry holds exactly the source tree's modules, never stale copies from build/."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FOLDERS = {"app": "app", "engine": "engine", "kernels": "kernels", "resources": "resources"}


@pytest.mark.slow
def test_wheel_has_no_module_that_left_the_source_tree(tmp_path) -> None:
    # What an earlier build leaves behind after a module was renamed (engine/commands/import_gptq.py once was).
    stale = REPO / "build" / "lib" / "bitsmith" / "engine" / "commands" / "zz_removed_since_last_build.py"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("def register(sub):\n    sub.add_parser('import')\n")
    try:
        done = subprocess.run(["bash", str(REPO / "installers/build_wheel.sh"), str(tmp_path)], capture_output=True,
                              text=True, timeout=600)
    finally:
        stale.unlink(missing_ok=True)
    assert done.returncode == 0, done.stderr
    wheel = Path(done.stdout.strip().splitlines()[-1])
    with zipfile.ZipFile(wheel) as zf:
        modules = [n for n in zf.namelist() if n.startswith("bitsmith/") and n.endswith(".py")]
    assert "bitsmith/engine/cli.py" in modules
    for name in modules:
        folder, rest = name.split("/", 2)[1:]
        assert (REPO / FOLDERS[folder] / rest).is_file(), f"{name} is in the wheel but not in the source tree"
