"""Peak memory of the full-precision stages, whole model vs block-streamed (run by hand, never by CI).

Loads the model (the bundled SmolLM2-135M-Instruct by default: its cached safetensors folder), scores the
held-out perplexity (8192 tokens, window 512) and measures the Fisher sensitivity (4 windows × 256 tokens,
INT4/g128 and INT2/g64, RTN), either with the whole float32 model (`normal`) or with engine/model_stream.py
(`stream`). Run each mode in its own process under `/usr/bin/time -v` and compare "Maximum resident set size":

    /usr/bin/time -v .venv/bin/python tests/benchmarks/bench_stream_rss.py normal
    /usr/bin/time -v .venv/bin/python tests/benchmarks/bench_stream_rss.py stream

Both print the same perplexity and (to float rounding) the same total predicted error.
"""

from __future__ import annotations

import argparse
import time

import torch

from bitsmith.engine.data import load_text, token_windows
from bitsmith.engine.model_stream import checkpoint_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("normal", "stream"))
    parser.add_argument("--source", default="bundled", help="model (default: the bundled SmolLM2-135M-Instruct)")
    args = parser.parse_args()
    folder = str(checkpoint_folder(args.source))  # a GGUF is converted (and cached) once, outside the comparison
    started = time.perf_counter()
    formats = ("int4_g128", "int2_g64")
    if args.mode == "normal":
        from bitsmith.engine.eval.perplexity import perplexity
        from bitsmith.engine.model import load_model
        from bitsmith.engine.quant.store import round_kept_
        from bitsmith.engine.search.measure import measure_model

        model, tok = load_model(folder)
        round_kept_(model)

        def ppl(ids):  # noqa: ANN001, ANN202
            return perplexity(model, ids, 512)

        def measure(windows):  # noqa: ANN001, ANN202
            return measure_model(model, windows, formats, "rtn")
    else:
        from bitsmith.engine.model_stream import open_streamed
        from bitsmith.engine.search.measure_stream import measure_streamed
        from bitsmith.engine.stream_forward import streamed_perplexity

        streamed = open_streamed(folder)
        tok = streamed.tokenizer

        def ppl(ids):  # noqa: ANN001, ANN202
            return streamed_perplexity(streamed, ids, 512)

        def measure(windows):  # noqa: ANN001, ANN202
            return measure_streamed(streamed, windows, formats, "rtn")

    held = torch.tensor(tok(load_text("stdlib:heldout"))["input_ids"][:8192])
    windows = token_windows(tok(load_text("stdlib"))["input_ids"], 4, 256, seed=0)
    result = ppl(held)
    print(f"{args.mode}: perplexity {result.ppl:.6f} over {result.windows} windows")
    m = measure(windows)
    print(f"{args.mode}: total predicted INT2 error {sum(layer.errors['int2_g64'] for layer in m.layers):.8f}")
    print(f"{args.mode}: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
