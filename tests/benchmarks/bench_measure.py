"""How well the sensitivity measurement predicts the truth, on SmolLM2-135M-Instruct.

For a random sample of (layer, format) pairs: the predicted loss increase (diagonal Fisher, from
engine/search/measure.py) against the measured one (that layer alone quantized, every other layer
in full precision, mean loss on held-out windows). Reports Spearman and Pearson correlation and the
wall time of the measurement. Run by hand:

    BITSMITH_HOME=/tmp/bsh .venv/bin/python tests/benchmarks/bench_measure.py --out docs/benchmarks/measure.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import random
import time
from pathlib import Path

import numpy as np
import torch


def _rank(a: list[float]) -> np.ndarray:
    return np.argsort(np.argsort(np.asarray(a)))


def main() -> None:
    """Measure, sample pairs, compare, write the markdown report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=16, help="calibration windows for the measurement")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--method", default="hqq", choices=("rtn", "hqq"))
    ap.add_argument("--pairs", type=int, default=40, help="(layer, format) pairs checked against the truth")
    ap.add_argument("--eval-windows", type=int, default=8, help="held-out windows of --seq-len for the truth")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="markdown report path (default: print only)")
    args = ap.parse_args()

    from bitsmith.engine.data import stdlib_text, token_windows
    from bitsmith.engine.model import find_blocks, load_model
    from bitsmith.engine.quant.quantize import dequantize_weight, quantize_weight
    from bitsmith.engine.search.measure import measure_model

    torch.manual_seed(args.seed)
    model, tok = load_model("bundled")
    calib = token_windows(tok(stdlib_text("calib"))["input_ids"], args.samples, args.seq_len, seed=args.seed)
    t0 = time.perf_counter()
    m = measure_model(model, calib, ("int4_g128", "int2_g64"), args.method)
    measure_s = time.perf_counter() - t0
    held = torch.tensor(
        token_windows(tok(stdlib_text("heldout"))["input_ids"], args.eval_windows, args.seq_len, seed=args.seed + 1)
    )

    @torch.no_grad()
    def loss() -> float:
        return float(model(held, labels=held).loss)

    base = loss()
    linears = {f"{b.name}.{n}": lin for b in find_blocks(model) for n, lin in b.linears.items()}
    rng = random.Random(args.seed)
    pairs = rng.sample([(layer, f) for layer in m.layers for f in m.formats], args.pairs)
    rows = []
    for layer, fmt in pairs:
        lin = linears[layer.name]
        w0 = lin.weight.data.clone()
        lin.weight.data = dequantize_weight(quantize_weight(w0, fmt, method=args.method))
        rows.append((layer.name, fmt, layer.errors[fmt], loss() - base))
        lin.weight.data = w0
    pred = [r[2] for r in rows]
    true = [r[3] for r in rows]
    spearman = float(np.corrcoef(_rank(pred), _rank(true))[0, 1])
    pearson = float(np.corrcoef(pred, true)[0, 1])
    per_fmt = {}
    for fmt in m.formats:
        sel = [r for r in rows if r[1] == fmt]
        if len(sel) > 2:
            per_fmt[fmt] = float(np.corrcoef(_rank([r[2] for r in sel]), _rank([r[3] for r in sel]))[0, 1])
    report = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__, "samples": args.samples, "seq_len": args.seq_len, "method": args.method,
        "measure_seconds": round(measure_s, 1), "base_loss": base, "base_ppl": math.exp(base),
        "spearman": spearman, "pearson": pearson, "spearman_per_format": per_fmt, "pairs": rows,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "pairs"}, indent=1))
    if args.out:
        lines = [
            "# Sensitivity measurement vs truth (SmolLM2-135M-Instruct)", "",
            f"Date {report['date']}; machine: {report['machine']}; torch {report['torch']}.", "",
            "Command:", "", "```", "BITSMITH_HOME=/tmp/bsh .venv/bin/python tests/benchmarks/bench_measure.py "
            f"--samples {args.samples} --seq-len {args.seq_len} --method {args.method} --pairs {args.pairs} "
            f"--eval-windows {args.eval_windows} --out {args.out}", "```", "",
            "Signal: diagonal empirical Fisher, predicted Δloss = ½·Σ F⊙ΔW² (engine/search/measure.py).",
            "Truth: mean held-out loss increase with only that layer quantized "
            f"({args.eval_windows} × {args.seq_len} tokens of stdlib:heldout).", "",
            f"- measurement wall time: {report['measure_seconds']} s ({args.samples} × {args.seq_len} tokens, "
            f"{len(m.layers)} linears × {len(m.formats)} formats)",
            f"- Spearman rank correlation over {args.pairs} pairs: **{spearman:.3f}**; Pearson {pearson:.3f}",
            "- Spearman within one format: " + ", ".join(f"{k} {v:.3f}" for k, v in per_fmt.items()), "",
            "| layer | format | predicted Δloss | measured Δloss |", "| --- | --- | ---: | ---: |",
            *[f"| {n} | {f} | {p:.5f} | {t:.5f} |" for n, f, p, t in rows],
            "", "Raw JSON:", "", "```json", json.dumps(report, indent=1), "```", "",
        ]
        Path(args.out).write_text("\n".join(lines))


if __name__ == "__main__":
    main()
