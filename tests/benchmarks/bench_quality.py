"""Quality benchmark: Bitsmith's `quantize` pipeline against RTN, HQQ and AutoRound (run by hand, never by CI).

On the bundled SmolLM2-135M-Instruct (the GGUF dequantized to fp32 is the full-precision reference), for
each bpw budget: held-out perplexity (stdlib docstrings, the held-out split, disjoint windows) of

* bitsmith   the real pipeline, `python -m bitsmith.engine quantize SOURCE --bpw B --preset P --json`, in a
             subprocess with its own cold caches (measure, search, calibrate, evaluate, save); the saved
             folder is loaded back and evaluated here on the same tokens as every other model;
* rtn        round-to-nearest, asymmetric min-max with integer zero-points (engine/quant/rtn.py);
* hqq        the `hqq` package's Quantizer (half-quadratic zero/scale optimisation, fp16 zeros, axis=1);
* autoround  the `auto-round` package's SignRound, fp32 on the CPU, fed the very token windows Bitsmith's
             calibration uses and the same iterations / samples / sequence length / batch as its preset;

each peer at the same or a higher effective bpw than the budget (PEER_FORMATS), plus wall time.

    BITSMITH_HOME=/tmp/bq_home .venv/bin/python tests/benchmarks/bench_quality.py --threads 1 --preset demo \\
        --out docs/benchmarks/quality.jsonl --doc docs/benchmarks/quality.md

Results are appended to --out as JSON lines (a run already there is skipped unless --fresh, so a stopped
run resumes); --doc rewrites the generated part of the Markdown report from all of --out. --smoke runs the
same code on a tiny model folder (--source) in seconds: numbers meaningless, for the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_calibrate import block_linears, layout_bpw  # noqa: E402

from bitsmith.engine.data import load_text  # noqa: E402
from bitsmith.engine.eval.perplexity import perplexity  # noqa: E402
from bitsmith.engine.model import load_model  # noqa: E402
from bitsmith.engine.quant.store import FORMAT_VERSION  # noqa: E402

BUDGETS = (4.0, 3.0, 2.5, 2.2)
METHODS = ("fp", "bitsmith", "rtn", "hqq", "autoround")
PEERS = ("rtn", "hqq", "autoround")
LEGACY_FORMATS = ("int4_g128", "int2_g64")  # what Bitsmith rows without a "formats" field were searched over
TARGET_RATIO = {4.0: 1.06, 3.0: 1.5, 2.5: 3.0}
"""Issue 4's targets: quantized / full-precision perplexity at these budgets."""

PEER_FORMATS: dict[float, dict[str, tuple[int, int]]] = {
    4.0: {"rtn": (4, 128), "hqq": (4, 128), "autoround": (4, 128)},
    3.0: {"rtn": (3, 128), "hqq": (3, 128), "autoround": (3, 128)},
    2.5: {"rtn": (2, 32), "hqq": (2, 64), "autoround": (2, 32)},
    2.2: {"rtn": (2, 64), "hqq": (2, 128), "autoround": (2, 64)},
}
"""(bits, group size) of each peer per budget: the standard format nearest at or above the budget.

RTN and AutoRound store what GPTQ-format checkpoints store (int32-packed codes, fp16 scales, b-bit
integer zeros per group: engine/quant/bpw.py counts exactly that); HQQ stores fp16 scale and fp16 zero per
group, and packs 3-bit codes ten to an int32 (3.2 bits per weight)."""

MARK_BEGIN = "<!-- bench_quality: generated, do not edit by hand -->"
MARK_END = "<!-- bench_quality: end -->"


