"""install.sh and uninstall.sh themselves, fast: a stand-in uv answers for the bootstrap, so what is tested is the
script's own work (arguments, files kept in app/, menu entry and launchers, exit codes, the CPU question on a
terminal, a terminal window on a double-click, repair from the installed folder, what uninstall deletes).
The real bootstrap through install.sh is tested end to end, slowly, in test_linux_e2e.py."""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SEP = "\x1f"
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the Linux installer scripts")

FAKE_UV = r"""#!/bin/bash
# Stand-in for uv: logs each call (arguments joined by \x1f), answers `python install`, and plays the bootstrap
# for `run ... bootstrap.py MODE --root R ...` as FAKE_UV_MODE says (ok, nogpu: exit 3 unless --allow-cpu, fail).
(IFS=$'\x1f'; printf '%s\n' "$*") >> "$FAKE_UV_LOG"
[ "$1" = python ] && exit 0
[ "$1" = run ] || exit 9
ROOT=""; ALLOW=0
while [ $# -gt 0 ]; do case "$1" in --root) ROOT="$2"; shift 2 ;; --allow-cpu) ALLOW=1; shift ;; *) shift ;; esac; done
APP="$ROOT/app"
msg() { printf '%s' "$1" | iconv -f UTF-8 -t UTF-16 > "$APP/last-message.txt"; echo "$1"; }
case "${FAKE_UV_MODE:-ok}" in
  nogpu) [ "$ALLOW" = 1 ] || { msg "Problem: Your NVIDIA driver (535.54) is too old."; exit 3; } ;;
  fail) msg "Problem: A download failed."; exit 2 ;;
esac
mkdir -p "$APP/env/bin"
printf '#!/bin/sh\necho "env $*"\n' > "$APP/env/bin/python"
printf '#!/bin/sh\necho "home=$BITSMITH_HOME args=$*"\n' > "$APP/env/bin/bitsmith"
chmod +x "$APP/env/bin/python" "$APP/env/bin/bitsmith"
echo '{"format": 1}' > "$APP/install.json"
msg "Bitsmith is installed and works."
"""

FAKE_TERMINAL = r"""#!/bin/bash
# Stand-in for x-terminal-emulator: logs how it was asked to run the command, then runs it (after -e).
(IFS=$'\x1f'; printf '%s\n' "$*") >> "$FAKE_TERM_LOG"
shift
exec "$@" </dev/null
"""


class Box:
    """A home folder, a release bundle laid out as build.sh makes it, a stand-in uv, and the scripts' outputs."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.home = tmp / "home"
        self.home.mkdir()
        self.bundle = tmp / "bitsmith-0.1.0-linux-x86_64"
        (self.bundle / "wheels").mkdir(parents=True)
        for src in ("installers/linux/install.sh", "installers/linux/uninstall.sh",
                    "installers/linux/bitsmith.desktop.in", "installers/bootstrap.py", "installers/versions.env",
                    "resources/bitsmith.png", "resources/bitsmith.svg"):
            shutil.copy(REPO / src, self.bundle / Path(src).name)
        (self.bundle / "wheels" / "bitsmith-0.1.0-py3-none-any.whl").write_bytes(b"PK stand-in")
        self.bin = tmp / "fakebin"
        self.bin.mkdir()
        for name, text in (("uv", FAKE_UV), ("x-terminal-emulator", FAKE_TERMINAL)):
            (self.bin / name).write_text(text)
            (self.bin / name).chmod(0o755)
        self.log = tmp / "uv-calls.txt"
        self.term_log = tmp / "terminal-calls.txt"
        self.prefix = tmp / "Zoë's 100% \\ disk $HOME `x`" / "Bitsmith"  # every character Exec= must escape
        self.app = self.prefix / "app"
        self.bin_dir = self.home / ".local" / "bin"
        self.env = {"HOME": str(self.home), "PATH": f"{self.bin}:/usr/bin:/bin", "FAKE_UV_LOG": str(self.log),
                    "FAKE_TERM_LOG": str(self.term_log), "LANG": "C.UTF-8"}

    def run(self, script: Path, *args: str, stdin=subprocess.DEVNULL, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(script), *args], env={**self.env, **env}, stdin=stdin,
                              capture_output=True, text=True, timeout=120)

    def install(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run(self.bundle / "install.sh", "--prefix", str(self.prefix), "--uv", str(self.bin / "uv"),
                        *args, **kw)

    def calls(self) -> list[list[str]]:
        return [line.split(SEP) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def bootstrap_calls(self) -> list[list[str]]:
        return [c[c.index(str(self.app / "bootstrap.py")) + 1:] for c in self.calls() if c[0] == "run"]


def desktop_exec(path: str) -> str:
    """A path as the Exec key's quoted argument: the quoting layer, then the string layer (Desktop Entry spec)."""
    quoted = "".join("\\" + c if c in '"`$\\' else c for c in path)
    return '"' + quoted.replace("\\", "\\\\").replace("%", "%%") + '"'


@pytest.fixture
def box(tmp_path) -> Box:
    return Box(tmp_path)


