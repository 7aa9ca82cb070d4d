"""`bitsmith demo`: the README's main job, offline: quantize the bundled model, compare, chat."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `bitsmith demo`."""
    p = subparsers.add_parser(
        "demo",
        help="quantize the bundled SmolLM2-135M-Instruct at a mixed budget, show perplexity and chat answers",
    )
    p.add_argument("--bpw", type=float, default=3.0, help="bits-per-weight budget (default 3.0: a INT4/INT2 mix)")
    p.add_argument("--out", default="runs/demo-smollm2", help="where the quantized model goes")
    p.add_argument("--preset", default="demo", choices=("demo", "default", "best"))
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bitsmith.engine.progress import run_job_cli

    params = {"source": "bundled", "bpw": args.bpw, "out": args.out, "preset": args.preset}
    code = run_job_cli("quantize", params)
    if code != 0:
        return code
    from bitsmith.engine.pipeline.demo import DEMO_PROMPTS, chat_answers
    from bitsmith.engine.quant.store import load_quantized

    saved = load_quantized(args.out)
    m = saved.meta["metrics"]
    bpw = saved.meta["bpw"]
    print(f"\nSmolLM2-135M-Instruct → {Path(args.out).resolve()}")
    print(f"  bits per weight: {bpw['quantized_linears']:.3f} over the quantized linears "
          f"({bpw['all_weights']:.2f} counting the 16-bit embeddings and norms)")
    print(f"  held-out perplexity ({m['scored_tokens']} tokens, window {m['eval_window']}): "
          f"full precision {m['heldout_ppl_fp']:.2f} → quantized {m['heldout_ppl']:.2f} "
          f"(×{m['heldout_ppl'] / m['heldout_ppl_fp']:.3f}; predicted {m['predicted_ppl']:.2f})")
    print("\nChat with the quantized model (greedy):")
    for prompt, answer in zip(DEMO_PROMPTS, chat_answers(saved.model, saved.tokenizer, DEMO_PROMPTS)):
        print(f"\n> {prompt}\n{answer}")
    return 0
