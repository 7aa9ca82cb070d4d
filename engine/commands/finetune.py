"""`bitsmith finetune QMODEL --data FILE --out DIR`: Q-SFT (or the LoRA baseline) as a job with progress."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `bitsmith finetune`."""
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune a quantized model on your data, in its quantized form (Q-SFT) or with LoRA",
        description="Full-parameter fine-tuning in the quantized weight space: the packed codes move by whole "
        "steps, scales and zeros train with Adam, and the result has the same format and bpw, ready for "
        "`bitsmith chat` and `bitsmith eval`. --method lora trains low-rank adapters on the frozen quantized "
        "model instead (QLoRA's recipe) and merges them into the codes at the end. Run the same command "
        "again to resume an interrupted run.",
    )
    p.add_argument("model", help="a quantized Bitsmith model folder (made by `bitsmith quantize`)")
    p.add_argument("--data", required=True,
                   help="training data: .jsonl/.json (Alpaca, chat messages, prompt/completion or text), .txt/.md, "
                        "a folder of text files, or hub:owner/name (online)")
    p.add_argument("--out", required=True, help="output model folder (written atomically)")
    p.add_argument("--steps", type=int, default=200, help="optimizer steps (default 200)")
    p.add_argument("--lr", type=float, default=None,
                   help="Adam learning rate of scales and norms (qsft, default 1e-3) or adapters (lora, default 5e-4)")
    p.add_argument("--code-lr", type=float, default=None,
                   help="qsft: code steps per update for a typical weight (default 0.01)")
    p.add_argument("--seq-len", type=int, default=512, help="tokens per packed sequence (default 512)")
    p.add_argument("--method", choices=("qsft", "lora"), default="qsft")
    p.add_argument("--batch", type=int, default=1, help="sequences per micro-batch (default 1)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 10%% of the steps, at most 100)")
    p.add_argument("--eval-data", default=None, help="held-out data (default: --heldout of the documents)")
    p.add_argument("--heldout", type=float, default=0.1, help="fraction of documents held out (default 0.1)")
    p.add_argument("--eval-every", type=int, default=50, help="held-out evaluation every N steps (0: never)")
    p.add_argument("--eval-tokens", type=int, default=16384, help="held-out tokens evaluated (0: all)")
    p.add_argument("--save-every", type=int, default=50, help="checkpoint every N steps (0: only on cancel)")
    p.add_argument("--on-bad-line", choices=("stop", "skip"), default="stop",
                   help="what to do with a malformed record: stop with its line number (default) or skip it")
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--lora-alpha", type=float, default=32.0)
    p.add_argument("--residual-bits", type=int, choices=(0, 4, 8), default=4,
                   help="qsft: bits of optimizer state per weight (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: CUDA when available)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--compute-dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="CPU training matmuls (auto: bfloat16 where the CPU has it natively; evaluation is fp32)")
    p.add_argument("--fresh", action="store_true", help="discard a checkpoint of an earlier run into --out")
    p.add_argument("--json", action="store_true",
                   help="JSON-line events; the last line holds train_loss, heldout_loss_before, heldout_loss_after")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from bitsmith.engine.progress import run_job_cli

    params = {
        "model": args.model, "data": args.data, "out": args.out, "steps": args.steps, "lr": args.lr,
        "code_lr": args.code_lr, "seq_len": args.seq_len, "method": args.method, "batch": args.batch,
        "grad_accum": args.grad_accum, "warmup": args.warmup, "eval_data": args.eval_data,
        "heldout": args.heldout, "eval_every": args.eval_every, "eval_tokens": args.eval_tokens,
        "save_every": args.save_every, "on_bad_line": args.on_bad_line, "lora_rank": args.lora_rank,
        "lora_alpha": args.lora_alpha, "residual_bits": args.residual_bits, "seed": args.seed,
        "device": args.device, "threads": args.threads, "fresh": args.fresh, "compute_dtype": args.compute_dtype,
    }
    return run_job_cli("finetune", params, json_mode=args.json, result_last=True)
