"""Q-SFT against LoRA-on-quantized: quality on a real domain corpus (CPU), memory and speed on an 8B shape (GPU).

Run by hand, never by CI:

    python tests/benchmarks/bench_qsft.py model   --out /tmp/qsft/smol-3.0       # SmolLM2 at 3.0 bpw (HQQ)
    python tests/benchmarks/bench_qsft.py corpus  --out /tmp/qsft/comments.jsonl  # the domain corpus
    python tests/benchmarks/bench_qsft.py quality --model /tmp/qsft/smol-3.0 --data /tmp/qsft/comments.jsonl \\
        --steps 200 --seq-len 256 --json-out /tmp/qsft/quality.json
    python tests/benchmarks/bench_qsft.py memory  --bpw 2.5 4.0 --seq-len 2048     # needs an NVIDIA GPU
    python tests/benchmarks/bench_qsft.py memory  --shape tiny --device cpu --steps 2  # smoke test of that path
    python tests/benchmarks/bench_qsft.py estimate --bpw 2.5 --seq-len 2048       # the memory model, no GPU

* model — SmolLM2-135M-Instruct (the bundled GGUF) with every block linear quantized by HQQ: INT4/g128 for
  k, v, down and as many o_proj (from the first block) as keep the layout at or under 3.0 bpw, INT2/g64
  for the rest; 16-bit embeddings and norms. Saved as an ordinary Bitsmith folder.
* corpus — a domain corpus of real text every Python has: the *comments* of the standard library's
  source files (docstrings are the calibration text, so they are left out), one document per module;
  the `encodings` package (code-point tables) and table-like comment blocks are dropped.
* quality — runs the `finetune` job twice, --method qsft and --method lora (rank 16), with the same data,
  held-out split (10 % of the modules, by document), steps, sequence length, schedule and seed, and
  reports held-out loss before, after and along the way, train loss, time, tokens/s and memory.
* memory — a Llama-3-8B-shaped model with random codes at each bpw (a layer-wise INT4/g128 + INT2/g64
  mix that meets the budget), random-token sequences of --seq-len, batch 1: per step peak allocated and
  reserved CUDA memory and tokens/s, for a full-parameter Q-SFT step and for LoRA-on-quantized, in the
  same process.
* estimate — the same shapes on the meta device: bytes of weights and optimizer state as the trainer
  allocates them, plus the planner's activation terms. An estimate, not a measurement.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import re
import sys
import sysconfig
import time
import tokenize
from pathlib import Path
from typing import Any

import torch

GIB = 2**30
REPO = Path(__file__).resolve().parents[2]
LLAMA3_8B = {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
             "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192,
             "rope_theta": 500000.0, "tie_word_embeddings": False}
TINY = {"hidden_size": 256, "intermediate_size": 640, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 1024, "max_position_embeddings": 1024, "tie_word_embeddings": False}


# ---- the start model ----------------------------------------------------------------------------------

def build_model(out: Path, target_bpw: float = 3.0) -> dict[str, Any]:
    """SmolLM2-135M-Instruct at <= target_bpw (see module docstring) saved to `out`."""
    from bitsmith.engine.model import find_blocks, load_model
    from bitsmith.engine.quant.bpw import layer_bits
    from bitsmith.engine.quant.linear import QuantLinear
    from bitsmith.engine.quant.spec import parse_spec
    from bitsmith.engine.quant.store import model_bpw, round_kept_, save_quantized, set_submodule

    model, tok = load_model("bundled")
    round_kept_(model)
    blocks = find_blocks(model)
    layout = {}
    for b in blocks:
        for name in b.linears:
            short = name.rsplit(".", 1)[-1]
            layout[f"{b.name}.{name}"] = "int4_g128" if short in ("k_proj", "v_proj", "down_proj") else "int2_g64"

    def bpw(lay: dict[str, str]) -> float:
        bits = weights = 0
        for name, fmt in lay.items():
            lin = model.get_submodule(name)
            lb = layer_bits(lin.out_features, lin.in_features, parse_spec(fmt))
            bits, weights = bits + lb.total, weights + lb.weights
        return bits / weights

    for b in blocks:  # o_proj to INT4 block by block while the budget allows
        trial = {**layout, f"{b.name}.self_attn.o_proj": "int4_g128"}
        if bpw(trial) <= target_bpw:
            layout = trial
    t0 = time.perf_counter()
    for name, fmt in layout.items():
        set_submodule(model, name, QuantLinear.from_linear(model.get_submodule(name), fmt, "hqq", name=name))
    seconds = time.perf_counter() - t0
    achieved = model_bpw(model)["quantized_linears"]
    recipe = {"method": "hqq", "layout_rule": "int4_g128: k, v, down, o_proj of the first blocks; int2_g64: rest",
              "target_bpw": target_bpw}
    save_quantized(model, tok, out, source={"model": "bundled SmolLM2-135M-Instruct"}, recipe=recipe,
                   metrics={"quantize_seconds": round(seconds, 1)})
    counts: dict[str, int] = {}
    for fmt in layout.values():
        counts[fmt] = counts.get(fmt, 0) + 1
    return {"out": str(out), "bpw": achieved, "formats": counts, "seconds": round(seconds, 1)}


# ---- the domain corpus --------------------------------------------------------------------------------

_SKIP_TOP = {"encodings", "test", "idlelib", "lib2to3", "tkinter", "turtledemo", "ensurepip", "pydoc_data",
             "site-packages"}
_NOISE = ("!", "-*-", "noqa", "type:", "pragma", "fmt:", "XXX")


def _comment_paragraphs(path: Path) -> list[str]:
    """Runs of consecutive comment lines of one source file, joined into paragraphs."""
    try:
        toks = list(tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline))
    except (SyntaxError, UnicodeDecodeError, OSError, tokenize.TokenError):
        return []
    blocks: list[list[str]] = []
    cur: list[str] = []
    last = -2
    for t in toks:
        if t.type != tokenize.COMMENT:
            continue
        text = t.string.lstrip("#").strip()
        if t.start[0] != last + 1 and cur:
            blocks.append(cur)
            cur = []
        last = t.start[0]
        if not text or re.fullmatch(r"[-=#*~_+.: ]+", text) or (text.startswith(_NOISE) and len(text) < 30):
            continue
        cur.append(text)
    if cur:
        blocks.append(cur)
    paras = [" ".join(b) for b in blocks if sum(len(x) for x in b) >= 40]
    return [p for p in paras if p.count("0x") <= 2 and p.count("->") <= 2]  # no code-point tables


def build_corpus(out: Path) -> dict[str, Any]:
    """One {"text", "module"} JSON line per standard-library module with at least 300 characters of comments."""
    root = Path(sysconfig.get_paths()["stdlib"])
    names = set(getattr(sys, "stdlib_module_names", ()))
    docs = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        top = rel.parts[0].removesuffix(".py")
        if top in _SKIP_TOP or (names and top not in names) or {"test", "tests"} & set(rel.parts[:-1]):
            continue
        text = "\n\n".join(_comment_paragraphs(path))
        if len(text) >= 300:
            docs.append({"text": text, "module": ".".join(rel.with_suffix("").parts)})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return {"out": str(out), "documents": len(docs), "characters": sum(len(d["text"]) for d in docs),
            "python": platform.python_version()}


# ---- quality: Q-SFT vs LoRA ---------------------------------------------------------------------------

def run_job(params: dict[str, Any]) -> dict[str, Any]:
    """Run one finetune job in-process; its result, curves and timing."""
    from bitsmith.engine.jobclient import run_inprocess

    events: list[dict] = []
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    code = run_inprocess("finetune", params, events.append)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    errors = [e for e in events if e["event"] == "error"]
    if code != 0:
        raise RuntimeError(f"finetune failed: {errors}")
    result = next(e for e in events if e["event"] == "result")
    curve = [(e["step"], e["value"]) for e in events if e["event"] == "metric" and e["name"] == "heldout_loss"
             and not e.get("final") and e.get("merged") is not False]
    train = [(e["step"], e["value"], e.get("tokens_per_s")) for e in events
             if e["event"] == "metric" and e["name"] == "train_loss"]
    train_stage = [e for e in events if e["event"] == "stage" and e["stage"] == "train"]
    return {"result": result, "heldout_curve": curve, "train_curve": train, "wall_seconds": round(wall, 1),
            "process_cpu_seconds": round(cpu, 1), "stages": len(train_stage)}


def quality(args: argparse.Namespace) -> dict[str, Any]:
    """Q-SFT and LoRA on the same data, steps and seed."""
    common = {"model": args.model, "data": args.data, "steps": args.steps, "seq_len": args.seq_len,
              "seed": args.seed, "eval_every": args.eval_every, "eval_tokens": args.eval_tokens,
              "heldout": 0.1, "save_every": 0, "threads": args.threads, "fresh": True}
    runs = {}
    for method in args.methods:
        params = {**common, "method": method, "out": str(Path(args.work) / f"ft-{method}")}
        if method == "qsft":
            params.update(lr=args.lr_qsft, code_lr=args.code_lr, residual_bits=args.residual_bits,
                          code_decay=args.code_decay, max_move_frac=args.max_move_frac)
        else:
            params.update(lr=args.lr_lora, lora_rank=16, lora_alpha=32)
        if args.compute_dtype:
            params["compute_dtype"] = args.compute_dtype
        runs[method] = {"params": params, **run_job(params)}
        r = runs[method]["result"]
        print(f"{method}: held-out {r['heldout_loss_before']:.4f} -> {r['heldout_loss_after']:.4f}"
              f" (train {r['train_loss']:.4f}) in {runs[method]['wall_seconds']:.0f} s", flush=True)
    return runs


# ---- memory and speed on an 8B shape ------------------------------------------------------------------

def _layout_for(shapes: dict[str, tuple[int, int]], target: float) -> dict[str, str]:
    """INT2/g64 everywhere, then INT4/g128 for the largest linears first while the layout stays <= target bpw."""
    from bitsmith.engine.quant.bpw import layer_bits
    from bitsmith.engine.quant.spec import parse_spec

    layout = dict.fromkeys(shapes, "int2_g64")
    totals = {f: {n: layer_bits(o, i, parse_spec(f)) for n, (o, i) in shapes.items()}
              for f in ("int2_g64", "int4_g128")}

    def bpw(lay: dict[str, str]) -> float:
        bits = sum(totals[f][n].total for n, f in lay.items())
        return bits / sum(totals[f][n].weights for n, f in lay.items())

    for name in sorted(shapes, key=lambda n: (-shapes[n][0] * shapes[n][1], n)):
        trial = {**layout, name: "int4_g128"}
        if bpw(trial) <= target:
            layout = trial
    return layout


def random_model(shape: dict[str, Any], bpw: float, device: torch.device, dtype: torch.dtype) -> Any:
    """A Llama with random codes in a layout at <= bpw, built without ever holding its float weights."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    from bitsmith.engine.quant.linear import QuantLinear
    from bitsmith.engine.quant.store import set_submodule

    config = LlamaConfig(**shape)
    config.rope_parameters = {"rope_type": "default", "rope_theta": shape.get("rope_theta", 10000.0)}
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    shapes = {n: (m.out_features, m.in_features) for n, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and ".layers." in n}
    layout = _layout_for(shapes, bpw)
    gen = torch.Generator(device=device).manual_seed(0)
    for name, fmt in layout.items():
        out_f, in_f = shapes[name]
        q = QuantLinear(in_f, out_f, fmt, device=device)
        with torch.no_grad():
            q.qweight.copy_(torch.randint(-(2**31), 2**31 - 1, q.qweight.shape, generator=gen, device=device,
                                          dtype=torch.int32))
            q.scales.copy_(torch.empty(q.scales.shape, device=device).uniform_(0.004, 0.02, generator=gen))
            q.zero_codes.copy_(torch.randint(-(2**31), 2**31 - 1, q.zero_codes.shape, generator=gen,
                                             device=device, dtype=torch.int32))
        q._materialize()
        set_submodule(model, name, q)
    with torch.no_grad():
        for name, p in list(model.named_parameters()):
            if p.is_meta:
                value = (torch.ones(p.shape, device=device, dtype=dtype) if "norm" in name else
                         torch.empty(p.shape, device=device, dtype=dtype).normal_(0, 0.02, generator=gen))
                owner, _, attr = name.rpartition(".")
                setattr(model.get_submodule(owner), attr, torch.nn.Parameter(value, requires_grad=False))
    model.model.rotary_emb = LlamaRotaryEmbedding(config).to(device)  # built on the CPU: its buffers are real
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"still on the meta device: {left[:5]}")
    return model.eval()


