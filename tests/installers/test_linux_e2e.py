"""The Linux release bundle end to end, offline: build it, install into a temporary prefix, launch, update, remove.

Wheels come from this test environment's own versions (torch 2.13.0 CPU from the local pip config, the rest
by `pip download` into build/installers/e2e-wheelhouse, kept between runs). llama-cpp-python has only a
source release (about 7 minutes to build on 2 cores), so it is taken from pip's wheel cache when CI already
built it there, and otherwise skipped with the bootstrap's `--without-llama-cpp` option.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
WHEELHOUSE = REPO / "build" / "installers" / "e2e-wheelhouse"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="the Linux installer")]


def run(name: str, cmd: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    """Run one step of the scenario; a hang fails with the step's name and what it printed so far."""
    start = time.monotonic()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        print(f"{name}: {time.monotonic() - start:.1f} s")  # shown with -s or on failure
        return done
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") + (exc.stderr or b"").decode(errors="replace")
        pytest.fail(f"{name} did not finish in {time.monotonic() - start:.0f} s:\n{out[-3000:]}")


def runtime_closure(root: str = "bitsmith", skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed name -> version for everything `root` needs at run time on this platform (no extras)."""
    norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731
    seen: dict[str, str] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        dist = md.distribution(name)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker and not req.marker.evaluate({"extra": ""}):
                continue
            key = norm(req.name)
            if key in seen or key in skip or key == norm(root):
                continue
            seen[key] = md.distribution(req.name).version
            todo.append(req.name)
    return seen


def pip_cached_wheel(name: str, version: str) -> Path | None:
    """A wheel pip built earlier (e.g. llama-cpp-python by dev.sh), from pip's cache."""
    done = subprocess.run([sys.executable, "-m", "pip", "cache", "list", name.replace("-", "_"), "--format=abspath"],
                          capture_output=True, text=True)
    for line in done.stdout.splitlines():
        path = Path(line.strip())
        if path.is_file() and f"-{version}-" in path.name:
            return path
    return None


@pytest.fixture(scope="module")
def wheelhouse() -> tuple[Path, bool]:
    """A folder with every wheel the installed app needs; True when llama-cpp-python is among them."""
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    wanted = runtime_closure()
    have = set()
    for w in WHEELHOUSE.glob("*.whl"):  # the folder is kept between runs: a version not wanted any more goes
        name, version = re.sub(r"[-_.]+", "-", w.name.split("-")[0]).lower(), w.name.split("-")[1]
        if name in wanted and version != wanted[name]:
            w.unlink()
        else:
            have.add(name)
    missing = [f"{n}=={v}" for n, v in wanted.items() if n not in have and n != "llama-cpp-python"]
    if missing:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                               "-d", str(WHEELHOUSE), *missing], capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.skip(f"could not gather the wheels the installer needs: {done.stderr[-800:]}")
    llama = None
    try:
        llama = pip_cached_wheel("llama-cpp-python", md.version("llama-cpp-python"))
    except md.PackageNotFoundError:
        pass
    for old in WHEELHOUSE.glob("llama_cpp_python-*.whl"):
        old.unlink()
    if llama:
        (WHEELHOUSE / llama.name).write_bytes(llama.read_bytes())
    return WHEELHOUSE, llama is not None


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """The release bundle, built and unpacked (with this environment's uv)."""
    out = tmp_path_factory.mktemp("dist")
    uv = Path(sys.executable).with_name("uv")
    if not uv.exists():
        pytest.skip("uv is not installed in this environment (it comes with the dev extras)")
    done = subprocess.run(["bash", str(REPO / "installers/linux/build.sh"), "--out", str(out), "--uv", str(uv)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    tarball = Path(done.stdout.strip().splitlines()[-1])
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
        tar.extractall(out, filter="tar")
    top = out / names[0].split("/")[0]
    for part in ("install.sh", "uninstall.sh", "bootstrap.py", "uv", "bitsmith.png", "bitsmith.desktop.in"):
        assert (top / part).exists(), part
    assert len(list((top / "wheels").glob("bitsmith-*.whl"))) == 1
    return top


def test_linux_bundle_installs_offline_launches_updates_and_uninstalls(bundle, wheelhouse, tmp_path) -> None:
    wheels, with_llama = wheelhouse
    home = tmp_path / "home"
    home.mkdir()
    prefix = tmp_path / "Zoë Müller's disk" / "Bitsmith"
    bin_dir = home / "bin"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_", "BITSMITH_", "XDG_"))}
    env.update(HOME=str(home), QT_QPA_PLATFORM="offscreen", PATH=f"{bin_dir}:/usr/bin:/bin")
    base_python = os.path.realpath(sys.executable)
    args = ["bash", str(bundle / "install.sh"), "--prefix", str(prefix), "--bin-dir", str(bin_dir),
            "--python", base_python, "--offline", "--find-links", str(wheels), "--build", "cpu",
            "--torch", "torch==2.13.0"]
    if not with_llama:
        args.append("--without-llama-cpp")

    # A first attempt that fails half-way (a library missing from the wheels, as a download cut would do)
    # leaves the marker; the next run finishes the job.
    partial = tmp_path / "partial-wheels"
    partial.mkdir()
    for wheel in wheels.glob("*.whl"):
        if not wheel.name.startswith("transformers-"):
            (partial / wheel.name).symlink_to(wheel)
    broken = [str(partial) if a == str(wheels) else a for a in args]
    failed = run("the failing first install", broken, env, 900)
    out = failed.stdout + failed.stderr
    assert failed.returncode == 2, out
    assert "Problem:" in out and "What to do:" in out and "transformers" in out
    marker = json.loads((prefix / "app" / "install-incomplete.json").read_text())
    assert marker["step"] == "bitsmith"

    first = run("the install", args, env, 900)
    out = first.stdout + first.stderr
    assert first.returncode == 0, out
    assert "stopped before it finished (during: bitsmith)" in out
    assert "[1/4] Setting up Python" in out and "Everything works." in out
    state = json.loads((prefix / "app" / "install.json").read_text())
    assert state["build"] == "cpu" and state["torch"] == "2.13.0+cpu" and state["selftest"]["ok"]
    llama_check = next(c for c in state["selftest"]["checks"] if c["name"] == "llama.cpp")
    assert llama_check["status"] == ("ok" if with_llama else "skipped")
    assert not (prefix / "app" / "install-incomplete.json").exists()

    version = run("bitsmith --version", [str(bin_dir / "bitsmith"), "--version"], env, 300)
    assert version.returncode == 0 and version.stdout.strip() == "bitsmith 0.1.0", version.stderr

    desktop = (home / ".local/share/applications/bitsmith.desktop").read_text()
    assert f'Exec="{prefix}/app/bitsmith-gui"' in desktop and "Icon=bitsmith" in desktop
    if shutil.which("desktop-file-validate"):
        check = subprocess.run(["desktop-file-validate", str(home / ".local/share/applications/bitsmith.desktop")],
                               capture_output=True, text=True)
        assert check.returncode == 0 and not check.stdout.strip(), check.stdout + check.stderr
    assert (home / ".local/share/icons/hicolor/256x256/apps/bitsmith.png").read_bytes()[:4] == b"\x89PNG"

    if (REPO / "app" / "__main__.py").exists():  # the desktop app, offscreen, through the menu entry's launcher
        gui = run("the app (offscreen)", [str(prefix / "app" / "bitsmith-gui"), "--exit-when-shown"], env, 600)
        assert gui.returncode == 0 and "shown_at=" in gui.stdout, gui.stdout + gui.stderr

    models = prefix / "models" / "mine"
    models.mkdir(parents=True)
    (models / "model.safetensors").write_text("weights")
    again = run("the second install", args, env, 900)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out
    assert "Setting up Python" not in out and "[1/3]" in out  # the environment is reused

    gone = run("the uninstaller", ["bash", str(prefix / "app" / "uninstall.sh"), "--bin-dir", str(bin_dir),
                                     "--keep-data"], env, 300)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert not (prefix / "app").exists() and (models / "model.safetensors").read_text() == "weights"
    assert not (bin_dir / "bitsmith").exists()
    assert not (home / ".local/share/applications/bitsmith.desktop").exists()
