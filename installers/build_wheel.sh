#!/usr/bin/env bash
# Builds the Bitsmith wheel into DIR (default dist/): `python -m build` when installed, else `pip wheel`
# (no build isolation, so it works offline with the setuptools already in the environment).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-dist}"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
mkdir -p "$OUT"
rm -f "$OUT"/bitsmith-*.whl
# setuptools copies sources into build/lib and never removes what left the source tree since: a renamed or
# deleted module would ship in the wheel (and, under engine/commands, break the CLI). Build from scratch.
rm -rf build/lib build/bdist.*
if "$PY" -I -c "import build" 2>/dev/null; then
  "$PY" -m build --wheel --no-isolation --outdir "$OUT" . >&2
else  # offline with the environment's setuptools; with build isolation when that one is too old
  "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$OUT" . >&2 2>/dev/null \
    || "$PY" -m pip wheel -q --no-deps -w "$OUT" . >&2
fi
ls "$OUT"/bitsmith-*.whl