def memory(args: argparse.Namespace) -> dict[str, Any]:
    """Per-step peak memory and tokens/s of Q-SFT and LoRA steps on random 8B-shaped models."""
    from bitsmith.engine.finetune.packing import BatchPlan, Row
    from bitsmith.engine.finetune.qsft import TrainConfig, Trainer
    from bitsmith.engine.finetune.template import Example
    from bitsmith.engine.quant.store import model_bpw

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    shape = LLAMA3_8B if args.shape == "llama3-8b" else TINY
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gen = torch.Generator().manual_seed(1)
    n = args.seq_len
    ids = [tuple(torch.randint(0, shape["vocab_size"], (n,), generator=gen).tolist()) for _ in range(4)]
    examples = [Example(i, (True,) * n) for i in ids]
    plan = BatchPlan([Row((i,)) for i in range(len(examples))], examples, 1, 0, 0)
    out: dict[str, Any] = {"device": str(device), "shape": args.shape, "seq_len": n, "batch": 1, "runs": []}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    for bpw in args.bpw:
        for method in args.methods:
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            model = random_model(shape, bpw, device, dtype)
            achieved = model_bpw(model)["quantized_linears"]
            cfg = TrainConfig(method=method, steps=args.steps, seq_len=n, lr=1e-4, warmup=0, eval_every=0,
                              save_every=0, grad_checkpointing=True)
            trainer = Trainer(model, cfg, plan, [], device)
            weights_gib = (torch.cuda.memory_allocated(device) / GIB) if device.type == "cuda" else None
            steps = []
            for _ in range(args.steps):
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                r = trainer.train_step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                row = {"step": r.step, "seconds": round(time.perf_counter() - t0, 3),
                       "tokens_per_s": round(r.tokens / (time.perf_counter() - t0), 1), "loss": round(r.loss, 4)}
                if device.type == "cuda":
                    row["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated(device) / GIB, 3)
                    row["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved(device) / GIB, 3)
                steps.append(row)
                print(json.dumps({"method": method, "bpw": bpw, **row}), flush=True)
            state = trainer.optimizer_state_bytes()
            out["runs"].append({"method": method, "bpw_target": bpw, "bpw": achieved, "resident_gib": weights_gib,
                                "optimizer_state_gib": {k: round(v / GIB, 3) for k, v in state.items()},
                                "steps": steps})
            del trainer, model
    return out


def estimate(args: argparse.Namespace) -> dict[str, Any]:
    """Weights and optimizer state as the trainer sizes them, for the 8B shape, plus the planner's activations."""
    from bitsmith.engine import plan as planner
    from bitsmith.engine.finetune.loss import chunk_tokens
    from bitsmith.engine.modelinfo import ModelInfo
    from bitsmith.engine.quant.bpw import layer_bits
    from bitsmith.engine.quant.spec import parse_spec

    shape = LLAMA3_8B if args.shape == "llama3-8b" else TINY
    h, inter, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    kv = shape["num_key_value_heads"] * h // shape["num_attention_heads"]
    vocab = shape["vocab_size"]
    per_block = {"q_proj": (h, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, h),
                 "gate_proj": (inter, h), "up_proj": (inter, h), "down_proj": (h, inter)}
    shapes = {f"model.layers.{i}.{k}": v for i in range(layers) for k, v in per_block.items()}
    info = ModelInfo.from_config({"architectures": ["LlamaForCausalLM"], "model_type": "llama", **shape})
    rows = []
    for bpw in args.bpw:
        layout = _layout_for(shapes, bpw)
        quant = sum(layer_bits(o, i, parse_spec(layout[n])).total for n, (o, i) in shapes.items()) / 8
        weights = sum(o * i for o, i in shapes.values())
        stats = sum(parse_spec(layout[n]).groups(i) * o for n, (o, i) in shapes.items())
        kept16 = (vocab * h * (1 if shape["tie_word_embeddings"] else 2) + (2 * layers + 1) * h) * 2
        residual = sum((i + 1) // 2 * o for o, i in shapes.values())  # 4-bit residual
        factored = sum(4 * (o + i) for o, i in shapes.values())
        adam = stats * 12 + (2 * layers + 1) * h * 12  # log-scales fp32 + m + v; norms likewise (fp32 master)
        tokens = args.seq_len
        acts = {
            "checkpoints (hidden states at block inputs, bf16)": layers * tokens * h * 2,
            "one block recomputed (planner's per-token term)": tokens * planner._train_token_bytes(info),
            "dW block + code-update temporaries (16M-element blocks, ~6 fp32/int32 copies)": 6 * 4 * (1 << 24),
            "chunked cross-entropy (one chunk of fp32 logits, x2) + hidden grad": (
                2 * 4 * chunk_tokens(vocab) * vocab + 2 * tokens * h * 2),
        }
        lora_params = sum(16 * (o + i) for o, i in shapes.values())
        parts = {"quantized linears (codes + scales + zeros)": quant, "embeddings, lm_head, norms (bf16)": kept16,
                 "code residuals (4 bits/weight)": residual, "factored code moments (fp32 rows + columns)": factored,
                 "Adam on log-scales and norms (fp32 param + m + v)": adam, **acts}
        lora_parts = {"quantized linears (codes + scales + zeros)": quant, "embeddings, lm_head, norms (bf16)": kept16,
                      "LoRA r16 adapters fp32 + Adam m, v": lora_params * 12, **acts}
        rows.append({"bpw_target": bpw, "bpw": quant * 8 / weights, "quantized_weights": weights,
                     "qsft_gib": {k: round(v / GIB, 3) for k, v in parts.items()},
                     "qsft_total_gib": round(sum(parts.values()) / GIB, 2),
                     "lora_total_gib": round(sum(lora_parts.values()) / GIB, 2),
                     "planner_qsft_gpu_gib": planner._gb(sum(planner._qsft(info, bpw, "cuda", tokens, 1).must.values())
                                                         - planner.CUDA_CONTEXT_BYTES)})
    return {"shape": args.shape, "seq_len": args.seq_len, "rows": rows}


# ---- main ---------------------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    """Where and when this ran."""
    from bitsmith.engine.hardware import detect_cpu

    cpu = detect_cpu()
    info = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": cpu.model, "cores": cpu.logical_cores, "cpu_flags": cpu.flags, "torch": torch.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads()}
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    m = sub.add_parser("model")
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--bpw", type=float, default=3.0)
    c = sub.add_parser("corpus")
    c.add_argument("--out", type=Path, required=True)
    q = sub.add_parser("quality")
    q.add_argument("--model", required=True)
    q.add_argument("--data", required=True)
    q.add_argument("--work", default="/tmp/qsft/bench")
    q.add_argument("--steps", type=int, default=200)
    q.add_argument("--seq-len", type=int, default=256)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--eval-every", type=int, default=25)
    q.add_argument("--eval-tokens", type=int, default=8192)
    q.add_argument("--lr-qsft", type=float, default=None)
    q.add_argument("--code-lr", type=float, default=None)
    q.add_argument("--residual-bits", type=int, default=4)
    q.add_argument("--code-decay", type=float, default=None)
    q.add_argument("--max-move-frac", type=float, default=None)
    q.add_argument("--lr-lora", type=float, default=None)
    q.add_argument("--methods", nargs="+", default=["qsft", "lora"])
    q.add_argument("--threads", type=int, default=None)
    q.add_argument("--compute-dtype", default=None)
    for s in (sub.add_parser("memory"), sub.add_parser("estimate")):
        s.add_argument("--bpw", type=float, nargs="+", default=[2.5, 4.0])
        s.add_argument("--seq-len", type=int, default=2048)
        s.add_argument("--shape", choices=("llama3-8b", "tiny"), default="llama3-8b")
        if s.prog.endswith("memory"):
            s.add_argument("--steps", type=int, default=4)
            s.add_argument("--device", default=None)
            s.add_argument("--methods", nargs="+", default=["qsft", "lora"])
    p.add_argument("--json-out", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args(argv)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    started = machine()
    if args.what == "model":
        report = build_model(args.out, args.bpw)
    elif args.what == "corpus":
        report = build_corpus(args.out)
    elif args.what == "quality":
        report = quality(args)
    elif args.what == "memory":
        report = memory(args)
    else:
        report = estimate(args)
    full = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if argv is None else " ".join(argv),
            "machine": started, "finished": machine()["date"], "report": report}
    text = json.dumps(full, indent=1, default=str)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text)
    print(text if args.what != "quality" else json.dumps({k: v["result"] for k, v in report.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
