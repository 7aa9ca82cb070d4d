"""A hard interruption (the process killed mid-download, as a power cut or a closed window would) leaves a state
that the next run repairs. The real bootstrap runs as its own process; uv and the environment's python are
stand-ins, so nothing is downloaded and no torch is imported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="bash stand-ins")

FAKE_UV = r"""#!/bin/bash
# uv stand-in: `venv ... ENV` makes ENV/bin/python (a python stand-in); `pip install ... torch*` hangs while
# $HANG exists (to be killed there); everything else succeeds. Each call is logged.
echo "$*" >> "$CALLS"
if [ "$1" = venv ]; then
  env="${@: -1}"; mkdir -p "$env/bin"
  cat > "$env/bin/python" <<'PY'
#!/bin/bash
case "$*" in
  *_probe*) echo '@PROBE@' ;;
  *importlib.metadata*) echo "2.13.0+cpu" ;;
esac
PY
  chmod +x "$env/bin/python"; exit 0
fi
case "${@: -1}" in torch*) while [ -e "$HANG" ]; do sleep 0.2; done ;; esac
exit 0
"""
PROBE = {"bitsmith": "0.1.0", "torch": "2.13.0+cpu", "torch_cuda": None, "cuda_available": False, "triton": "skipped",
         "llama_cpp": "missing"}


def test_killed_during_the_pytorch_download_then_run_again(tmp_path) -> None:
    uv = tmp_path / "uv"
    uv.write_text(FAKE_UV.replace("@PROBE@", json.dumps(PROBE)))
    uv.chmod(0o755)
    hang = tmp_path / "hang"
    hang.write_text("")
    calls = tmp_path / "calls.txt"
    root = tmp_path / "Zoë" / "Bitsmith"
    app = root / "app"
    env = {**os.environ, "CALLS": str(calls), "HANG": str(hang)}
    cmd = [sys.executable, str(REPO / "installers/bootstrap.py"), "install", "--root", str(root), "--uv", str(uv),
           "--python", sys.executable, "--offline", "--build", "cpu", "--without-llama-cpp"]

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if json.loads((app / "install-incomplete.json").read_text()).get("step") == "torch":
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("the install never reached the PyTorch step: " + proc.communicate()[0].decode(errors="replace"))
    os.killpg(proc.pid, signal.SIGKILL)  # the bootstrap and the "download" with it: no handler runs
    proc.wait(timeout=60)
    assert json.loads((app / "install-incomplete.json").read_text())["step"] == "torch"
    assert not (app / "install.json").exists()

    hang.unlink()
    calls.unlink()
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "stopped before it finished (during: torch)" in again.stdout and "Everything works." in again.stdout
    assert calls.read_text().splitlines()[0].startswith("venv ")  # the half-made environment is rebuilt
    assert json.loads((app / "install.json").read_text())["build"] == "cpu"
    assert not (app / "install-incomplete.json").exists() and not list(app.glob("env.old-*"))