def test_install_hands_the_bootstrap_its_arguments_and_sets_up_the_menu(box) -> None:
    done = box.install("--build", "cpu")
    assert done.returncode == 0, done.stdout + done.stderr
    assert box.calls()[0] == ["python", "install", "3.12"]
    run = next(c for c in box.calls() if c[0] == "run")
    assert run[:5] == ["run", "--no-project", "--python", "3.12", "--managed-python"]
    assert box.bootstrap_calls() == [["install", "--root", str(box.prefix), "--uv", str(box.app / "uv"),
                                      "--python", "3.12", "--build", "cpu"]]  # no --ask: stdin is no terminal
    # What the installed folder keeps, so it can repair and uninstall itself without the download.
    for name in ("install.sh", "uninstall.sh", "bootstrap.py", "versions.env", "bitsmith.desktop.in", "bitsmith.png",
                 "bitsmith.svg", "uv", "wheels/bitsmith-0.1.0-py3-none-any.whl"):
        assert (box.app / name).is_file(), name
    desktop = box.home / ".local/share/applications/bitsmith.desktop"
    text = desktop.read_text()
    assert "Exec=" + desktop_exec(str(box.app / "bitsmith-gui")) + "\n" in text and "Icon=bitsmith" in text
    if shutil.which("desktop-file-validate"):
        check = subprocess.run(["desktop-file-validate", str(desktop)], capture_output=True, text=True)
        assert check.returncode == 0 and not check.stdout.strip(), check.stdout
    assert (box.home / ".local/share/icons/hicolor/256x256/apps/bitsmith.png").is_file()
    assert (box.home / ".local/share/icons/hicolor/scalable/apps/bitsmith.svg").is_file()
    # The launchers carry the custom root, quoted: the prefix has a quote, a space, a $ and non-ASCII letters.
    gui = subprocess.run([str(box.app / "bitsmith-gui"), "--page", "chat"], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"})
    assert gui.stdout.strip() == "env -m bitsmith.app --page chat"
    cli = subprocess.run([str(box.bin_dir / "bitsmith"), "--version"], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"})
    assert cli.stdout.strip() == f"home={box.prefix} args=--version"
    assert os.readlink(box.bin_dir / "bitsmith") == str(box.app / "bitsmith")
    assert f"{box.app}/install.sh --repair" in done.stdout and f"{box.app}/uninstall.sh" in done.stdout


def test_gpu_unusable_stops_with_exit_3_and_no_shortcuts(box) -> None:
    done = box.install(FAKE_UV_MODE="nogpu")
    assert done.returncode == 3
    assert "too old" in done.stdout and "--allow-cpu" in done.stdout
    assert not (box.home / ".local/share/applications/bitsmith.desktop").exists()
    assert not (box.app / "bitsmith-gui").exists() and not (box.bin_dir / "bitsmith").exists()
    again = box.install("--allow-cpu", FAKE_UV_MODE="nogpu")
    assert again.returncode == 0 and (box.home / ".local/share/applications/bitsmith.desktop").exists()


def test_a_failed_install_says_so_and_a_rerun_succeeds(box) -> None:
    assert box.install(FAKE_UV_MODE="fail").returncode == 2
    assert not (box.home / ".local/share/applications/bitsmith.desktop").exists()
    assert box.install().returncode == 0


def test_on_a_terminal_the_bootstrap_may_ask(box) -> None:
    leader, follower = pty.openpty()
    try:
        done = box.install(stdin=follower)
    finally:
        os.close(follower)
        os.close(leader)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "--ask" in box.bootstrap_calls()[0]


def test_a_double_click_opens_a_terminal_window(box) -> None:
    """No terminal but a desktop session: install.sh re-runs itself in a terminal emulator, same arguments."""
    done = box.install("--build", "cpu", DISPLAY=":0")
    assert done.returncode == 0, done.stdout + done.stderr
    term = [line.split(SEP) for line in box.term_log.read_text().splitlines()]
    assert term == [["-e", "bash", str(box.bundle / "install.sh"), "--prefix", str(box.prefix), "--uv",
                     str(box.bin / "uv"), "--build", "cpu"]]
    assert len(box.bootstrap_calls()) == 1  # it ran once, inside the window
    plain = box.install()  # without a desktop session: no window, straight on
    assert plain.returncode == 0 and len(box.term_log.read_text().splitlines()) == 1


def test_repair_from_the_installed_folder_keeps_root_and_wheel(box) -> None:
    assert box.install().returncode == 0
    shutil.rmtree(box.bundle)  # the download is gone
    done = box.run(box.app / "install.sh", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert box.bootstrap_calls()[-1][:3] == ["repair", "--root", str(box.prefix)]
    assert (box.app / "wheels" / "bitsmith-0.1.0-py3-none-any.whl").is_file()
    assert "export BITSMITH_HOME=" in (box.app / "bitsmith").read_text()


def test_uninstall_removes_the_program_and_keeps_data_unless_asked(box) -> None:
    assert box.install().returncode == 0
    (box.prefix / "models").mkdir()
    (box.prefix / "chats.sqlite3").write_text("chats")
    done = box.run(box.app / "uninstall.sh", "--keep-data")
    assert done.returncode == 0 and not box.app.exists() and (box.prefix / "chats.sqlite3").exists()
    assert not (box.home / ".local/share/applications/bitsmith.desktop").exists()
    assert not (box.bin_dir / "bitsmith").exists()
    assert box.install().returncode == 0
    assert box.run(box.app / "uninstall.sh", "--remove-data").returncode == 0
    assert not box.prefix.exists()


def test_remove_data_never_deletes_a_folder_not_named_bitsmith(box) -> None:
    docs = box.tmp / "Documents"
    box.prefix = docs
    box.app = docs / "app"
    assert box.install().returncode == 0
    (docs / "thesis.odt").write_text("years of work")
    done = box.run(box.app / "uninstall.sh", "--remove-data")
    assert done.returncode == 0 and "Kept" in done.stdout
    assert (docs / "thesis.odt").read_text() == "years of work" and not box.app.exists()
