#!/usr/bin/env bash
# Builds the Linux release bundle: dist/bitsmith-VERSION-linux-ARCH.tar.gz holding install.sh, uninstall.sh,
# the shared bootstrap, uv, the Bitsmith wheel, the icon and the menu entry. The user unpacks it and runs
# ./install.sh (or double-clicks it in a file manager that runs scripts).
#
#   installers/linux/build.sh [--out DIR] [--uv PATH] [--arch x86_64|aarch64]
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$REPO"
OUT=dist
UV=""
ARCH="$(uname -m)"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --uv) UV="$2"; shift 2 ;;
    --arch) ARCH="$2"; shift 2 ;;
    *) echo "usage: build.sh [--out DIR] [--uv PATH] [--arch x86_64|aarch64]" >&2; exit 2 ;;
  esac
done
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
VERSION="$("$PY" -c "import tomllib; print(tomllib.load(open('pyproject.toml','rb'))['project']['version'])")"
NAME="bitsmith-$VERSION-linux-$ARCH"
STAGE="$(mktemp -d)/$NAME"
mkdir -p "$STAGE/wheels" "$OUT"
bash installers/build_wheel.sh "$STAGE/wheels" >/dev/null
if [ -n "$UV" ]; then cp "$UV" "$STAGE/uv"
else "$PY" installers/fetch_uv.py "manylinux_2_17_$ARCH" "$STAGE" >/dev/null; fi
cp installers/bootstrap.py installers/versions.env installers/linux/install.sh installers/linux/uninstall.sh \
  installers/linux/bitsmith.desktop.in resources/bitsmith.png resources/bitsmith.svg "$STAGE/"
chmod +x "$STAGE/install.sh" "$STAGE/uninstall.sh" "$STAGE/uv"
cat > "$STAGE/README.txt" <<TXT
Bitsmith $VERSION for Linux ($ARCH)

Run ./install.sh (no root needed). It detects your NVIDIA GPU and driver, downloads the matching PyTorch
(about 2.5 GB with CUDA, 200 MB without) into ~/.local/share/Bitsmith, checks that the GPU works, and adds
Bitsmith to your applications menu. Run it again at any time to repair or update; your models and chats
are kept. ./install.sh --help lists the options. To uninstall: ~/.local/share/Bitsmith/app/uninstall.sh
TXT
tar -czf "$OUT/$NAME.tar.gz" -C "$(dirname "$STAGE")" "$NAME"
rm -rf "$(dirname "$STAGE")"
echo "$OUT/$NAME.tar.gz"
