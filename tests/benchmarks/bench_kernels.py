"""Benchmark the low-bit matmul kernels against cuBLAS and dequantize-then-matmul on Llama-3-8B shapes.

Run by hand on an NVIDIA GPU (never by CI):

    python tests/benchmarks/bench_kernels.py                      # writes docs/benchmarks/kernels.md
    python tests/benchmarks/bench_kernels.py --out /tmp/k.md --json-out /tmp/k.json --shapes 4096x14336

Shapes are N x K = out_features x in_features of Llama-3-8B's linears (q/o 4096x4096, k/v 1024x4096,
gate/up 14336x4096, down 4096x14336). For every shape, M in (1, 4, 16, 64, 256), format (INT4/g128,
INT2/g64) and activation dtype (fp16, bf16) it times: each fused kernel path that serves that M, the
dispatcher's choice ("auto"), cuBLAS on a dense weight in the activation dtype (torch.matmul), and the
Triton dequantize kernel followed by cuBLAS. Every variant is first checked against the float32 torch
reference. Timing: CUDA graphs of one call per rotating input set (sets enough to overflow L2),
replayed and timed with CUDA events, median per call. Bandwidth counts the bytes a call must move
(packed weight + scales + zeros + x + y; the dense weight for cuBLAS) against a measured device copy.

`--smoke` runs the whole script on the CPU under the Triton interpreter with tiny shapes, to prove that
it works end to end (tests/kernels/test_bench_smoke.py); its timings mean nothing and it never writes
into docs/.
"""

from __future__ import annotations

import os
import sys

if "--smoke" in sys.argv:  # must precede the first import of triton
    os.environ["TRITON_INTERPRET"] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from bitsmith.kernels import reference  # noqa: E402
from bitsmith.kernels.dispatch import choose_path, quant_matmul, run_path  # noqa: E402
from bitsmith.kernels.pack import pack_codes  # noqa: E402
from bitsmith.kernels.triton_utils import m_bucket, tuned_configs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "docs" / "benchmarks" / "kernels.md"

LLAMA3_8B = [(4096, 4096, "q_proj/o_proj"), (1024, 4096, "k_proj/v_proj"), (14336, 4096, "gate/up_proj"),
             (4096, 14336, "down_proj")]
SMOKE_SHAPES = [(40, 200, "tiny, odd K")]
MS = [1, 4, 16, 64, 256]
SMOKE_MS = [1, 16, 80]
FORMATS = {"int4/g128": (4, 128), "int2/g64": (2, 64)}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
TOL = {torch.float16: 3e-3, torch.bfloat16: 2e-2, torch.float32: 1e-5}
ROTATE_BYTES = 256 << 20  # per timed variant, more than 4x the L2 of an H100 (50 MB)

# Targets the real run is judged against (H100): (description, check(rows) -> (ok, detail)).
TARGETS_TEXT = [
    "M=1 INT4/g128 fp16 on 4096x14336 (either reading): >= 3.0x cuBLAS fp16 and >= 75% of copy bandwidth",
    "M=1 INT2/g64 fp16 on 4096x14336 (either reading): >= 4.5x cuBLAS fp16",
    "M=16 INT4/g128 fp16 on 4096x14336 (either reading): >= 2.5x cuBLAS fp16",
    "M >= 256, every shape, format and dtype: auto no slower than 1.15x cuBLAS",
]


def paths_for(m: int) -> list[str]:
    """The fused paths worth timing at M rows (each serves any M; these are their intended ranges)."""
    out = []
    if m <= 4:
        out.append("gemv")
    if m <= 256:
        out.append("splitk")
    if m >= 16:
        out.append("gemm")
    return out


class Timer:
    """Median time per call of a list of calls (one per rotating input set)."""

    def __init__(self, device: torch.device, reps: int) -> None:
        self.device, self.reps = device, reps

    def __call__(self, calls: list) -> tuple[float, str]:
        if self.device.type != "cuda":  # the interpreter: nothing to warm up, nothing worth measuring well
            samples = []
            for _ in range(self.reps):
                t0 = time.perf_counter()
                for call in calls:
                    call()
                samples.append((time.perf_counter() - t0) / len(calls))
            return statistics.median(samples) * 1e6, "cpu-wallclock"
        for call in calls:  # warm-up: compilation, autotuning, allocations
            call()
        torch.cuda.synchronize()
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for call in calls:
                    call()
            graph.replay()
            run, mode = graph.replay, "cuda-graph"
        except Exception:  # a variant that cannot be captured: time it eagerly instead
            torch.cuda.synchronize()

            def run() -> None:
                for call in calls:
                    call()

            mode = "eager"
        torch.cuda.synchronize()
        samples = []
        for _ in range(self.reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) * 1e3 / len(calls))
        return statistics.median(samples), mode


