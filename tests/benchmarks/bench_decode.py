"""Benchmark chat decoding: native runtime vs transformers (GPU) and vs llama.cpp (CPU), plus GGUF fidelity.

Run by hand (never by CI):

    BITSMITH_HOME=/tmp/bsh_decode .venv/bin/python tests/benchmarks/bench_decode.py --out /tmp/decode.jsonl

Sections (--sections, default all that this machine can run):

* gpu — needs CUDA. Llama-3-8B-shaped model with random weights, quantized layouts at 4.0 and 2.5 bits
  per weight (INT4/g128 on the first linears of each block, INT2/g64 on the rest, chosen to meet the
  budget), batch 1, a 512-token prompt, 256 new tokens (greedy, EOS ignored): time to first token
  (prefill through the GEMM path) and decode tokens/s (GEMV path, CUDA-graph step) next to fp16
  transformers `generate` on the same shapes in the same run, and as a fraction of the memory-bandwidth
  bound (bytes a decode step must read — packed weights, statistics, fp16 lm_head, the whole static KV
  cache — over a measured device-to-device copy bandwidth).
* cpu — SmolLM2-135M-Instruct quantized to a ~3.0 bpw mix of INT4/g128 and INT2/g64 (HQQ), decode
  tokens/s and time to first token of the native runtime vs llama.cpp on its exact and compact GGUF
  exports, and on the bundled Q4_1 GGUF it came from; the same prompt ids and thread count for all.
* fidelity — perplexity over held-out text (stdlib docstrings) of the native 3.0 bpw model vs llama.cpp
  on its exact and compact exports, and the same gap measured on the source GGUF (transformers vs
  llama.cpp), since llama.cpp's dot products quantize activations to 8 bits.

Each measurement is printed as a JSON line (and appended to --out); a summary table ends the output.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1] / "engine" / "runtime"))  # chat_models (test helpers)

LLAMA3_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rms_norm_eps=1e-5,
                 tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 500000.0})
SPEC_BANDWIDTH = {"H100 PCIe": 2.0e12, "H100 NVL": 3.9e12, "H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12,
                  "RTX 4090": 1.008e12}
SMOKE_SHAPE = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, vocab_size=1000)
ORDER = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def emit(row: dict[str, Any], out: Path | None) -> None:
    """Print one measurement as a JSON line (and append it to --out)."""
    line = json.dumps(row)
    print(line, flush=True)
    if out is not None:
        with open(out, "a") as f:
            f.write(line + "\n")


def machine() -> dict[str, Any]:
    """Facts about where the numbers come from."""
    info: dict[str, Any] = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                            "python": platform.python_version(), "torch": torch.__version__,
                            "cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads()}
    try:
        import psutil

        info["cpu_cores"] = psutil.cpu_count(logical=False)
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    except Exception:  # noqa: BLE001
        pass
    try:
        import llama_cpp

        info["llama_cpp_python"] = llama_cpp.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


# ---- layouts ---------------------------------------------------------------------------------------

def layout_for(shapes: list[tuple[str, int, int]], budget: float) -> dict[str, str]:
    """INT4/g128 for linears in block order until the budget allows no more, INT2/g64 for the rest."""
    from bitsmith.engine.quant.bpw import layer_bits
    from bitsmith.engine.quant.spec import INT2_G64, INT4_G128

    total_w = sum(n * k for _, n, k in shapes)
    bits = {name: layer_bits(n, k, INT2_G64).total for name, n, k in shapes}
    used = sum(bits.values())
    layout = {name: "int2_g64" for name, _, _ in shapes}
    for name, n, k in shapes:
        extra = layer_bits(n, k, INT4_G128).total - bits[name]
        if (used + extra) / total_w <= budget:
            layout[name] = "int4_g128"
            used += extra
    return layout


def _linear_shapes(model: torch.nn.Module) -> list[tuple[str, int, int]]:
    from bitsmith.engine.model import find_blocks

    shapes = []
    for blk in find_blocks(model):
        for inner in sorted(blk.linears, key=lambda n: next((i for i, o in enumerate(ORDER) if n.endswith(o)), 99)):
            lin = blk.linears[inner]
            shapes.append((f"{blk.name}.{inner}", lin.out_features, lin.in_features))
    return shapes


def achieved_bpw(model: torch.nn.Module) -> float:
    from bitsmith.engine.quant.store import model_bpw

    return float(model_bpw(model)["quantized_linears"])


# ---- GPU -------------------------------------------------------------------------------------------

def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _cuda_time(fn, repeat: int = 3) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeat):
        _sync()
        t = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def copy_bandwidth(device: str, size: int = 1 << 30) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write), median of several copies of `size` bytes."""
    a = torch.empty(size, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    t = _cuda_time(lambda: b.copy_(a), repeat=5)
    return 2 * a.numel() / t


def random_quant_linear(lin: torch.nn.Linear, spec: str, device: str) -> torch.nn.Module:
    """A QuantLinear of `lin`'s shape with random codes and plausible statistics (values do not matter)."""
    from bitsmith.engine.quant.linear import QuantLinear

    q = QuantLinear(lin.in_features, lin.out_features, spec, device=device)
    with torch.no_grad():
        for name, buf in q.named_buffers():
            if name == "bias" or buf is None:
                continue
            if buf.dtype == torch.int32:
                buf.copy_(torch.randint(-(2**31), 2**31 - 1, buf.shape, dtype=torch.int32, device=device))
            elif name == "scales":
                buf.copy_(torch.rand(buf.shape, device=device) * 0.01 + 0.002)
            elif buf.is_floating_point():
                buf.copy_(torch.rand(buf.shape, device=device))
    q._materialize()
    return q


def _time_decoder(dec: Any, prompt: list[int], new: int) -> tuple[float, float]:
    """(time to first token, time for the whole greedy answer of `new` tokens), after a warm-up."""

    def run(n_new: int) -> None:
        dec.reset()
        logits = dec.prefill(prompt)
        for _ in range(n_new):
            logits = dec.step(int(torch.argmax(logits)))

    run(4)  # warm-up: Triton compiles, the graph is captured
    ttft = _cuda_time(lambda: (dec.reset(), dec.prefill(prompt)))
    total = _cuda_time(lambda: run(new - 1), repeat=2)
    return ttft, total


def gpu_section(args: argparse.Namespace, out: Path | None) -> list[dict[str, Any]]:
    from transformers import LlamaConfig, LlamaForCausalLM

    from bitsmith.engine.quant.linear import QuantLinear
    from bitsmith.engine.quant.store import set_submodule
    from bitsmith.engine.runtime.decoder import CachedDecoder

    rows = []
    prompt_len, new = args.prompt_tokens, args.new_tokens
    smoke = args.gpu_smoke  # the same code on the CPU with a tiny model, to check the script itself
    device, dtype = ("cpu", torch.float32) if smoke else ("cuda", torch.float16)
    shape = dict(LLAMA3_8B, **SMOKE_SHAPE) if smoke else LLAMA3_8B
    cfg = LlamaConfig(**shape)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(cfg, dtype=dtype).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, prompt_len), device=device)
    bw = copy_bandwidth(device, 1 << 26 if smoke else 1 << 30)
    name = "cpu (smoke run: timings mean nothing)" if smoke else torch.cuda.get_device_name()
    spec_bw = next((v for k, v in SPEC_BANDWIDTH.items() if k in name), None)

    # fp16 transformers generate (dynamic cache, its default)
    with torch.inference_mode():
        model(ids, logits_to_keep=1)
        ttft16 = _cuda_time(lambda: model(ids, logits_to_keep=1))
        gen = lambda: model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False,  # noqa: E731
                                     pad_token_id=0)
        gen()
        total = _cuda_time(gen, repeat=2)
    fp16 = {"section": "gpu", "model": "llama3-8b-shape fp16", "runtime": "transformers.generate",
            "ttft_s": round(ttft16, 4), "decode_tok_s": round((new - 1) / (total - ttft16), 2), "device": name}
    emit(fp16, out)
    rows.append(fp16)

    shapes = _linear_shapes(model)
    dense_state = {n: model.get_submodule(n) for n, _, _ in shapes}
    for budget in args.bpw:
        layout = layout_for(shapes, budget)
        for n, spec in layout.items():
            set_submodule(model, n, random_quant_linear(dense_state[n], spec, device))
        if not smoke:
            torch.cuda.empty_cache()
        qbytes = sum(t.numel() * t.element_size() for m in model.modules() if isinstance(m, QuantLinear)
                     for t in m.state_dict().values())
        head_bytes = model.lm_head.weight.numel() * model.lm_head.weight.element_size()
        n_ctx = prompt_len + new
        head_dim = cfg.hidden_size // cfg.num_attention_heads
        kv_bytes = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * n_ctx * dtype.itemsize
        step_bytes = qbytes + head_bytes + kv_bytes
        dec = CachedDecoder(model, n_ctx=n_ctx, cuda_graph=not args.no_graph)
        ttft, total = _time_decoder(dec, ids[0].tolist(), new)
        tok_s = (new - 1) / (total - ttft)
        row = {"section": "gpu", "model": f"llama3-8b-shape {budget} bpw", "runtime": "bitsmith native",
               "bpw": round(achieved_bpw(model), 3), "ttft_s": round(ttft, 4), "decode_tok_s": round(tok_s, 2),
               "cuda_graph": dec.use_graph and not dec._graph_failed, "bytes_per_step": step_bytes,
               "copy_bw_gbs": round(bw / 1e9, 1), "frac_of_copy_bound": round(tok_s * step_bytes / bw, 3),
               "frac_of_spec_bound": round(tok_s * step_bytes / spec_bw, 3) if spec_bw else None,
               "vs_fp16_decode": round(tok_s / fp16["decode_tok_s"], 2),
               "ttft_vs_fp16": round(ttft / fp16["ttft_s"], 2), "device": name}
        emit(row, out)
        rows.append(row)
        dec.reset()
        for n in layout:  # back to dense for the next budget
            set_submodule(model, n, dense_state[n])
    return rows


