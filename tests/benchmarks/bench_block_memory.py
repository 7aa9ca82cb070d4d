"""Peak resident memory of calibrating one decoder block, for the per-weight and per-token terms of engine/plan.py.

Builds a random one-block Llama of the given shape (vocab 1000: the head does not matter here), captures its
block inputs for `samples` windows of `seq_len` tokens and runs `calibrate_model` (SignRound, the CPU preset's
knobs, `iters` iterations) with a layout alternating INT4/g128 and INT2/g64 over the block's linears. The C heap
is trimmed before, so the rise of the kernel's high-water mark is the calibration's own working set. Prints one
JSON line with the rise and the planner's terms for the same shape. Run each shape in its own process:

    OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/bench_block_memory.py --hidden 576 --inter 1536 \
        --heads 9 --kv 3 --samples 8 --seq-len 256 --batch 4
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from rss_probe import StageTracker, probe, reset_peak, rss_bytes, status_kb  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--inter", type=int, default=1536)
    parser.add_argument("--heads", type=int, default=9)
    parser.add_argument("--kv", type=int, default=3)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--formats", default="int4_g128,int2_g64")
    parser.add_argument("--probe", action="store_true", help="also report the sampled peak of each phase")
    args = parser.parse_args()

    from transformers import LlamaConfig, LlamaForCausalLM

    from bitsmith.engine.calibrate import CalibConfig, calibrate_model
    from bitsmith.engine.model import find_blocks

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=1000, hidden_size=args.hidden, intermediate_size=args.inter, num_hidden_layers=1,
                      num_attention_heads=args.heads, num_key_value_heads=args.kv, max_position_embeddings=4096)
    model = LlamaForCausalLM(cfg).eval()
    formats = args.formats.split(",")
    blocks = find_blocks(model)
    layout = {f"{b.name}.{n}": formats[i % len(formats)] for b in blocks for i, n in enumerate(b.linears)}
    config = CalibConfig.preset("demo", "cpu").with_(iters=args.iters, samples=args.samples, seq_len=args.seq_len,
                                                     batch_size=args.batch)
    ids = torch.randint(0, 1000, (args.samples, args.seq_len), generator=torch.Generator().manual_seed(1))
    block_weights = sum(lin.weight.numel() for b in blocks for lin in b.linears.values())
    tracker = None
    if args.probe:
        import bitsmith.engine.calibrate.pipeline as cp
        import bitsmith.engine.calibrate.signround as sr

        tracker = StageTracker(interval=0.002).start()
        for mod, names in ((cp, ("capture_block_inputs", "tune_block", "run_block", "quantize_model_rtn")),
                           (sr, ("_run_stage", "_install", "stream_mse", "make_tuner"))):
            for name in names:
                probe(mod, name, tracker, name)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = rss_bytes()
    reset_peak()
    calibrate_model(model, ids, layout, config)
    peak = status_kb("VmHWM") * 1024
    after = rss_bytes()
    phases = {}
    if tracker is not None:
        report = tracker.finish()
        for c in report["calls"]:
            phases[c["call"]] = max(phases.get(c["call"], 0), round((c["sampled_peak"] - before) / 2**20, 1))

    from bitsmith.engine.modelinfo import ModelInfo
    from bitsmith.engine.plan_quantize import calibrate_block_terms

    info = ModelInfo.from_config({"model_type": "llama", "architectures": ["LlamaForCausalLM"], **cfg.to_dict()})
    terms = {k: round(v / 2**20, 1) for k, v in calibrate_block_terms(info, args.samples, args.seq_len, args.batch,
                                                                      config.use_amp("cpu")).items()}
    print(json.dumps({
        "hidden": args.hidden, "inter": args.inter, "heads": args.heads, "kv": args.kv, "samples": args.samples,
        "seq_len": args.seq_len, "batch": args.batch, "iters": args.iters, "amp": config.use_amp("cpu"),
        "block_weights": block_weights, "rise_mib": round((peak - before) / 2**20, 1),
        "kept_mib": round((after - before) / 2**20, 1), "phases_mib": phases, "planner_mib": terms,
    }))


if __name__ == "__main__":
    main()