def copy_bandwidth(device: torch.device, timer: Timer) -> float:
    """Device-to-device copy rate in GB/s, counting bytes read plus bytes written."""
    n = (1 << 28) if device.type == "cuda" else (1 << 20)
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    us, _ = timer([lambda: dst.copy_(src)])
    return 2 * src.numel() * src.element_size() / (us * 1e-6) / 1e9


def random_weight(n: int, k: int, bits: int, group: int, device: torch.device, gen: torch.Generator):
    """Random codes, positive scales and fractional zeros (fp16), as a quantizer would produce."""
    codes = torch.randint(0, 1 << bits, (n, k), generator=gen, device=device)
    groups = math.ceil(k / group)
    top = (1 << bits) - 1
    scales = ((torch.rand(groups, n, generator=gen, device=device) * 1.5 + 0.25) / top).half()
    zeros = (torch.rand(groups, n, generator=gen, device=device) * top).half()
    return pack_codes(codes, bits), scales, zeros


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64."""
    return float((out.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30))


def bench_case(n, k, m, fmt, dtype_name, device, timer, gen) -> dict:
    """Time every variant for one (shape, M, format, dtype); returns a row of results."""
    bits, group = FORMATS[fmt]
    dtype = DTYPES[dtype_name]
    q, s, z = random_weight(n, k, bits, group, device, gen)
    x0 = torch.randn(m, k, generator=gen, device=device).to(dtype)
    ref = reference.matmul(x0.float(), q, s, z, bits, group, k)
    dense0 = reference.dequantize(q, s, z, bits, group, k).to(dtype)
    act_bytes = (m * k + m * n) * x0.element_size()
    quant_bytes = q.numel() * 4 + s.numel() * 2 + z.numel() * 2 + act_bytes
    dense_bytes = n * k * x0.element_size() + act_bytes

    def sets(per_call_bytes: int) -> int:
        return 1 if device.type != "cuda" else max(2, min(64, math.ceil(ROTATE_BYTES / per_call_bytes)))

    row = {"N": n, "K": k, "M": m, "format": fmt, "dtype": dtype_name, "auto_path": choose_path(m, device, bits, group),
           "bytes_quant": quant_bytes, "bytes_dense": dense_bytes, "variants": {}}
    variants = {"cublas": None, "deq+mm": "dense", "auto": "auto"}
    for path in paths_for(m):
        variants[path] = path
    for name, path in variants.items():
        if name == "cublas":
            count = sets(dense_bytes)
            weights = [dense0] + [dense0.clone() for _ in range(count - 1)]
        else:
            count = sets(quant_bytes)
            weights = [(q, s, z)] + [(q.clone(), s.clone(), z.clone()) for _ in range(count - 1)]
        xs = [x0] + [torch.randn(m, k, generator=gen, device=device).to(dtype) for _ in range(count - 1)]
        outs = [torch.full((m, n), float("nan"), dtype=dtype, device=device) for _ in range(count)]

        def make_call(i, name=name, path=path, weights=weights, xs=xs, outs=outs):
            if name == "cublas":
                return lambda: torch.matmul(xs[i], weights[i].t(), out=outs[i])
            wq, ws, wz = weights[i]
            if path == "auto":
                return lambda: quant_matmul(xs[i], wq, ws, wz, bits, group, k, out=outs[i])
            return lambda: run_path(path, xs[i], wq, ws, wz, bits, group, k, out=outs[i])

        calls = [make_call(i) for i in range(count)]
        entry = {}
        try:
            calls[0]()
            err = rel_err(outs[0].float(), ref)
            entry["rel_err"] = err
            entry["correct"] = bool(err < TOL[dtype])
            us, mode = timer(calls)
            nbytes = dense_bytes if name == "cublas" else quant_bytes
            entry.update(us=us, mode=mode, gbps=nbytes / (us * 1e-6) / 1e9)
        except Exception as exc:  # keep going; the report shows the failure
            entry.update(correct=False, error=f"{type(exc).__name__}: {exc}"[:300])
        row["variants"][name] = entry
        del weights, xs, outs, calls
    picked = tuned_configs().get(("path", m_bucket(m), n, k, bits, group, dtype, str(x0.device)))
    if picked:  # the dispatcher timed the eligible paths for this shape and kept the fastest
        row["auto_path"] = picked["path"]
    cublas = row["variants"]["cublas"].get("us")
    for entry in row["variants"].values():
        if cublas and entry.get("us"):
            entry["speedup_vs_cublas"] = cublas / entry["us"]
    return row


def _fmt(v, spec: str, missing: str = "–") -> str:
    return missing if v is None else format(v, spec)


def evaluate_targets(rows: list[dict]) -> list[tuple[str, str]]:
    """Check the judged targets against the rows (fp16 cuBLAS as the baseline, 'auto' as our kernel)."""

    def find(m, fmt, shapes):
        return [r for r in rows if r["M"] == m and r["format"] == fmt and r["dtype"] == "fp16"
                and (r["N"], r["K"]) in shapes]

    big = {(4096, 14336), (14336, 4096)}
    results = []

    def verdict(text, checks):
        if not checks:
            results.append((text, "not measured"))
            return
        ok = all(c[0] for c in checks)
        results.append((text, ("PASS" if ok else "FAIL") + ": " + "; ".join(c[1] for c in checks)))

    checks = []
    for r in find(1, "int4/g128", big):
        a = r["variants"]["auto"]
        sp, pct = a.get("speedup_vs_cublas"), a.get("pct_copy_bw")
        checks.append((bool(sp and sp >= 3.0 and pct and pct >= 75),
                       f"{r['N']}x{r['K']}: {_fmt(sp, '.2f')}x, {_fmt(pct, '.0f')}% BW"))
    verdict(TARGETS_TEXT[0], checks)
    checks = []
    for r in find(1, "int2/g64", big):
        sp = r["variants"]["auto"].get("speedup_vs_cublas")
        checks.append((bool(sp and sp >= 4.5), f"{r['N']}x{r['K']}: {_fmt(sp, '.2f')}x"))
    verdict(TARGETS_TEXT[1], checks)
    checks = []
    for r in find(16, "int4/g128", big):
        sp = r["variants"]["auto"].get("speedup_vs_cublas")
        checks.append((bool(sp and sp >= 2.5), f"{r['N']}x{r['K']}: {_fmt(sp, '.2f')}x"))
    verdict(TARGETS_TEXT[2], checks)
    checks = []
    for r in rows:
        if r["M"] >= 256:
            sp = r["variants"]["auto"].get("speedup_vs_cublas")
            ok = bool(sp and 1 / sp <= 1.15)
            if not ok:
                checks.append((False, f"{r['N']}x{r['K']} {r['format']} {r['dtype']}: {_fmt(sp, '.2f')}x"))
            else:
                checks.append((True, ""))
    if checks:
        bad = [c for c in checks if not c[0]]
        results.append((TARGETS_TEXT[3], "PASS" if not bad else "FAIL: " + "; ".join(c[1] for c in bad)))
    else:
        results.append((TARGETS_TEXT[3], "not measured"))
    return results


def render_markdown(meta: dict, rows: list[dict]) -> str:
    """The report: environment, copy bandwidth, targets, a summary table and every path's time."""
    lines = ["# Low-bit matmul kernels: benchmark", ""]
    if meta["smoke"]:
        lines += ["**SMOKE RUN: Triton interpreter on the CPU with tiny shapes. The timings below are "
                  "meaningless; this only proves the script runs end to end.**", ""]
    lines += [f"- Command: `{meta['command']}`", f"- Date (UTC): {meta['date']}", f"- Device: {meta['device']}",
              f"- torch {meta['torch']}, triton {meta['triton']}, CUDA {meta['cuda']}",
              f"- Measured device copy bandwidth (read + write): {meta['copy_gbps']:.0f} GB/s",
              "- Shapes are N x K = out_features x in_features; times are microseconds per call (median; "
              f"{meta['timing']}); GB/s counts packed weight + scales + zeros + x + y (dense weight for "
              "cuBLAS); x cuBLAS = cuBLAS time / this time, cuBLAS in the same activation dtype.", ""]
    lines += ["## Targets", "", "| target | result |", "| --- | --- |"]
    lines += [f"| {t} | {r} |" for t, r in meta["targets"]]
    lines += ["", "## Summary (the dispatcher's path)", "",
              "| N x K | M | format | dtype | path | cuBLAS us | deq+mm us | auto us | x cuBLAS | GB/s | % copy BW |",
              "| --- | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        v = r["variants"]
        a = v["auto"]
        lines.append(
            f"| {r['N']}x{r['K']} | {r['M']} | {r['format']} | {r['dtype']} | {r['auto_path']} | "
            f"{_fmt(v['cublas'].get('us'), '.1f')} | {_fmt(v['deq+mm'].get('us'), '.1f')} | "
            f"{_fmt(a.get('us'), '.1f')} | {_fmt(a.get('speedup_vs_cublas'), '.2f')} | "
            f"{_fmt(a.get('gbps'), '.0f')} | {_fmt(a.get('pct_copy_bw'), '.0f')} |")
    lines += ["", "## Every path", "",
              "| N x K | M | format | dtype | variant | us | x cuBLAS | GB/s | % copy BW | rel. error | ok |",
              "| --- | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        for name, e in r["variants"].items():
            ok = "yes" if e.get("correct") else ("ERROR " + e["error"] if "error" in e else "WRONG")
            lines.append(
                f"| {r['N']}x{r['K']} | {r['M']} | {r['format']} | {r['dtype']} | {name} | "
                f"{_fmt(e.get('us'), '.1f')} | {_fmt(e.get('speedup_vs_cublas'), '.2f')} | "
                f"{_fmt(e.get('gbps'), '.0f')} | {_fmt(e.get('pct_copy_bw'), '.0f')} | "
                f"{_fmt(e.get('rel_err'), '.1e')} | {ok} |")
    lines += ["", "Raw numbers (and the kernel configurations the autotuner chose) are in the JSON written "
              "with `--json-out`.", ""]
    return "\n".join(lines)


def _write(path: Path, text: str) -> None:
    """Write through a temporary file and os.replace, so a crash never leaves half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="CPU interpreter, tiny shapes, meaningless timings")
    p.add_argument("--out", type=Path, help=f"markdown report (default {DEFAULT_OUT.relative_to(REPO)})")
    p.add_argument("--json-out", type=Path, help="raw numbers as JSON")
    p.add_argument("--shapes", help="comma-separated NxK list (default: Llama-3-8B's four)")
    p.add_argument("--ms", help="comma-separated M list (default 1,4,16,64,256)")
    p.add_argument("--formats", help=f"comma-separated subset of {','.join(FORMATS)}")
    p.add_argument("--dtypes", help="comma-separated subset of fp16,bf16")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per variant")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.smoke:
        device = torch.device("cpu")
        out = args.out or Path(tempfile.gettempdir()) / "bitsmith_bench_kernels_smoke.md"
        if (REPO / "docs").resolve() in out.resolve().parents:
            print("--smoke never writes into docs/: give --out elsewhere", file=sys.stderr)
            return 2
        shapes, ms, dtypes = SMOKE_SHAPES, SMOKE_MS, ["fp16"]
        reps = args.reps or 1
    else:
        if not torch.cuda.is_available():
            print("needs a CUDA GPU (use --smoke to check the script on a CPU)", file=sys.stderr)
            return 2
        device = torch.device("cuda")
        out = args.out or DEFAULT_OUT
        shapes, ms, dtypes = LLAMA3_8B, MS, list(DTYPES)
        reps = args.reps or 50
    if args.shapes:
        shapes = [(int(a), int(b), "") for a, b in (s.lower().split("x") for s in args.shapes.split(","))]
    if args.ms:
        ms = [int(v) for v in args.ms.split(",")]
    if args.dtypes:
        dtypes = args.dtypes.split(",")
    formats = args.formats.split(",") if args.formats else list(FORMATS)

    import triton

    timer = Timer(device, reps)
    meta = {
        "smoke": args.smoke,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (Triton interpreter)",
        "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
        "timing": "CPU wall clock" if device.type != "cuda" else "CUDA graphs + events",
    }
    meta["copy_gbps"] = copy_bandwidth(device, timer)
    print(f"# {meta['device']}: copy bandwidth {meta['copy_gbps']:.0f} GB/s", flush=True)
    if args.smoke:
        print("# SMOKE RUN: interpreter on the CPU, timings are meaningless", flush=True)

    gen = torch.Generator(device=device).manual_seed(args.seed)
    rows, failures = [], 0
    for n, k, _ in shapes:
        for fmt in formats:
            for dtype_name in dtypes:
                for m in ms:
                    row = bench_case(n, k, m, fmt, dtype_name, device, timer, gen)
                    for e in row["variants"].values():
                        if e.get("gbps"):
                            e["pct_copy_bw"] = 100 * e["gbps"] / meta["copy_gbps"]
                        failures += not e.get("correct", False)
                    rows.append(row)
                    a, c = row["variants"]["auto"], row["variants"]["cublas"]
                    print(f"{n}x{k} M={m} {fmt} {dtype_name}: auto({row['auto_path']}) "
                          f"{_fmt(a.get('us'), '.1f')} us, cuBLAS {_fmt(c.get('us'), '.1f')} us, "
                          f"x{_fmt(a.get('speedup_vs_cublas'), '.2f')}", flush=True)
                    if args.json_out:  # kept current so that a run cut short still leaves its numbers
                        _write(args.json_out, json.dumps({"meta": meta, "rows": rows}, indent=1))
    meta["targets"] = evaluate_targets(rows) if not args.smoke else [
        (t, "not evaluated (smoke run)") for t in TARGETS_TEXT]
    meta["tuned_configs"] = {repr(key): cfg for key, cfg in tuned_configs().items()}
    _write(out, render_markdown(meta, rows))
    if args.json_out:
        _write(args.json_out, json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {out}" + (f" and {args.json_out}" if args.json_out else ""))
    for t, r in meta["targets"]:
        print(f"target: {t}: {r}")
    if failures:
        print(f"{failures} variant(s) failed their correctness check or did not run", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
