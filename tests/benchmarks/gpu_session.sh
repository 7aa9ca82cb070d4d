#!/usr/bin/env bash
# One call on a lent NVIDIA machine: set up without network, then run the named steps, each under its own
# time limit so that one slow step cannot take the others' results with it. Run by hand, never by CI:
#
#   bash tests/benchmarks/gpu_session.sh hw kerneltests kernelbench decode qsftmem
#
# Wheels for packages the machine lacks travel in .whl/ (see docs/benchmarks/README.md); Bitsmith itself is
# made importable by linking its folders under a `bitsmith` namespace (no build, no network). Everything a
# step prints goes to $OUT/session.log; its results go to $OUT (the device tool brings that folder back).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
LOG=$OUT/session.log
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 BITSMITH_HOME=${BITSMITH_HOME:-/tmp/bitsmith-home}

if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >>"$LOG" 2>&1 || { echo "wheel install failed" | tee -a "$LOG"; exit 1; }
fi
mkdir -p /tmp/bsns/bitsmith
for d in app engine kernels resources; do ln -sfn "$PWD/$d" "/tmp/bsns/bitsmith/$d"; done
export PYTHONPATH=/tmp/bsns:/tmp/site${PYTHONPATH:+:$PYTHONPATH}

step() {  # step NAME SECONDS COMMAND...: run one step with a limit, log it, record its exit code
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s) $(date -u +%H:%M:%S)" | tee -a "$LOG"
  local t0=$SECONDS
  timeout --signal=INT --kill-after=15 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "=== $name rc=$rc in $((SECONDS - t0))s" | tee -a "$LOG"
}

{ date -u; nvidia-smi; $PY -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton',
  triton.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"; } >>"$LOG" 2>&1

for s in "$@"; do
  case "$s" in
    hw) step hw 60 $PY tests/benchmarks/record_nvml.py --out "$OUT/nvml_h100.json" ;;
    kerneltests) BITSMITH_TEST_GPU=1 BITSMITH_AUTOTUNE=0 step kerneltests "${KT_LIMIT:-240}" $PY -m pytest \
                   ${KT_TESTS:-tests/kernels} -q -p no:cacheprovider -W ignore ;;
    kernelbench) step kernelbench "${KB_LIMIT:-300}" $PY tests/benchmarks/bench_kernels.py --out "$OUT/kernels.md" \
                   --json-out "$OUT/kernels.json" ${KB_ARGS:-} ;;
    decode) step decode "${DEC_LIMIT:-240}" $PY tests/benchmarks/bench_decode.py --sections gpu --out "$OUT/decode.jsonl" ;;
    qsftmem) step qsftmem "${QM_LIMIT:-240}" $PY tests/benchmarks/bench_qsft.py --json-out "$OUT/qsft_memory.json" \
               memory --bpw 2.5 4.0 --seq-len 2048 ;;
    pipeline) step pipeline "${PIPE_LIMIT:-420}" $PY tests/benchmarks/bench_pipeline.py --json-out "$OUT/pipeline.json" \
                ${PIPE_ARGS:-} ;;
    *) echo "unknown step $s" | tee -a "$LOG" ;;
  esac
done
echo "=== done $(date -u +%H:%M:%S)" | tee -a "$LOG"
