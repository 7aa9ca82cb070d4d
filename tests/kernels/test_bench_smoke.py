"""The kernel benchmark runs end to end in --smoke mode (CPU interpreter, tiny shapes) and never writes
into docs/ when it does."""

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "benchmarks" / "bench_kernels.py"
DOCS = REPO / "docs" / "benchmarks" / "kernels.md"


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


@pytest.mark.skipif(os.environ.get("BITSMITH_TEST_GPU") == "1", reason="the smoke run is for the CPU interpreter")
def test_smoke_run(tmp_path) -> None:
    before = _digest(DOCS)
    md, js = tmp_path / "k.md", tmp_path / "k.json"
    env = dict(os.environ, TRITON_INTERPRET="1")
    res = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(md), "--json-out", str(js)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "timings are meaningless" in res.stdout
    report = md.read_text()
    assert "SMOKE RUN" in report and "meaningless" in report
    data = json.loads(js.read_text())
    assert data["meta"]["smoke"] is True
    rows = data["rows"]
    assert {r["M"] for r in rows} == {1, 16, 80} and {r["format"] for r in rows} == {"int4/g128", "int2/g64"}
    seen_paths = set()
    for r in rows:
        for name, entry in r["variants"].items():
            assert entry.get("correct"), (r["N"], r["K"], r["M"], r["format"], name, entry)
            assert entry["us"] > 0
            seen_paths.add(name)
    assert {"cublas", "deq+mm", "auto", "gemv", "splitk", "gemm"} <= seen_paths
    assert _digest(DOCS) == before, "the smoke run touched docs/"


def test_smoke_refuses_to_write_into_docs(tmp_path) -> None:
    spec = importlib.util.spec_from_file_location("bitsmith_bench_kernels", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    before = _digest(DOCS)
    assert bench.main(["--smoke", "--out", str(DOCS)]) == 2
    assert _digest(DOCS) == before
