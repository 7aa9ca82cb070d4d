"""The Windows installer builds on Linux with makensis (warnings are errors) and carries what it must.

Built with zlib instead of the release's solid LZMA to keep CI quick (about 10 s instead of 40 s); the
script is the same. Skipped, with the reason, where makensis is missing (`apt-get install -y nsis`).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("makensis") is None, reason="makensis missing: apt-get install -y nsis"),
]


@pytest.fixture(scope="module")
def installer(tmp_path_factory) -> tuple[Path, Path]:
    """(the built Setup .exe, the uv.exe it was given)."""
    out = tmp_path_factory.mktemp("windist")
    uv_dir = tmp_path_factory.mktemp("uv")
    fetched = subprocess.run([sys.executable, str(REPO / "installers/fetch_uv.py"), "win_amd64", str(uv_dir)],
                             capture_output=True, text=True, timeout=600)
    if fetched.returncode != 0:
        pytest.skip(f"uv.exe could not be fetched from PyPI and is not cached: {fetched.stderr[-400:]}")
    uv_exe = Path(fetched.stdout.strip().splitlines()[-1])
    done = subprocess.run(["bash", str(REPO / "installers/windows/build.sh"), "--out", str(out), "--compressor",
                           "zlib", "--uv-exe", str(uv_exe)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    exe = Path(done.stdout.strip().splitlines()[-1])
    return exe, uv_exe


def test_installer_is_a_per_user_unicode_nsis_exe(installer) -> None:
    exe, uv_exe = installer
    assert exe.name == "Bitsmith-Setup-0.1.0.exe"
    data = exe.read_bytes()
    assert data[:2] == b"MZ"
    assert b'level="asInvoker"' in data  # RequestExecutionLevel user: no UAC prompt, no admin rights
    assert exe.stat().st_size > 0.3 * uv_exe.stat().st_size  # uv.exe is inside (compressed)


@pytest.mark.skipif(shutil.which("7z") is None, reason="7z missing: apt-get install -y p7zip-full")
def test_installer_contents(installer, tmp_path) -> None:
    exe, uv_exe = installer
    listing = subprocess.run(["7z", "l", str(exe)], capture_output=True, text=True, check=True).stdout
    assert "Type = Nsis" in listing and "NSIS-3 Unicode 64-bit" in listing
    names = {line.split()[-1] for line in listing.splitlines() if re.match(r"^(\d{4}-|\s{10,})", line)}
    for name in ("uv.exe", "bootstrap.py", "bitsmith.ico", "wheels/bitsmith-0.1.0-py3-none-any.whl",
                 "uninstall.exe", "$PLUGINSDIR/nsExec.dll", "$PLUGINSDIR/System.dll"):
        assert name in names, (name, listing)
    subprocess.run(["7z", "x", "-y", f"-o{tmp_path}", str(exe), "uv.exe", "bootstrap.py", "bitsmith.ico", "wheels"],
                   capture_output=True, check=True)
    digest = lambda p: hashlib.sha256(Path(p).read_bytes()).hexdigest()  # noqa: E731
    assert digest(tmp_path / "uv.exe") == digest(uv_exe)
    assert digest(tmp_path / "bootstrap.py") == digest(REPO / "installers/bootstrap.py")
    assert digest(tmp_path / "bitsmith.ico") == digest(REPO / "resources/bitsmith.ico")
    wheel = tmp_path / "wheels" / "bitsmith-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        assert "bitsmith/engine/cli.py" in zf.namelist() and "bitsmith/resources/bitsmith.png" in zf.namelist()


def test_script_has_the_promised_behaviour() -> None:
    """The parts of bitsmith.nsi a build cannot check: per-user paths, shortcuts, no console, the data question."""
    nsi = (REPO / "installers/windows/bitsmith.nsi").read_text(encoding="utf-8")
    assert "Unicode true" in nsi and "RequestExecutionLevel user" in nsi
    assert 'InstallDir "$LOCALAPPDATA\\Bitsmith\\app"' in nsi
    assert nsi.count('"$INSTDIR\\env\\Scripts\\pythonw.exe" "-m bitsmith.app"') == 2  # Start menu + desktop
    assert '$DESKTOP\\${APPNAME}.lnk' in nsi and "$SMPROGRAMS\\${APPNAME}" in nsi
    assert "Keep your models and chats?" in nsi and "/SD IDYES" in nsi
    assert "nsExec::ExecToLog" in nsi  # the bootstrap's progress lines stream into the installer window
    # Every path handed to a program is quoted (spaces, non-ASCII user names).
    for line in nsi.splitlines():
        if "ExecToLog" in line or "ExecWait" in line:
            for path in re.findall(r"\$(?:INSTDIR|Root|R2)[^ '\"]*", line):
                assert f'"{path}' in line, line


@pytest.mark.skipif(shutil.which("wine") is None, reason="wine missing (apt-get install wine64 wine): Setup not run")
def test_setup_runs_silently_under_wine_for_a_non_ascii_user(installer, tmp_path) -> None:
    """Setup /S unpacks into %LOCALAPPDATA%\\Bitsmith\\app of a user named "Zoë Müller" and registers itself;
    the silent uninstaller removes the program and keeps the models. (Wine 8 cannot run uv.exe, and this
    machine has no internet, so the environment step fails here; Setup must then stop with an error code.)"""
    exe, _ = installer
    env = {**os.environ, "WINEPREFIX": str(tmp_path / "wine"), "WINEDEBUG": "-all", "USER": "Zoë Müller",
           "WINEDLLOVERRIDES": "winemenubuilder.exe=d;mscoree,mshtml="}
    subprocess.run(["wineboot", "-i"], env=env, capture_output=True, timeout=300)
    local = tmp_path / "wine" / "drive_c" / "users" / "Zoë Müller" / "AppData" / "Local" / "Bitsmith"
    setup = subprocess.run(["wine", str(exe), "/S"], env=env, capture_output=True, timeout=600)
    app = local / "app"
    for name in ("uv.exe", "bootstrap.py", "bitsmith.ico", "uninstall.exe", "wheels/bitsmith-0.1.0-py3-none-any.whl"):
        assert (app / name).is_file(), name
    if not (app / "env").exists():
        assert setup.returncode != 0  # no environment: Setup must not report success
    key = r"HKCU\Software\Microsoft\Windows\CurrentVersion\Uninstall\Bitsmith"
    reg = subprocess.run(["wine", "reg", "query", key], env=env, capture_output=True, timeout=120)
    assert reg.returncode == 0 and b"uninstall.exe" in reg.stdout and b"/repair" in reg.stdout

    (local / "models" / "mine").mkdir(parents=True)
    (local / "models" / "mine" / "model.safetensors").write_text("weights")
    subprocess.run(["wine", str(app / "uninstall.exe"), "/S"], env=env, capture_output=True, timeout=300)
    subprocess.run(["wineserver", "-w"], env=env, capture_output=True, timeout=300)  # the uninstaller re-spawns
    assert not app.exists()
    assert (local / "models" / "mine" / "model.safetensors").read_text() == "weights"
    reg = subprocess.run(["wine", "reg", "query", key], env=env, capture_output=True, timeout=120)
    assert reg.returncode != 0
