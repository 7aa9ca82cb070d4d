"""End-to-end distillation on a saved Bitsmith folder: held-out perplexity before and after, one JSON line.

    BITSMITH_HOME=... python tests/benchmarks/bench_distill.py FOLDER --epochs 2 --lr 1e-4 --norm-lr 1e-4

The teacher is the bundled SmolLM2-135M-Instruct in full precision (rounded to 16 bits, as the pipeline's
reference), on `--samples` calibration windows of `--seq` tokens from `stdlib` (the windows block-wise
calibration trains on, seed 0); the last 4 are the stage's own held-out windows. Perplexity: the first 16384
tokens of `stdlib:heldout`, disjoint windows of 512, as in bench_quality.py. Used for docs/benchmarks/distill.md.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from bitsmith.engine.calibrate import CalibConfig
from bitsmith.engine.calibrate.e2e import DistillConfig, distill, model_logit_rows, teacher_targets
from bitsmith.engine.data import load_text
from bitsmith.engine.eval.perplexity import perplexity
from bitsmith.engine.model import load_model
from bitsmith.engine.pipeline.quantize import calibration_samples, eval_tokens
from bitsmith.engine.quant.store import load_quantized, round_kept_


def main() -> None:
    """Parse, distil, print the record."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--norm-lr", type=float, default=1e-4)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--dtype", default="auto")
    a = ap.parse_args()
    t0 = time.time()
    fp, tok = load_model("bundled", dtype=torch.float32)
    round_kept_(fp)
    cfg = CalibConfig.preset("default", device="cpu").with_(samples=a.samples, seq_len=a.seq)
    ids = torch.tensor(calibration_samples(tok(load_text("stdlib"))["input_ids"], cfg, 0))
    teacher = teacher_targets(ids, model_logit_rows(fp, ids), a.k)
    print(f"teacher {time.time() - t0:.0f}s", flush=True)
    del fp
    q = load_quantized(a.folder).model
    held = eval_tokens(tok, "stdlib:heldout", 16384)
    before = perplexity(q, held, 512).ppl
    print("before", before, flush=True)
    t1 = time.time()
    config = DistillConfig(epochs=a.epochs, lr=a.lr, norm_lr=a.norm_lr, batch_size=a.batch, top_k=a.k,
                           compute_dtype=a.dtype)
    report = distill(q, teacher, config, log=print,
                     on_progress=lambda d, t: print(f"  step {d}/{t} {time.time() - t1:.0f}s", flush=True))
    after = perplexity(q, held, 512).ppl
    print(json.dumps({"args": vars(a), "before": before, "after": after, "report": report.to_dict(),
                      "date": time.strftime("%Y-%m-%d %H:%M:%S")}), flush=True)


if __name__ == "__main__":
    main()
