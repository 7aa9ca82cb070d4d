"""The Windows installer builds on Linux with makensis (warnings are errors) and carries what it must.

Built with zlib instead of the release's solid LZMA to keep CI quick (about 10 s instead of 40 s); the
script is the same. Skipped, with the reason, where makensis is missing (`apt-get install -y nsis`).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import struct
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
    # The GPU cannot be used (bootstrap exit 3): ask before a CPU install; silent Setup says no.
    assert "${ElseIf} $0 == 3" in nsi and "Install Bitsmith for the CPU instead?" in nsi and "/SD IDNO IDYES cpu" in nsi
    assert "repair --root \"$R2\"" in nsi and "--pause --ask" in nsi  # Repair asks in its console window
    assert "nsExec::ExecToLog" in nsi  # the bootstrap's progress lines stream into the installer window
    # Every path handed to a program is quoted (spaces, non-ASCII user names).
    for line in nsi.splitlines():
        if "ExecToLog" in line or "ExecWait" in line:
            for path in re.findall(r"\$(?:INSTDIR|Root|R2)[^ '\"]*", line):
                assert f'"{path}' in line, line



WINE = shutil.which("wine") is None
USER = "Zoë Müller"
UNINSTALL_KEY = r"HKCU\Software\Microsoft\Windows\CurrentVersion\Uninstall\Bitsmith"


class Wine:
    """A throw-away wine prefix for a user named "Zoë Müller", its HOME (wine links Desktop there) in tmp."""

    def __init__(self, tmp: Path, **extra: str) -> None:
        (tmp / "home").mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "WINEPREFIX": str(tmp / "wine"), "WINEDEBUG": "-all", "USER": USER,
                    "HOME": str(tmp / "home"), "WINEDLLOVERRIDES": "winemenubuilder.exe=d;mscoree,mshtml=", **extra}
        subprocess.run(["wineboot", "-i"], env=self.env, capture_output=True, timeout=300)
        self.user = tmp / "wine" / "drive_c" / "users" / USER
        self.local = self.user / "AppData" / "Local" / "Bitsmith"
        self.app = self.local / "app"
        self.programs = self.user / "AppData" / "Roaming" / "Microsoft" / "Windows" / "Start Menu" / "Programs"

    def run(self, *argv: str, **extra: str) -> int:
        """Run a Windows program and wait for everything it started (the uninstaller re-spawns itself)."""
        done = subprocess.run(["wine", *argv], env={**self.env, **extra}, capture_output=True, timeout=600)
        subprocess.run(["wineserver", "-w"], env=self.env, capture_output=True, timeout=300)
        return done.returncode

    def registered(self) -> bytes | None:
        reg = subprocess.run(["wine", "reg", "query", UNINSTALL_KEY], env=self.env, capture_output=True, timeout=120)
        return reg.stdout if reg.returncode == 0 else None


def read_lnk(path: Path) -> dict[str, str]:
    """Target, arguments, working folder and icon of a Windows shortcut (MS-SHLLINK), enough to check ours."""
    data = path.read_bytes()
    flags = struct.unpack_from("<I", data, 20)[0]
    off = 76
    if flags & 0x1:  # HasLinkTargetIDList
        off += 2 + struct.unpack_from("<H", data, off)[0]
    out: dict[str, str] = {}
    if flags & 0x2:  # HasLinkInfo: LocalBasePath is the target
        size, header, _, _, base = struct.unpack_from("<5I", data, off)
        out["target"] = data[off + base:data.index(b"\0", off + base)].decode("cp1252", "replace")
        if header >= 0x24:
            ubase = off + struct.unpack_from("<I", data, off + 28)[0]
            raw = data[ubase:]
            out["target"] = raw[:next(i for i in range(0, len(raw), 2) if raw[i:i + 2] == b"\0\0")].decode("utf-16-le")
        off += size
    for key, bit in (("name", 0x4), ("relative", 0x8), ("workdir", 0x10), ("arguments", 0x20), ("icon", 0x40)):
        if flags & bit:
            count = struct.unpack_from("<H", data, off)[0]
            out[key] = data[off + 2:off + 2 + 2 * count].decode("utf-16-le").rstrip("\0")  # wine counts the NUL
            off += 2 + 2 * count
    return out


@pytest.mark.skipif(WINE, reason="wine missing (apt-get install wine64 wine): Setup not run")
def test_setup_stops_cleanly_under_wine_when_uv_cannot_run(installer, tmp_path) -> None:
    """The real Setup: it unpacks into %LOCALAPPDATA%\\Bitsmith\\app of "Zoë Müller" and registers itself; wine 8
    cannot start the real uv.exe (no bcryptprimitives.dll), so the environment step fails and Setup must stop with
    an error code, no shortcuts; the silent uninstaller then removes the program and keeps the models."""
    exe, _ = installer
    wine = Wine(tmp_path)
    code = wine.run(str(exe), "/S")
    for name in ("uv.exe", "bootstrap.py", "bitsmith.ico", "uninstall.exe", "wheels/bitsmith-0.1.0-py3-none-any.whl"):
        assert (wine.app / name).is_file(), name
    if not (wine.app / "env").exists():
        assert code != 0 and not (wine.programs / "Bitsmith" / "Bitsmith.lnk").exists()
    reg = wine.registered()
    assert reg is not None and b"uninstall.exe" in reg and b"/repair" in reg

    (wine.local / "models" / "mine").mkdir(parents=True)
    (wine.local / "models" / "mine" / "model.safetensors").write_text("weights")
    wine.run(str(wine.app / "uninstall.exe"), "/S")
    assert not wine.app.exists()
    assert (wine.local / "models" / "mine" / "model.safetensors").read_text() == "weights"
    assert wine.registered() is None


@pytest.fixture(scope="module")
def installer_with_fake_uv(tmp_path_factory) -> Path:
    """Setup built around tests/installers/fake_uv.nsi instead of uv.exe (see that file for why and how)."""
    work = tmp_path_factory.mktemp("fakeuv")
    fake = work / "uv.exe"
    subprocess.run(["makensis", "-V2", "-WX", "-INPUTCHARSET", "UTF8", f"-DOUTFILE={fake}",
                    str(REPO / "tests/installers/fake_uv.nsi")], check=True, capture_output=True, timeout=300)
    done = subprocess.run(["bash", str(REPO / "installers/windows/build.sh"), "--out", str(work / "dist"),
                           "--compressor", "zlib", "--uv-exe", str(fake)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(WINE, reason="wine missing (apt-get install wine64 wine): Setup not run")
def test_setup_steps_under_wine_with_a_stand_in_for_uv(installer_with_fake_uv, tmp_path) -> None:
    """Everything Setup itself does, for "Zoë Müller": the command lines it hands to uv (quoted non-ASCII paths),
    the CPU question (silent: no, /ALLOWCPU: yes), shortcuts with the icon that start pythonw.exe (no console),
    a failure and a re-run, Repair, and the uninstaller keeping or (/REMOVEDATA) deleting models and chats."""
    exe = installer_with_fake_uv
    log = tmp_path / "uv-calls.txt"
    wine = Wine(tmp_path, FAKE_UV_LOG="Z:" + str(log).replace("/", "\\"))
    calls = lambda: log.read_text(encoding="utf-16-le").splitlines() if log.exists() else []  # noqa: E731
    root = rf"C:\users\{USER}\AppData\Local\Bitsmith"
    start_menu = wine.programs / "Bitsmith"
    desktop = wine.user / "Desktop" / "Bitsmith.lnk"

    # 1. The GPU cannot be used; silent Setup answers "no" to the CPU question: it stops, nothing to start.
    assert wine.run(str(exe), "/S", FAKE_UV_MODE="nogpu") != 0
    run = [c for c in calls() if " run " in c]
    assert len(run) == 1 and "--allow-cpu" not in run[0]
    assert f'install --root "{root}" --uv "{root}\\app\\uv.exe"' in run[0]
    assert f'--wheel "{root}\\app\\wheels\\bitsmith-0.1.0-py3-none-any.whl"' in run[0]
    assert calls()[0] == f'"{root}\\app\\uv.exe" python install 3.12'
    assert not (start_menu / "Bitsmith.lnk").exists() and not desktop.exists()

    # 2. With /ALLOWCPU the CPU install goes ahead, and the shortcuts appear.
    assert wine.run(str(exe), "/S", "/ALLOWCPU", FAKE_UV_MODE="nogpu") == 0
    assert calls()[-1].endswith(" --allow-cpu")
    pythonw = f"{root}\\app\\env\\Scripts\\pythonw.exe"
    icon = f"{root}\\app\\bitsmith.ico"
    for lnk in (start_menu / "Bitsmith.lnk", desktop):
        info = read_lnk(lnk)
        assert info["target"] == pythonw and info["arguments"] == "-m bitsmith.app", info  # no console window
        assert info["icon"] == icon and info["workdir"] == root, info
    assert read_lnk(start_menu / "Repair Bitsmith.lnk")["arguments"] == "/repair"
    assert read_lnk(start_menu / "Uninstall Bitsmith.lnk")["target"] == f"{root}\\app\\uninstall.exe"
    assert b"/repair" in wine.registered()

    # 3. A failed run (network lost) is an error code, and running Setup again succeeds.
    assert wine.run(str(exe), "/S", FAKE_UV_MODE="fail") != 0
    assert (wine.app / "uv.exe").is_file() and wine.registered() is not None
    assert wine.run(str(exe), "/S", FAKE_UV_MODE="ok") == 0

    # 4. Repair (the Start-menu shortcut) runs the bootstrap's repair in a console that pauses and can ask.
    assert wine.run(str(wine.app / "uninstall.exe"), "/repair", FAKE_UV_MODE="ok") == 0
    assert f'repair --root "{root}" --uv "{root}\\app\\uv.exe" --pause --ask' in calls()[-1]
    assert (wine.app / "uninstall.exe").is_file()  # repair is not an uninstall

    # 5. Uninstall keeps models and chats; shortcuts and the Apps entry go.
    (wine.local / "models" / "mine").mkdir(parents=True)
    (wine.local / "models" / "mine" / "model.safetensors").write_text("weights")
    (wine.local / "chats.sqlite3").write_text("chats")
    wine.run(str(wine.app / "uninstall.exe"), "/S")
    assert not wine.app.exists() and not start_menu.exists() and not desktop.exists()
    assert (wine.local / "models" / "mine" / "model.safetensors").read_text() == "weights"
    assert (wine.local / "chats.sqlite3").exists() and wine.registered() is None

    # 6. Installing again finds them; /REMOVEDATA deletes them with the program.
    assert wine.run(str(exe), "/S", FAKE_UV_MODE="ok") == 0
    assert (wine.local / "chats.sqlite3").exists()
    wine.run(str(wine.app / "uninstall.exe"), "/S", "/REMOVEDATA")
    assert not wine.local.exists()
