"""tests/benchmarks/bench_quality.py: its options, report rendering and verdicts, and a --smoke run end to end."""

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "tests" / "benchmarks" / "bench_quality.py"
DOC = REPO / "docs" / "benchmarks" / "quality.md"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rec(method: str, budget, ppl: float, bpw: float | None = None, **extra) -> dict:
    rec = {"model": "bundled", "method": method, "budget": budget, "preset": "demo" if method == "bitsmith" else None,
           "eval_tokens": 4096, "window": 512, "seed": 0, "status": "ok", "ppl": ppl, "scored_tokens": 4088,
           "machine": "test cpu", "torch_threads": 1, "date": "2026-01-01 00:00:00", "seconds": 1.0, "cpu_s": 0.9,
           "loadavg_start": [1.0, 1.0, 1.0], "loadavg_end": [3.0, 1.0, 1.0]}
    if bpw is not None:
        rec.update(bpw=bpw, format="W4/g128")
    if method == "bitsmith":
        rec.update(job_seconds=100.0, quantize_seconds=60.0, job_cpu_s=90.0)
    return {**rec, **extra}


def test_options(bench) -> None:
    args = bench.parse_args(["--smoke", "--budgets", "3.0", "2.2"])
    assert args.budgets == [3.0, 2.2] and args.eval_tokens == 512 and args.window == 128
    assert bench.parse_args([]).budgets == [4.0, 3.0, 2.5, 2.2]
    with pytest.raises(SystemExit):
        bench.parse_args(["--budgets", "3.3"])  # no peer format is defined for it
    with pytest.raises(SystemExit):
        bench.parse_args(["--render-only"])


def _smollm_shaped_blocks():
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q = nn.Linear(576, 576, bias=False)
            self.up = nn.Linear(576, 1536, bias=False)
            self.down = nn.Linear(1536, 576, bias=False)

    torch.manual_seed(0)
    model = nn.Module()
    model.layers = nn.ModuleList([Block(), Block()])
    return model


def test_every_peer_format_costs_at_least_its_budget(bench) -> None:
    model = _smollm_shaped_blocks()
    for budget, peers in bench.PEER_FORMATS.items():
        for method, (bits, group) in peers.items():
            bpw = (bench.hqq_bpw if method == "hqq" else bench.gptq_bpw)(model, bits, group)
            assert bpw >= budget, (budget, method, bpw)
    assert bench.hqq_bpw(model, 2, 64) == pytest.approx(2.5)  # 2 + (16 + 16) / 64
    assert bench.hqq_bpw(model, 3, 128) == pytest.approx(3.2 + 0.25)  # ten 3-bit codes per int32
    assert bench.gptq_bpw(model, 3, 128) == pytest.approx(3 + 19 / 128, rel=0.01)  # bit-contiguous, 5 groups of 576
    assert bench.bitsmith_min_bpw(model, ("int4_g128", "int2_g64")) > 2.2  # why 2.2 runs at all-INT2


def test_level_check_catches_an_unquantized_weight(bench) -> None:
    model = _smollm_shaped_blocks()
    assert bench.max_levels(model, 64) > 4
    bench.quantize_rtn(model, 2, 64)
    assert bench.max_levels(model, 64) == 4  # every group of every linear on a 4-level grid
    model.layers[1].up.weight.data[0, 0] += 1e-3  # one weight off the grid is caught
    assert bench.max_levels(model, 64) == 5


def test_report_verdicts_and_doc_markers(bench, tmp_path: Path) -> None:
    records = [
        _rec("fp", None, 10.0),
        _rec("bitsmith", 4.0, 10.5, 3.99),
        _rec("rtn", 4.0, 12.0, 4.17),
        _rec("hqq", 4.0, 10.2, 4.25),
        _rec("bitsmith", 3.0, 16.0, 2.99),
        _rec("rtn", 3.0, 15.0, 2.9),  # below the budget: must not count as a comparison
        _rec("autoround", 3.0, 0.0, status="error", error="RuntimeError: boom"),
        _rec("bitsmith", 3.0, 14.0, 2.99, seed=1),  # another seed: its own table
    ]
    text = bench.render_tables(records)
    assert "SMOKE" not in text and "the dequantized GGUF): perplexity **10.000**" in text
    assert "| 4.0 | int4_g128, int2_g64 | 1.050× | ≤ 1.06× → **met** |" in text
    assert "rtn beaten (12.000 at 4.170)" in text and "hqq **not beaten** (10.200 at 4.250)" in text
    assert "| 3.0 | int4_g128, int2_g64 | 1.600× | ≤ 1.5× → **missed** |" in text
    assert "rtn below the budget (2.900 bpw), not compared" in text
    assert "error: RuntimeError: boom" in text
    assert text.count("### SmolLM2-135M-Instruct (bundled)") == 2 and "seed 1" in text
    assert "| 4.0 | **bitsmith** | W4/g128 | 3.990 | 10.500 | 1.050 | 100 (60) | 90 |" in text
    assert "| 4.0 | rtn | W4/g128 | 4.170 | 12.000 | 1.200 | 1 | 1 |" in text
    assert "load average during these runs: 1.0–3.0" in text
    # a rerun of one measurement replaces the earlier record; huge perplexities stay readable
    rerun = bench.render_tables(records + [_rec("rtn", 4.0, 123456.7, 4.17)])
    assert "| 4.0 | rtn | W4/g128 | 4.170 | 123,457 | 12,346 |" in rerun and "12.000" not in rerun

    doc = tmp_path / "q.md"
    doc.write_text("# Title\n\nhand-written intro\n")
    bench.write_doc(doc, records, "python bench --x")
    bench.write_doc(doc, records[:2], "python bench --y")  # replaces the generated part only
    text = doc.read_text()
    assert text.startswith("# Title\n\nhand-written intro\n") and text.count(bench.MARK_BEGIN) == 1
    assert "--y" in text and "--x" not in text and text.rstrip().endswith(bench.MARK_END)


