#!/usr/bin/env bash
# Builds the Windows installer on Linux: dist/Bitsmith-Setup-VERSION.exe (NSIS; `apt-get install nsis`).
# It carries uv.exe (from uv's win_amd64 wheel on PyPI, cached in build/installers/downloads), the shared
# bootstrap, the Bitsmith wheel and the icon.
#
#   installers/windows/build.sh [--out DIR] [--compressor lzma|zlib] [--uv-exe PATH]
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$REPO"
# shellcheck disable=SC1091
. installers/versions.env
OUT=dist
COMPRESSOR=lzma
UVEXE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --compressor) COMPRESSOR="$2"; shift 2 ;;
    --uv-exe) UVEXE="$2"; shift 2 ;;
    *) echo "usage: build.sh [--out DIR] [--compressor lzma|zlib] [--uv-exe PATH]" >&2; exit 2 ;;
  esac
done
command -v makensis >/dev/null || { echo "makensis is missing: apt-get install -y nsis" >&2; exit 3; }
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
VERSION="$("$PY" -c "import tomllib; print(tomllib.load(open('pyproject.toml','rb'))['project']['version'])")"
# Windows wants four numbers: 0.1.0rc1 -> 0.1.0.0
VIVERSION="$(printf '%s' "$VERSION" | grep -oE '^[0-9]+(\.[0-9]+){0,3}' | awk -F. '{printf "%d.%d.%d.%d", $1, $2, $3, $4}')"
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
WHEEL="$(bash installers/build_wheel.sh "$STAGE/wheels" | tail -1)"
[ -n "$UVEXE" ] || UVEXE="$("$PY" installers/fetch_uv.py win_amd64 "$STAGE/uv" | tail -1)"
mkdir -p "$OUT"
OUTFILE="$(cd "$OUT" && pwd)/Bitsmith-Setup-$VERSION.exe"
makensis -V2 -WX -INPUTCHARSET UTF8 \
  -DVERSION="$VERSION" -DVIVERSION="$VIVERSION" -DPYVER="$PYTHON_VERSION" -DCOMPRESSOR="$COMPRESSOR" \
  -DWHEEL="$WHEEL" -DWHEELNAME="$(basename "$WHEEL")" -DUVEXE="$UVEXE" \
  -DBOOTSTRAP="$REPO/installers/bootstrap.py" -DICON="$REPO/resources/bitsmith.ico" -DOUTFILE="$OUTFILE" \
  installers/windows/bitsmith.nsi >&2
echo "$OUTFILE"