# -- effective bits per weight ---------------------------------------------------------------------
def gptq_bpw(model: torch.nn.Module, bits: int, group: int) -> float:
    """bpw of the GPTQ checkpoint format over the block linears: b-bit codes packed bit-contiguously (3-bit codes
    span words: 32 codes in 3 words), an fp16 scale and a b-bit integer zero per group of g inputs."""
    total = weights = 0
    for lin in block_linears(model).values():
        n, k = lin.weight.shape
        groups = -(-k // group)
        total += n * k * bits + groups * n * (16 + bits)
        weights += n * k
    return total / weights


def hqq_bpw(model: torch.nn.Module, bits: int, group: int) -> float:
    """bpw of HQQ's storage over the block linears: packed codes + fp16 scale + fp16 zero per group."""
    code_bits = 32 / 10 if bits == 3 else bits  # hqq's "3bit_32" packing: ten codes per int32
    total = weights = 0.0
    for lin in block_linears(model).values():
        n = lin.weight.numel()
        total += n * code_bits + (n // group) * 32
        weights += n
    return total / weights


def max_levels(model: torch.nn.Module, group: int) -> int:
    """Most distinct values in any row group of `group` inputs of a block linear: a check that every layer
    really was quantized (at most 2^bits), not silently left in full precision."""
    most = 0
    for lin in block_linears(model).values():
        w = lin.weight.detach()
        pad = (-w.shape[1]) % group
        if pad:  # repeat the row's last value: adds no new level
            w = torch.cat([w, w[:, -1:].expand(-1, pad)], dim=1)
        v = w.reshape(w.shape[0], -1, group).sort(dim=-1).values
        most = max(most, int(((v[..., 1:] != v[..., :-1]).sum(-1) + 1).max()))
    return most


# -- the peers, each changing `model` in place ------------------------------------------------------
@torch.no_grad()
def quantize_rtn(model: torch.nn.Module, bits: int, group: int) -> None:
    """Round-to-nearest: min-max range widened to contain 0, integer zero-points, fp16 scales."""
    from bitsmith.engine.quant.groups import group_view, to_grouped_stats
    from bitsmith.engine.quant.rtn import quantize_codes, rtn_stats
    from bitsmith.engine.quant.spec import QuantSpec

    spec = QuantSpec(bits=bits, group_size=group)
    for lin in block_linears(model).values():
        w = lin.weight.float()
        scales, zeros = rtn_stats(w, spec)
        scales = scales.half().float()  # as stored
        q = quantize_codes(w, scales, zeros, spec).float()
        n, k = w.shape
        deq = (group_view(q, group) - to_grouped_stats(zeros)) * to_grouped_stats(scales)
        lin.weight.copy_(deq.reshape(n, -1)[:, :k].to(lin.weight.dtype))


@torch.no_grad()
def quantize_hqq(model: torch.nn.Module, bits: int, group: int) -> None:
    """HQQ (pip `hqq`): Quantizer.quantize with its optimiser on the CPU in fp32, dequantized in place."""
    from hqq.core.quantize import Quantizer

    for lin in block_linears(model).values():
        w_q, meta = Quantizer.quantize(
            lin.weight.float(), nbits=bits, group_size=group, optimize=True, axis=1,
            compute_dtype=torch.float32, device="cpu",
        )
        meta["compute_dtype"] = torch.float32
        meta["scale"] = meta["scale"].half().float()  # as stored: fp16
        meta["zero"] = meta["zero"].half().float()
        lin.weight.copy_(Quantizer.dequantize(w_q, meta).to(lin.weight.dtype))


def quantize_autoround(
    model: torch.nn.Module, tok: Any, bits: int, group: int, windows: list[list[int]], calib: Any, seed: int
) -> dict:
    """AutoRound (pip `auto-round`) SignRound, fp32 on the CPU; the model ends up holding its fake-quantized weights."""
    from auto_round import AutoRound

    data = [torch.tensor([w]) for w in windows]
    ar = AutoRound(
        model, tok, bits=bits, group_size=group, sym=False, iters=calib.iters, nsamples=len(data),
        seqlen=len(windows[0]), batch_size=calib.batch_size, dataset=data, device_map="cpu", amp=False,
        seed=seed, enable_torch_compile=False,
    )
    out, _ = ar.quantize()
    if out is not model:  # the weights must be in the model we evaluate
        model.load_state_dict(out.state_dict())
    return {"iters": calib.iters, "nsamples": len(data), "seqlen": len(windows[0]), "batch_size": calib.batch_size,
            "lr": "1/iters (AutoRound's default)", "sym": False, "amp": False}


# -- Bitsmith through its command line ------------------------------------------------------------
def reuse_saved(out: Path, bpw: float, preset: str, formats: tuple[str, ...], seed: int,
                distill_epochs: int = 0) -> dict | None:
    """The job fields of a finished folder at `out` made by the same recipe (--reuse), or None.

    For a benchmark process that stopped after its quantize job had saved: the folder is evaluated instead of
    quantized again. Wall time is the job's own (bitsmith.json); the benchmark's CPU time was not recorded.
    """
    from bitsmith.engine.quant.store import FORMAT_VERSION, is_quantized_folder

    if not is_quantized_folder(out):
        return None
    meta = json.loads((out / "bitsmith.json").read_text())
    recipe, metrics = meta.get("recipe", {}), meta.get("metrics", {})
    same = (recipe.get("budget_bpw") == bpw and recipe.get("preset", {}).get("name") == preset
            and recipe.get("seed") == seed and meta.get("format_version") == FORMAT_VERSION
            and (not formats or tuple(recipe.get("preset", {}).get("formats", ())) == formats)
            and recipe.get("preset", {}).get("distill_epochs", 0) == distill_epochs)
    if not same:
        return None
    return {"command": f"(reused {out.name}: quantized by an earlier run of this benchmark)", "returncode": 0,
            "job_seconds": metrics.get("seconds"), "job_cpu_s": None, "stages": [], "reused": True,
            "quantize_seconds": None, "job_ppl": metrics.get("heldout_ppl"),
            "job_ppl_fp": metrics.get("heldout_ppl_fp")}


def run_bitsmith(source: str, bpw: float, preset: str, out: Path, home: Path, threads: int, seed: int,
                 formats: tuple[str, ...] = (), distill_epochs: int | None = None) -> dict:
    """Run `bitsmith quantize` in a subprocess with cold caches; its result event, stage times and CPU time."""
    shutil.rmtree(out, ignore_errors=True)
    # a fresh home per run: every budget pays its own measurement, as a first run would; only the GGUF
    # conversion (done once per install) is shared
    job_home = Path(tempfile.mkdtemp(prefix="home-", dir=out.parent))
    (job_home / "cache").mkdir()
    if (home / "cache" / "gguf").is_dir():
        (job_home / "cache" / "gguf").symlink_to((home / "cache" / "gguf").resolve())
    env = {**os.environ, "BITSMITH_HOME": str(job_home), "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "bitsmith.engine", "quantize", source, "--bpw", f"{bpw:g}", "--out", str(out),
           "--preset", preset, "--calib", "stdlib", "--eval-text", "stdlib:heldout", "--seed", str(seed), "--json"]
    if formats:
        cmd[-1:-1] = ["--formats", ",".join(formats)]
    if distill_epochs is not None:
        cmd[-1:-1] = ["--distill-epochs", str(distill_epochs)]
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    stages: list[list] = []
    events: list[dict] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        for line in proc.stdout:
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            if event.get("event") == "stage":
                stages.append([event["stage"], round(time.monotonic() - t0, 1)])
            if event.get("event") in ("result", "error", "metric", "done"):
                events.append(event)
        stderr = proc.stderr.read()
    shutil.rmtree(job_home, ignore_errors=True)
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.monotonic() - t0
    result = next((e for e in events if e.get("event") == "result"), None)
    record: dict[str, Any] = {
        "command": " ".join(cmd[1:]), "returncode": proc.returncode, "job_seconds": round(wall, 1),
        "job_cpu_s": round((cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime), 1),
        "stages": stages,
    }
    if result is None:
        error = next((e for e in events if e.get("event") == "error"), None)
        record["error"] = (error or {}).get("message") or stderr.strip()[-1500:] or "no result event"
        return record
    ends = {name: t for name, t in stages}
    record["quantize_seconds"] = round(ends.get("evaluate", wall) - ends.get("measure", 0.0), 1)
    record.update(job_ppl=result["ppl"], job_ppl_fp=result["ppl_fp"], job_bpw=result["bpw"])
    return record


def bitsmith_min_bpw(model: torch.nn.Module, formats: tuple[str, ...]) -> float:
    """About the smallest layout these formats allow: every block linear in the cheapest one."""
    return min(layout_bpw(model, dict.fromkeys(block_linears(model), f)) for f in formats)


def bitsmith_distill_epochs(args: argparse.Namespace) -> int:
    """Bitsmith's end-to-end distillation epochs: --distill-epochs, else the preset's."""
    from bitsmith.engine.pipeline.presets import get_preset

    return get_preset(args.preset).distill_epochs if args.distill_epochs is None else args.distill_epochs


def bitsmith_formats(args: argparse.Namespace) -> tuple[str, ...]:
    """The candidate formats of Bitsmith's search: --formats, else the preset's."""
    from bitsmith.engine.pipeline.presets import get_preset

    chosen = [f.strip() for f in (args.formats or "").split(",") if f.strip()]
    return tuple(chosen) or tuple(get_preset(args.preset).formats)


# -- the benchmark --------------------------------------------------------------------------------
def machine() -> str:
    """CPU, cores, memory and library versions, in one line."""
    from bitsmith.engine.hardware import detect_cpu

    cpu = detect_cpu()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = []
    for dist in ("torch", "transformers", "hqq", "auto-round"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions.append(f"{dist} {importlib.metadata.version(dist)}")
    return (f"{cpu.model} ({cpu.arch}), {cpu.physical_cores} cores / {cpu.logical_cores} threads, {mem:.0f} GiB RAM, "
            f"{platform.system()}; Python {platform.python_version()}; " + ", ".join(versions))


def run_key(rec: dict) -> tuple:
    """What makes two records the same measurement (used to skip finished runs)."""
    formats = tuple(rec.get("formats") or LEGACY_FORMATS) if rec["method"] == "bitsmith" else None
    return (rec["model"], rec["method"], rec.get("budget"), rec.get("preset"), rec["eval_tokens"], rec["window"],
            rec["seed"], formats, rec.get("distill_epochs", 0) if rec["method"] == "bitsmith" else None)


def read_records(path: Path | None) -> list[dict]:
    """All JSON records of a results file (missing file: none)."""
    if path is None or not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def append_record(path: Path | None, rec: dict) -> None:
    """Print a record and append it to the results file."""
    line = json.dumps(rec, default=str)
    print(line, flush=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def _available(method: str) -> str | None:
    """None if a method can run here, else why not."""
    module = {"hqq": "hqq", "autoround": "auto_round"}.get(method)
    if module and importlib.util.find_spec(module) is None:
        return f"the {method} package is not installed (pip install {'hqq' if method == 'hqq' else 'auto-round'})"
    return None


def _preset_of(method: str, preset: str) -> str | None:
    """The preset a method's result depends on: Bitsmith's, and AutoRound's effort copies it; RTN/HQQ: none."""
    return preset if method in ("bitsmith", "autoround") else None


def measure_one(args: argparse.Namespace, method: str, budget: float | None, ctx: dict) -> dict:
    """One run: quantize a fresh copy of the model by `method` at `budget`, then held-out perplexity."""
    rec: dict[str, Any] = {
        "model": args.source, "method": method, "budget": budget, "preset": _preset_of(method, args.preset),
        "eval_tokens": args.eval_tokens, "window": args.window, "seed": args.seed, "smoke": args.smoke,
    }
    why = _available(method)
    if why:
        return {**rec, "status": "unavailable", "error": why}
    model, tok = load_model(args.source)
    t0, c0 = time.monotonic(), time.process_time()
    loadavg = os.getloadavg()
    try:
        if method == "bitsmith":
            target = budget
            formats = bitsmith_formats(args)
            rec["formats"] = list(formats)
            rec["format_version"] = FORMAT_VERSION
            low = bitsmith_min_bpw(model, formats)
            if budget < low:  # below the cheapest layout: run at the smallest layout there is, and say so
                target = float(f"{low + 5e-5:.4f}")
                rec["note"] = f"{budget:g} bpw is below the smallest layout ({low:.4f} bpw): ran at that"
            rec["ran_at_bpw"] = target
            distill = bitsmith_distill_epochs(args)
            if distill:
                rec["distill_epochs"] = distill
                rec["distill_target"] = current_distill_target()
            name = f"bitsmith-{args.preset}-{budget:g}-{'-'.join(formats)}" + (f"-d{distill}" if distill else "")
            out = Path(args.work) / name
            out.parent.mkdir(parents=True, exist_ok=True)
            wanted = tuple(args.formats.split(",")) if args.formats else ()
            reused = reuse_saved(out, target, args.preset, formats, args.seed, distill) if args.reuse else None
            rec.update(reused or run_bitsmith(args.source, target, args.preset, out, Path(args.home), args.threads,
                                              args.seed, wanted, args.distill_epochs))
            if "error" in rec:
                return {**rec, "status": "error"}
            from bitsmith.engine.quant.store import load_quantized, model_bpw

            saved = load_quantized(out)
            model = saved.model
            rec["bpw"] = model_bpw(model)["quantized_linears"]
            counts: dict[str, int] = {}
            for fmt in saved.meta["layout"].values():
                counts[fmt] = counts.get(fmt, 0) + 1
            rec["format"] = " + ".join(f"{n}× {f}" for f, n in sorted(counts.items(), reverse=True))
            if distill:
                rec["format"] += f"; then distilled end to end ({distill} epochs)"
            rec["bpw_counting"] = "exact storage of the saved folder: packed codes + fp16 scales + integer zeros"
        elif method != "fp":
            bits, group = PEER_FORMATS[budget][method]
            rec["format"] = f"W{bits}/g{group}"
            if method == "rtn":
                rec["bpw"] = gptq_bpw(model, bits, group)
                rec["bpw_counting"] = f"{bits}-bit codes + fp16 scale + {bits}-bit integer zero per group"
                quantize_rtn(model, bits, group)
            elif method == "hqq":
                rec["bpw"] = hqq_bpw(model, bits, group)
                rec["bpw_counting"] = "codes as hqq packs them + fp16 scale + fp16 zero per group"
                quantize_hqq(model, bits, group)
            else:
                rec["bpw"] = gptq_bpw(model, bits, group)
                rec["bpw_counting"] = f"{bits}-bit codes + fp16 scale + {bits}-bit integer zero per group (GPTQ format)"
                rec["calibration"] = quantize_autoround(
                    model, tok, bits, group, ctx["windows"], ctx["calib"], args.seed
                )
            if method != "hqq":  # hqq's groups run across rows (axis=1 on the flattened weight)
                rec["levels_max"] = max_levels(model, group)
    except Exception as exc:  # a peer that fails is a result, not the end of the benchmark
        return {**rec, "status": "error", "error": f"{type(exc).__name__}: {exc}"[:1500]}
    if method != "bitsmith":
        rec["seconds"] = round(time.monotonic() - t0, 1)
        rec["cpu_s"] = round(time.process_time() - c0, 1)
    e0 = time.monotonic()
    res = perplexity(model, ctx["held"], window=args.window)
    rec.update(
        status="ok", ppl=res.ppl, scored_tokens=res.tokens, eval_s=round(time.monotonic() - e0, 1),
        torch_threads=torch.get_num_threads(), loadavg_start=[round(x, 2) for x in loadavg],
        loadavg_end=[round(x, 2) for x in os.getloadavg()], machine=ctx["machine"],
        date=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
    return rec


def prepare(args: argparse.Namespace) -> dict:
    """Held-out tokens, and the calibration windows and settings Bitsmith's preset uses (AutoRound gets them too)."""
    from bitsmith.engine.pipeline.presets import get_preset
    from bitsmith.engine.pipeline.quantize import calibration_samples, calibration_settings, eval_tokens

    _, tok = load_model(args.source)
    held = eval_tokens(tok, "stdlib:heldout", args.eval_tokens)
    calib = calibration_settings(get_preset(args.preset), "cpu")
    windows = calibration_samples(tok(load_text("stdlib"))["input_ids"], calib, args.seed)
    return {"held": held, "calib": calib, "windows": windows, "machine": machine()}


# -- the report -----------------------------------------------------------------------------------
def _num(x: float) -> str:
    """A perplexity or ratio, readable from 1.05 to 10^6."""
    return f"{x:.3f}" if x < 100 else f"{x:.1f}" if x < 1000 else f"{x:,.0f}"


def _times(rec: dict) -> str:
    """Wall and CPU seconds: the whole job for Bitsmith (its measure + search + calibrate in brackets)."""
    if rec["method"] == "bitsmith":
        if rec.get("reused"):
            return f"{rec['job_seconds']:.0f} (job's own) | –"
        return f"{rec['job_seconds']:.0f} ({rec['quantize_seconds']:.0f}) | {rec['job_cpu_s']:.0f}"
    return f"{rec['seconds']:.0f} | {rec['cpu_s']:.0f}" if "seconds" in rec else " | "


def current_distill_target() -> str:
    """The distillation stage's teacher target and learning rates today (DistillConfig's defaults)."""
    from bitsmith.engine.calibrate.e2e import DistillConfig

    d = DistillConfig()
    return f"top-{d.top_k} + rest, lr {d.lr:g}, norm lr {d.norm_lr:g}"


def distill_target(rec: dict) -> str:
    """What a distilled record's teacher target and learning rates were (records before session 6 lack the field)."""
    return rec.get("distill_target") or "top-32 renormalised, lr 0.0001, norm lr 0.0001"


def superseded(rec: dict) -> bool:
    """A Bitsmith run of an older folder format (it packed some width differently), or distilled with another
    target or learning rates than today's (session 5's renormalised top k, for one): run it again."""
    if rec["method"] != "bitsmith":
        return False
    return rec.get("format_version", 1) < FORMAT_VERSION or bool(
        rec.get("distill_epochs") and distill_target(rec) != current_distill_target())


def latest(records: list[dict]) -> dict[tuple, dict]:
    """The last record of every measurement (a rerun replaces an earlier one)."""
    return {run_key(r): r for r in records}


def render_tables(records: list[dict]) -> str:
    """Markdown: per preset and evaluation setting, the results table and the verdict against the targets."""
    runs = latest(records)
    groups: dict[tuple, list[dict]] = {}
    for rec in runs.values():
        groups.setdefault((rec["model"], rec["eval_tokens"], rec["window"], rec["seed"]), []).append(rec)
    parts = []
    for (model, n_tok, window, seed), recs in groups.items():
        fp = next((r for r in recs if r["method"] == "fp" and r.get("status") == "ok"), None)
        presets = sorted({r["preset"] for r in recs if r["preset"] is not None}) or [None]
        for preset in presets:
            parts.append(_render_group(model, n_tok, window, seed, preset, fp, recs))
    return "\n".join(parts)


def _verdict(budget: float, mine: dict | None, peers: list[dict], fp: dict | None) -> str:
    """One line: the target ratio and whether Bitsmith beats each peer at the same or a higher bpw."""
    if mine is None or mine.get("status") != "ok" or fp is None:
        return f"| {budget:.1f} | – | – | – | no Bitsmith result |"
    formats = ", ".join(mine.get("formats") or LEGACY_FORMATS)
    if mine.get("distill_epochs"):
        formats += f"; distilled ({mine['distill_epochs']} epochs, {distill_target(mine)})"
    ratio = mine["ppl"] / fp["ppl"]
    target = TARGET_RATIO.get(budget)
    target_txt = f"≤ {target}× → {'**met**' if ratio <= target else '**missed**'}" if target else "no target"
    beaten = []
    for p in peers:
        if p.get("status") != "ok":
            continue
        if p["bpw"] < budget - 1e-9:
            beaten.append(f"{p['method']} below the budget ({p['bpw']:.3f} bpw), not compared")
            continue
        ok = mine["ppl"] < p["ppl"]
        beaten.append(f"{p['method']} {'beaten' if ok else '**not beaten**'} ({_num(p['ppl'])} at {p['bpw']:.3f})")
    return f"| {budget:.1f} | {formats} | {ratio:.3f}× | {target_txt} | {'; '.join(beaten) or 'no peer result'} |"


def _render_group(model: str, n_tok: int, window: int, seed: int, preset: str | None, fp: dict | None,
                  recs: list[dict]) -> str:
    name = Path(model).name if model not in ("bundled", "smollm2", "default") else "SmolLM2-135M-Instruct (bundled)"
    lines = [f"### {name}, Bitsmith preset `{preset}`: {n_tok} held-out tokens, window {window}, seed {seed}", ""]
    threads = next((r["torch_threads"] for r in recs if r.get("torch_threads")), 0)
    source = "" if model == "bundled" else f" --source {model}"
    lines += [f"Command: `python tests/benchmarks/bench_quality.py{source} --threads {threads} --preset {preset} "
              f"--eval-tokens {n_tok} --window {window} --seed {seed} --out quality.jsonl`", ""]
    if any(r.get("smoke") for r in recs):
        lines += ["**SMOKE RUN: tiny settings for the tests, the numbers are meaningless.**", ""]
    if fp is not None:
        what = "fp32, the dequantized GGUF" if model in ("bundled", "smollm2", "default") else "fp32"
        lines.append(f"Full precision ({what}): perplexity **{fp['ppl']:.3f}** over "
                     f"{fp['scored_tokens']} scored tokens. Machine: {fp['machine']}; "
                     f"{fp['torch_threads']} torch thread(s); {fp['date']}.")
        loads = [x for r in recs if r.get("status") == "ok" for x in (r["loadavg_start"][0], r["loadavg_end"][0])]
        lines.append(f"1-minute load average during these runs: {min(loads):.1f}–{max(loads):.1f}. Above the core "
                     "count, wall times are inflated; CPU seconds are about what an otherwise idle core would take.")
        lines.append("")
    lines += ["| budget | method | format | effective bpw | ppl | × fp | wall s | CPU s | notes |",
              "|---:|---|---|---:|---:|---:|---:|---:|---|"]
    verdicts = []
    for budget in sorted({r["budget"] for r in recs if r["budget"] is not None}, reverse=True):
        rows = [r for r in recs if r["budget"] == budget and r["preset"] in (None, preset)]
        rows.sort(key=lambda r: METHODS.index(r["method"]))
        for r in rows:
            if r.get("status") != "ok":
                lines.append(f"| {budget:.1f} | {r['method']} | {r.get('format', '')} | | | | | | "
                             f"{r.get('status')}: {str(r.get('error', ''))[:200]} |")
                continue
            ratio = _num(r["ppl"] / fp["ppl"]) if fp else ""
            label = f"**{r['method']}**" if r["method"] == "bitsmith" else r["method"]
            lines.append(f"| {budget:.1f} | {label} | {r.get('format', '')} | {r['bpw']:.3f} | {_num(r['ppl'])} "
                         f"| {ratio} | {_times(r)} | {r.get('note', '')} |")
        for mine in [r for r in rows if r["method"] == "bitsmith"] or [None]:
            verdicts.append(_verdict(budget, mine, [r for r in rows if r["method"] in PEERS], fp))
    lines += ["", "| budget | Bitsmith formats | Bitsmith × fp | target | against the peers (ppl at bpw) |",
              "|---:|---|---:|---|---|"]
    lines += verdicts
    return "\n".join(lines) + "\n"


def write_doc(path: Path, records: list[dict], command: str) -> None:
    """Replace the generated part of the report (between the markers), keeping the hand-written text."""
    body = "\n".join([MARK_BEGIN, "", f"Rendered by `{command}`.", "", render_tables(records), MARK_END])
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Quality benchmark\n\n"
    if MARK_BEGIN in text and MARK_END in text:
        head, rest = text.split(MARK_BEGIN, 1)
        text = head + body + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="bundled", help="model: 'bundled' (SmolLM2-135M-Instruct), HF folder or .gguf")
    p.add_argument("--budgets", nargs="+", type=float, default=list(BUDGETS), choices=list(PEER_FORMATS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--preset", default="demo", choices=("demo", "default", "best"), help="Bitsmith's preset")
    p.add_argument("--formats", default="", help="Bitsmith candidate formats, a,b,... (default: the preset's)")
    p.add_argument("--distill-epochs", type=int, default=None,
                   help="Bitsmith's end-to-end distillation epochs (default: the preset's)")
    p.add_argument("--eval-tokens", type=int, default=16384, help="held-out tokens scored (stdlib:heldout)")
    p.add_argument("--window", type=int, default=512, help="perplexity window (disjoint windows)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads here and in the quantize job (0: default)")
    p.add_argument("--out", default="", help="append JSON-line records here; runs already in it are skipped")
    p.add_argument("--fresh", action="store_true", help="run everything even if --out already has it")
    p.add_argument("--reuse", action="store_true",
                   help="evaluate a Bitsmith folder already in --work from the same recipe instead of quantizing again")
    p.add_argument("--doc", default="", help="rewrite the generated part of this Markdown report from --out")
    p.add_argument("--render-only", action="store_true", help="only rewrite --doc from --out")
    p.add_argument("--home", default="", help="BITSMITH_HOME for the quantize jobs (default: $BITSMITH_HOME or a temp)")
    p.add_argument("--work", default="", help="where the quantized folders go (default: a temp folder)")
    p.add_argument("--smoke", action="store_true", help="tiny settings for tests (use with a tiny --source)")
    args = p.parse_args(argv)
    if args.smoke:
        args.eval_tokens, args.window = min(args.eval_tokens, 512), min(args.window, 128)
    if args.render_only and not (args.out and args.doc):
        p.error("--render-only needs --out and --doc")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out) if args.out else None
    command = "python tests/benchmarks/bench_quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if not args.render_only:
        if args.threads:
            torch.set_num_threads(args.threads)
        tmp = Path(tempfile.mkdtemp(prefix="bench_quality-"))
        args.home = args.home or os.environ.get("BITSMITH_HOME") or str(tmp / "home")
        args.work = args.work or str(tmp / "models")
        os.environ["BITSMITH_HOME"] = args.home  # the converted GGUF is cached there for every load
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("AR_LOG_LEVEL", "WARNING")
        os.environ.setdefault("AR_WORK_SPACE", str(tmp / "ar_work_space"))
        done = set() if args.fresh else {run_key(r) for r in read_records(out)
                                         if r.get("status") == "ok" and not superseded(r)}
        ctx = prepare(args)
        plan: list[tuple[str, float | None]] = [("fp", None)] if "fp" in args.methods else []
        plan += [(m, b) for b in args.budgets for m in args.methods if m != "fp"]
        for method, budget in plan:
            key = (args.source, method, budget, _preset_of(method, args.preset), args.eval_tokens, args.window,
                   args.seed, bitsmith_formats(args) if method == "bitsmith" else None,
                   bitsmith_distill_epochs(args) if method == "bitsmith" else None)
            if key in done:
                print(f"skip {method} @ {budget}: already in {out}", flush=True)
                continue
            append_record(out, measure_one(args, method, budget, ctx))
        shutil.rmtree(tmp, ignore_errors=True)
    if args.doc:
        records = read_records(out)
        write_doc(Path(args.doc), records, command)
        print(f"wrote {args.doc}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