# ---- CPU -------------------------------------------------------------------------------------------

def build_smollm(folder: Path, budget: float, method: str) -> Path:
    """SmolLM2 quantized to a mixed INT4/INT2 layout at `budget` bpw by `method`, saved once."""
    from bitsmith.engine.model import load_model
    from bitsmith.engine.quant.linear import QuantLinear
    from bitsmith.engine.quant.store import is_quantized_folder, save_quantized, set_submodule

    if is_quantized_folder(folder):
        return folder
    model, tok = load_model("bundled")
    shapes = _linear_shapes(model)
    # INT2 for MLPs first (they hold most weights): order attention before MLP so INT4 goes to attention
    layout = layout_for(sorted(shapes, key=lambda s: ("mlp" in s[0], s[0])), budget)
    for name, spec in layout.items():
        set_submodule(model, name, QuantLinear.from_linear(model.get_submodule(name), spec, method))
    save_quantized(model, tok, folder, source={"model": "bundled"}, recipe={"method": method, "budget": budget})
    return folder


def _time_generation(backend: Any, prompt: list[int], n_new: int, repeats: int) -> tuple[float, float]:
    """(median time to first token, median decode tok/s) generating n_new tokens, EOS ignored."""
    from bitsmith.engine.runtime.params import SamplingParams

    params = SamplingParams(temperature=0, repetition_penalty=1.0, max_tokens=n_new)
    ttfts, speeds = [], []
    for _ in range(repeats):
        reset = getattr(getattr(backend, "llm", None), "reset", None) or backend.decoder.reset
        reset()
        t0 = time.perf_counter()
        t_first, count = None, 0
        gen = backend.generate(prompt, params, None)
        for _tok in gen:
            count += 1
            if t_first is None:
                t_first = time.perf_counter()
            if count >= n_new:
                break
        gen.close()
        t_end = time.perf_counter()
        ttfts.append(t_first - t0)
        speeds.append((count - 1) / (t_end - t_first))
    return statistics.median(ttfts), statistics.median(speeds)