@pytest.mark.slow
def test_smoke_run_end_to_end(tiny_model_dir: Path, tmp_path: Path) -> None:
    before = hashlib.sha256(DOC.read_bytes()).hexdigest() if DOC.exists() else None
    out, doc = tmp_path / "r.jsonl", tmp_path / "q.md"
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--source", str(tiny_model_dir), "--budgets", "3.0", "2.2",
           "--threads", "1", "--out", str(out), "--doc", str(doc), "--home", str(tmp_path / "home")]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    by = {(r["method"], r["budget"]): r for r in recs}
    assert set(by) == {("fp", None)} | {(m, b) for m in ("bitsmith", "rtn", "hqq", "autoround") for b in (3.0, 2.2)}
    installed = {"hqq": importlib.util.find_spec("hqq"), "autoround": importlib.util.find_spec("auto_round")}
    for (method, budget), r in by.items():
        if method in installed and installed[method] is None:
            assert r["status"] == "unavailable"
            continue
        assert r["status"] == "ok", r
        assert r["eval_tokens"] == 512 and r["window"] == 128 and 1.0 < r["ppl"] < 1e6
        if method in ("rtn", "hqq", "autoround"):
            assert r["bpw"] >= budget
        if method in ("rtn", "autoround"):  # every linear really quantized: at most 2^bits values per group
            assert 2 <= r["levels_max"] <= 2 ** int(r["format"][1])
    fp = by[("fp", None)]["ppl"]
    assert by[("rtn", 2.2)]["ppl"] != fp  # the weights really changed
    mine = by[("bitsmith", 3.0)]
    assert mine["bpw"] <= 3.0 and mine["returncode"] == 0 and "int2_g64" in mine["format"]
    assert by[("bitsmith", 2.2)]["ran_at_bpw"] > 2.2 and "below the smallest layout" in by[("bitsmith", 2.2)]["note"]
    assert mine["formats"] == ["int4_g128", "int2_g64"]  # the demo preset's
    text = doc.read_text()
    assert "| 3.0 | **bitsmith** |" in text and "| 2.2 | rtn | W2/g64 |" in text and "SMOKE RUN" in text

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    finished = sum(r["status"] == "ok" for r in recs)  # a peer that is not installed is tried again next time
    assert again.returncode == 0 and again.stdout.count("skip ") == finished  # finished runs are not repeated
    assert len(out.read_text().splitlines()) == len(recs) + (len(recs) - finished)  # retried peers append again
    # other candidate formats are another measurement: run, recorded with their names, and given their own verdict
    other = subprocess.run(cmd[:-2] + ["--methods", "bitsmith", "--budgets", "3.0", "--formats",
                                       "int4_g128_dq8,int2_g64_dq8"], capture_output=True, text=True, timeout=900)
    assert other.returncode == 0 and "skip " not in other.stdout, other.stdout[-2000:] + other.stderr[-2000:]
    last = json.loads(out.read_text().splitlines()[-1])
    assert last["formats"] == ["int4_g128_dq8", "int2_g64_dq8"] and "_dq8" in last["format"] and last["bpw"] <= 3.0
    assert "| 3.0 | int4_g128_dq8, int2_g64_dq8 |" in doc.read_text()
    assert (hashlib.sha256(DOC.read_bytes()).hexdigest() if DOC.exists() else None) == before
    # --reuse: a folder left by a stopped run is evaluated, not quantized again
    keep = cmd[:-2] + ["--methods", "bitsmith", "--budgets", "3.0", "--fresh", "--reuse", "--work", str(tmp_path / "w")]
    first = subprocess.run(keep, capture_output=True, text=True, timeout=900)
    second = subprocess.run(keep, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0 and second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    made, reused = (json.loads(line) for line in out.read_text().splitlines()[-2:])
    assert not made.get("reused") and made["job_cpu_s"] > 0
    assert reused["reused"] and reused["ppl"] == made["ppl"] and reused["job_seconds"] > 0
