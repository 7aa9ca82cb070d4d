"""Fetch the uv executable for a platform from its PyPI wheel (uv ships a binary inside), cached on disk.

`python installers/fetch_uv.py win_amd64 OUT_DIR` leaves OUT_DIR/uv.exe; `manylinux_2_17_x86_64` leaves
OUT_DIR/uv. The wheel is kept in build/installers/downloads, so later builds need no network.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOWNLOADS = ROOT / "build" / "installers" / "downloads"


def uv_version() -> str:
    """The pinned uv version from installers/versions.env."""
    for line in (ROOT / "installers" / "versions.env").read_text().splitlines():
        if line.startswith("UV_VERSION="):
            return line.split("=", 1)[1].strip()
    raise SystemExit("UV_VERSION missing from installers/versions.env")


def _cached(version: str, platform_tag: str) -> list[Path]:
    """Downloaded uv wheels of this version for this platform (win_amd64, manylinux_*_x86_64, ...)."""
    if platform_tag.startswith("win"):
        return sorted(DOWNLOADS.glob(f"uv-{version}-*-{platform_tag}.whl"))
    arch = "x86_64" if platform_tag.endswith("x86_64") else platform_tag.rsplit("_", 1)[-1]
    system = "macosx" if platform_tag.startswith("macosx") else "linux"
    return sorted(w for w in DOWNLOADS.glob(f"uv-{version}-*{system}*.whl") if arch in w.name)


def fetch(platform_tag: str, out_dir: Path, version: str | None = None) -> Path:
    """Return the path of the uv executable for platform_tag, downloading its wheel only when not cached."""
    version = version or uv_version()
    exe = "uv.exe" if platform_tag.startswith("win") else "uv"
    DOWNLOADS.mkdir(parents=True, exist_ok=True)
    wheels = _cached(version, platform_tag)
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--platform",
               platform_tag, "-d", str(DOWNLOADS), f"uv=={version}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = _cached(version, platform_tag)
        if done.returncode != 0 or not wheels:
            raise SystemExit(f"could not download uv {version} for {platform_tag}:\n{done.stdout}{done.stderr}")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / exe
    with zipfile.ZipFile(wheels[0]) as zf:
        member = next(n for n in zf.namelist() if n.endswith(f".data/scripts/{exe}"))
        with zf.open(member) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    target.chmod(0o755)
    return target


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: fetch_uv.py PLATFORM_TAG OUT_DIR   (win_amd64, manylinux_2_17_x86_64, ...)")
    print(fetch(sys.argv[1], Path(sys.argv[2])))