def cpu_model(args: argparse.Namespace, work: Path) -> Path:
    """--cpu-model if given (e.g. a `bitsmith quantize` result), else SmolLM2 quantized here at --cpu-bpw."""
    if args.cpu_model is not None:
        return args.cpu_model
    return build_smollm(work / f"smollm2-{args.cpu_bpw}-{args.method}", args.cpu_bpw, args.method)


def cpu_section(args: argparse.Namespace, out: Path | None, work: Path) -> list[dict[str, Any]]:
    from bitsmith.engine.export.gguf import export_gguf
    from bitsmith.engine.model import bundled_model_path
    from bitsmith.engine.runtime.llamacpp import LlamaCppBackend
    from bitsmith.engine.runtime.native import NativeBackend

    folder = cpu_model(args, work)
    exports = {}
    for mode in ("exact", "compact"):
        path = work / f"{folder.name}-{mode}.gguf"
        if not path.exists():
            rep = export_gguf(folder, path, mode)
            emit({"section": "export", "mode": mode, **{k: v for k, v in rep.to_dict().items() if k != "fallbacks"},
                  "fallbacks": len(rep.fallbacks)}, out)
        exports[mode] = path
    native = NativeBackend.load(str(folder), device="cpu")
    question = [{"role": "user", "content": "Explain in detail how a bicycle works, part by part."}]
    prompt = native.render(question)
    rows = []
    bpw = native.describe()["bpw"]
    ttft, speed = _time_generation(native, prompt, args.cpu_tokens, args.repeats)
    rows.append({"section": "cpu", "runtime": "bitsmith native (torch, dequantized once)", "model": f"{bpw:.2f} bpw",
                 "prompt_tokens": len(prompt), "new_tokens": args.cpu_tokens, "ttft_s": round(ttft, 3),
                 "decode_tok_s": round(speed, 2), "threads": torch.get_num_threads()})
    emit(rows[-1], out)
    native.close()
    for label, path in [("exact GGUF (Q4_1)", exports["exact"]), ("compact GGUF (Q2_K where possible)",
                                                                     exports["compact"]),
                        ("bundled source GGUF (Q4_1 + Q8_0 embeddings)", bundled_model_path())]:
        cpp = LlamaCppBackend(path, n_ctx=1024, n_threads=torch.get_num_threads())
        ttft, speed = _time_generation(cpp, prompt, args.cpu_tokens, args.repeats)
        rows.append({"section": "cpu", "runtime": f"llama.cpp {label}", "model": path.name,
                     "file_mb": round(path.stat().st_size / 2**20, 1), "prompt_tokens": len(prompt),
                     "new_tokens": args.cpu_tokens, "ttft_s": round(ttft, 3), "decode_tok_s": round(speed, 2),
                     "threads": cpp.threads})
        emit(rows[-1], out)
        cpp.close()
    return rows


