"""Benchmark block-wise calibration on the bundled SmolLM2-135M-Instruct (run by hand, never by CI).

Held-out perplexity (stdlib docstrings, held-out split, disjoint windows) and wall time of:
full precision, HQQ without calibration, and SignRound calibration at the CPU presets, for all-INT4/g128,
all-INT2/g64 and a layer-mixed layout at a bpw budget (Fisher-measured sensitivity + knapsack search).

    BITSMITH_HOME=/tmp/bsh_calib .venv/bin/python tests/benchmarks/bench_calibrate.py --threads 1 \\
        --runs fp hqq:int4_g128 demo:int4_g128 default:int4_g128 --out /tmp/bench_calib.jsonl

A run is METHOD:LAYOUT with METHOD fp | hqq | rtn | <preset name> and LAYOUT a format name or
mix<bpw> (e.g. mix3.0). Each run loads the model afresh; "seconds" (wall) and "cpu_s" (CPU time of
this process, all threads) cover everything a quantize job does after loading (tokenizing calibration
text, measuring for a mix, calibrating), not the evaluation. On a shared machine the wall time depends
on the other jobs (the record has the load average); with --threads 1, cpu_s is about the wall time the
same run takes on an otherwise idle core. Results are printed and appended as JSON lines to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

from bitsmith.engine.calibrate.config import CalibConfig
from bitsmith.engine.calibrate.pipeline import calibrate_model, calibration_windows, quantize_model_rtn
from bitsmith.engine.data import stdlib_text, token_windows
from bitsmith.engine.eval.perplexity import perplexity
from bitsmith.engine.model import find_blocks, load_model
from bitsmith.engine.quant.bpw import layer_bits
from bitsmith.engine.quant.spec import parse_spec


def block_linears(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """Every linear inside a decoder block, by qualified name (lm_head and embeddings stay 16-bit)."""
    return {f"{b.name}.{n}": lin for b in find_blocks(model) for n, lin in b.linears.items()}


def make_layout(model: torch.nn.Module, tok, name: str, seed: int) -> dict[str, str]:
    """All linears in one format, or a mix<bpw> layout searched on Fisher-measured sensitivities."""
    linears = block_linears(model)
    if not name.startswith("mix"):
        parse_spec(name)
        return dict.fromkeys(linears, name)
    from bitsmith.engine.search.layout import search_layout
    from bitsmith.engine.search.measure import measure_model

    budget = float(name[3:])
    ids = tok(stdlib_text("calib")[:400_000])["input_ids"]
    windows = token_windows(ids, 16, 256, seed=seed)
    measured = measure_model(model, windows, formats=("int4_g128", "int2_g64"), method="hqq")
    return dict(search_layout(measured.choices(), budget).formats)


def layout_bpw(model: torch.nn.Module, layout: dict[str, str]) -> float:
    """Bits per weight over the quantized linears (codes + statistics, exact storage accounting)."""
    mods = dict(model.named_modules())
    total = weights = 0
    for n, fmt in layout.items():
        lin = mods[n]
        lb = layer_bits(lin.out_features, lin.in_features, parse_spec(fmt))
        total += lb.total
        weights += lb.weights
    return total / weights


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", default=["fp", "hqq:int4_g128", "demo:int4_g128", "default:int4_g128"])
    p.add_argument("--eval-tokens", type=int, default=16384)
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default="")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override preset settings")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}

    _, tok = load_model("bundled")
    held = torch.tensor(tok(stdlib_text("heldout"))["input_ids"][: args.eval_tokens])
    for run in args.runs:
        method, _, layout_name = run.partition(":")
        load0 = time.monotonic()
        model, tok = load_model("bundled")
        load_s = time.monotonic() - load0
        t0, c0 = time.monotonic(), time.process_time()
        load_avg = os.getloadavg()
        record: dict = {"run": run, "load_s": round(load_s, 1)}
        if method != "fp":
            layout = make_layout(model, tok, layout_name, args.seed)
            record["bpw"] = round(layout_bpw(model, layout), 4)
            if method in ("hqq", "rtn"):
                quantize_model_rtn(model, layout, method=method)
            else:
                config = CalibConfig.preset(method, "cpu", seed=args.seed, **overrides)
                windows = calibration_windows(tok, config)
                summary = calibrate_model(model, windows, layout, config, device="cpu")
                record["config"] = {k: v for k, v in config.to_dict().items() if v is not None}
                record["block_loss_before"] = [round(b.loss_before, 5) for b in summary.blocks]
                record["block_loss_after"] = [round(b.loss_after, 5) for b in summary.blocks]
                record["kept_start"] = sum(b.kept_start for b in summary.blocks)
        record["seconds"] = round(time.monotonic() - t0, 1)
        record["cpu_s"] = round(time.process_time() - c0, 1)
        e0 = time.monotonic()
        res = perplexity(model, held, window=args.window)
        record.update(
            ppl=round(res.ppl, 3),
            eval_tokens=res.tokens,
            window=res.window,
            eval_s=round(time.monotonic() - e0, 1),
            loadavg_start=[round(x, 2) for x in load_avg],
            loadavg_end=[round(x, 2) for x in os.getloadavg()],
            torch_threads=torch.get_num_threads(),
            machine=f"{platform.node()} {os.cpu_count()} cpus",
            date=time.strftime("%Y-%m-%d %H:%M:%S"),
        )
        line = json.dumps(record)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