def fidelity_section(args: argparse.Namespace, out: Path | None, work: Path) -> list[dict[str, Any]]:
    from bitsmith.engine.data import stdlib_text
    from bitsmith.engine.eval.perplexity import perplexity as torch_ppl
    from bitsmith.engine.model import bundled_model_path, load_model
    from bitsmith.engine.runtime.llamacpp import LlamaCppBackend, perplexity
    from bitsmith.engine.runtime.native import NativeBackend

    folder = cpu_model(args, work)
    native = NativeBackend.load(str(folder), device="cpu")
    bpw = native.describe()["bpw"]
    ids = native.tokenizer(stdlib_text("heldout"))["input_ids"][: args.ppl_tokens]
    window = 512
    rows = []
    nat = torch_ppl(native.model, torch.tensor(ids), window=window).ppl
    native.close()
    for mode in ("exact", "compact"):
        path = work / f"{folder.name}-{mode}.gguf"
        cpp, n = perplexity(LlamaCppBackend(path, n_ctx=window, logits_all=True), ids, window)
        rows.append({"section": "fidelity", "model": f"{folder.name} ({bpw:.2f} bpw) {mode} GGUF",
                     "native_ppl": round(nat, 4), "llama_cpp_ppl": round(cpp, 4), "gap": round(cpp / nat - 1, 5),
                     "tokens": n, "window": window})
        emit(rows[-1], out)
    src_model, _ = load_model("bundled")
    src = torch_ppl(src_model, torch.tensor(ids), window=window).ppl
    src_cpp, n = perplexity(LlamaCppBackend(bundled_model_path(), n_ctx=window, logits_all=True), ids, window)
    rows.append({"section": "fidelity", "model": "bundled source Q4_1 GGUF", "native_ppl": round(src, 4),
                 "llama_cpp_ppl": round(src_cpp, 4), "gap": round(src_cpp / src - 1, 5), "tokens": n,
                 "window": window})
    emit(rows[-1], out)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", default="auto", help="comma list of gpu,cpu,fidelity (auto: what can run here)")
    p.add_argument("--out", type=Path, help="append the JSON lines here too")
    p.add_argument("--work", type=Path, default=None, help="where quantized models and exports are kept")
    p.add_argument("--bpw", type=float, nargs="+", default=[4.0, 2.5], help="GPU layouts (bits per weight)")
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--no-graph", action="store_true", help="GPU: decode eagerly (no CUDA graph)")
    p.add_argument("--gpu-smoke", action="store_true",
                   help="run the gpu section's code on the CPU with a tiny model (checks the script; no real numbers)")
    p.add_argument("--cpu-bpw", type=float, default=3.0)
    p.add_argument("--cpu-model", type=Path, default=None,
                   help="a Bitsmith folder to use for the cpu and fidelity sections instead of quantizing here")
    p.add_argument("--method", default="hqq", choices=("rtn", "hqq"), help="how the CPU model is quantized")
    p.add_argument("--cpu-tokens", type=int, default=64, help="tokens generated per CPU timing")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ppl-tokens", type=int, default=4096)
    args = p.parse_args(argv)
    sections = (["gpu"] if torch.cuda.is_available() else []) + ["cpu", "fidelity"] if args.sections == "auto" \
        else args.sections.split(",")
    work = args.work or Path(os.environ.get("BITSMITH_HOME", "/tmp/bitsmith-bench")) / "bench_decode"
    work.mkdir(parents=True, exist_ok=True)
    emit({"section": "machine", **machine()}, args.out)
    rows: list[dict[str, Any]] = []
    if "gpu" in sections:
        if not torch.cuda.is_available() and not args.gpu_smoke:
            print("no CUDA GPU: the gpu section is owed", file=sys.stderr)
        else:
            rows += gpu_section(args, args.out)
    if "cpu" in sections:
        rows += cpu_section(args, args.out, work)
    if "fidelity" in sections:
        rows += fidelity_section(args, args.out, work)
    print("\nsummary")
    for r in rows:
        print("  " + ", ".join(f"{k}={v}" for k, v in r.items() if k != "section"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
