"""`export_gguf`: a Bitsmith model (or any supported HF model) written as a GGUF file llama.cpp runs.

Modes:

* **exact** — every quantized linear whose groups tile into 32-weight blocks (INT4/g128, INT2/g64, ...)
  becomes Q4_1 with its codes unchanged (d = s, m = -s·z per block: exact up to fp16 rounding of m);
  anything else (odd group sizes, INT8) is written as F16 of the dequantized weight, also exact.
* **compact** — as exact, but INT2 layers whose rows are a multiple of 256 long are re-fitted into Q2_K
  (2.625 bits per weight instead of Q4_1's 5), and INT8 layers become Q8_0. The report lists the layers
  that could not be re-fitted and stayed exact.

A channel-mix layer (several formats in one linear, engine/quant/mixed_linear.py) has no GGML counterpart,
since a GGUF tensor has one type: exact mode writes its dequantized weight as F16 (exact, larger), compact mode
re-quantizes that weight to the format of its highest-bit part with HQQ and encodes it as above (lossy); both
are listed in the report's fallbacks.

Embeddings and kept 16-bit linears are F16 (what the Bitsmith folder stores), norms and biases F32. The
file is written under a temporary name and renamed into place. Each encoded layer is checked on a few
rows by decoding the GGML blocks with the gguf package and comparing with Bitsmith's own dequantization.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bitsmith.engine.errors import BadInputError, DiskFullError, UnsupportedModelError

from . import quants
from .arch import Family, family_for, head_dim, qk_permutation, write_hparams
from .vocab import write_tokenizer

log = logging.getLogger(__name__)

MODES = ("exact", "compact")
VERIFY_ROWS = 16  # rows per layer decoded back for the exactness check


@dataclass
class ExportReport:
    """What was written: types per tensor, how exact the quantized layers are, and what fell back."""

    path: str
    mode: str
    architecture: str
    file_bytes: int
    bits_per_weight: float  # file bits over every weight in the file
    tensor_types: dict[str, int]
    linear_types: dict[str, int]
    q4_1_max_abs_error: float  # worst |GGUF weight - Bitsmith weight| over checked rows of Q4_1 layers
    q2_k_rel_rmse: float | None  # mean relative RMS error of re-fitted Q2_K layers (compact mode)
    fallbacks: list[str] = field(default_factory=list)
    tokenizer: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


@dataclass
class _Encoded:
    data: np.ndarray
    raw_dtype: Any  # gguf.GGMLQuantizationType or None (plain float arrays)
    kind: str


def _load(source: str) -> tuple[nn.Module, Any, dict]:
    from bitsmith.engine.model import load_model
    from bitsmith.engine.quant.store import is_quantized_folder, load_quantized

    if is_quantized_folder(source):
        saved = load_quantized(source, dtype=torch.float32)
        return saved.model, saved.tokenizer, saved.meta
    model, tok = load_model(source, dtype=torch.float32)
    return model, tok, {"source": {"model": source}}


def _linear_arrays(mod: Any, perm: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes [N, K] uint8, scales [N, G] f32, zeros [N, G] f32) of a QuantLinear, rows permuted."""
    from bitsmith.kernels.pack import unpack_codes

    codes = unpack_codes(mod.qweight.cpu(), mod.spec.bits, mod.in_features).numpy()
    scales = mod.scales.detach().float().cpu().numpy().T
    zeros = mod.zeros.detach().float().cpu().numpy().T
    if perm is not None:
        codes, scales, zeros = codes[perm], scales[perm], zeros[perm]
    return np.ascontiguousarray(codes), np.ascontiguousarray(scales), np.ascontiguousarray(zeros)


def _reference(codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray, group: int) -> np.ndarray:
    k = codes.shape[1]
    idx = np.arange(k) // group
    return (codes.astype(np.float32) - zeros[:, idx]) * scales[:, idx]


class _Checker:
    """Decodes a few rows of each encoded layer and keeps the worst / mean error."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.q4_max = 0.0
        self.q2_rel: list[float] = []

    def check(self, enc: _Encoded, ref: np.ndarray) -> None:
        from gguf.quants import dequantize

        if self.rows <= 0 or enc.kind not in ("Q4_1", "Q2_K"):
            return
        got = dequantize(enc.data[: self.rows], enc.raw_dtype)
        want = ref[: self.rows]
        if enc.kind == "Q4_1":
            self.q4_max = max(self.q4_max, float(np.abs(got - want).max()))
        else:
            denom = float(np.sqrt((want**2).mean())) or 1.0
            self.q2_rel.append(float(np.sqrt(((got - want) ** 2).mean())) / denom)


def _encode_quant(mod: Any, mode: str, perm: np.ndarray | None, name: str, fallbacks: list[str],
                  checker: _Checker) -> _Encoded:
    """A QuantLinear as Q4_1 / Q2_K / Q8_0 / F16 (see the module docstring for the rules)."""
    import gguf

    spec, k = mod.spec, mod.in_features
    codes, scales, zeros = _linear_arrays(mod, perm)
    ref = _reference(codes, scales, zeros, spec.group_size)
    if mode == "compact" and spec.bits == 2:
        if quants.q2_k_compatible(k, spec.group_size, spec.bits):
            enc = _Encoded(quants.encode_q2_k(codes, scales, zeros, spec.group_size),
                           gguf.GGMLQuantizationType.Q2_K, "Q2_K")
            checker.check(enc, ref)
            return enc
        fallbacks.append(f"{name}: {k} inputs is not a multiple of 256, kept exact instead of Q2_K")
    if quants.q4_1_compatible(k, spec.group_size, spec.bits):
        enc = _Encoded(quants.encode_q4_1(codes, scales, zeros, spec.group_size),
                       gguf.GGMLQuantizationType.Q4_1, "Q4_1")
        checker.check(enc, ref)
        return enc
    if mode == "compact" and spec.bits == 8 and k % 32 == 0:
        data = gguf.quants.quantize(ref.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
        return _Encoded(data, gguf.GGMLQuantizationType.Q8_0, "Q8_0")
    fallbacks.append(f"{name}: {spec.name} with {k} inputs has no exact GGML block type, written as F16")
    return _Encoded(ref.astype(np.float16), None, "F16")


def _encode_mixed(mod: Any, mode: str, perm: np.ndarray | None, name: str, fallbacks: list[str],
                  checker: _Checker) -> _Encoded:
    """A ChannelMixLinear: F16 of its dequantized weight (exact mode), or that weight re-quantized to its highest-bit
    part's format and encoded like any quantized linear (compact mode, lossy)."""
    from bitsmith.engine.quant.linear import QuantLinear
    from bitsmith.engine.quant.quantize import quantize_weight

    w = mod.dequantize(torch.float32).cpu()
    if mode == "compact":
        spec = max(mod.mix.specs, key=lambda s: (s.bits, -s.group_size))
        requant = QuantLinear.from_quantized(quantize_weight(w, spec, "hqq" if spec.asymmetric else "rtn", name))
        fallbacks.append(f"{name}: channel-mix {mod.mix.name} re-quantized to {spec.name} (lossy: a GGUF tensor "
                         "has one type)")
        log.warning("%s: channel-mix layer re-quantized to %s for GGUF (lossy)", name, spec.name)
        return _encode_quant(requant, mode, perm, name, fallbacks, checker)
    fallbacks.append(f"{name}: channel-mix {mod.mix.name} written as F16 of its dequantized weight (a GGUF tensor "
                     "has one type; exact)")
    ref = w.numpy()
    return _Encoded((ref[perm] if perm is not None else ref).astype(np.float16), None, "F16")


def _tensor_plan(model: nn.Module, fam: Family) -> list[tuple[str, str, Any]]:
    """(hf_name, what, object) in file order: what is "linear", "bias" or "param"."""
    from bitsmith.engine.quant.mixed_linear import ChannelMixLinear, quant_modules

    quant = quant_modules(model)
    inside = tuple(n + "." for n, m in quant.items() if isinstance(m, ChannelMixLinear))  # its parts
    owned: set[int] = set()
    plan: list[tuple[str, str, Any]] = []
    linears = {
        n: m for n, m in model.named_modules()
        if (n in quant or isinstance(m, nn.Linear)) and not n.startswith(inside)
    }
    embed = model.get_input_embeddings().weight
    for m in linears.values():
        for p in m.parameters(recurse=False):
            if p is not embed:  # a tied lm_head shares the embedding, which is written as token_embd
                owned.add(id(p))
    tied = bool(getattr(model.config, "tie_word_embeddings", False)) or fam.tied_output
    seen: set[int] = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in owned or id(p) in seen:
            continue
        seen.add(id(p))
        plan.append((name, "param", p))
    for n, m in linears.items():
        weight = getattr(m, "weight", None)
        if weight is not None and weight is embed:
            continue  # a tied lm_head
        if tied and m is model.get_output_embeddings():
            continue
        plan.append((n + ".weight", "linear", m))
        bias = getattr(m, "bias", None)
        if bias is not None:
            plan.append((n + ".bias", "bias", m))
    return plan


def export_gguf(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    mode: str = "exact",
    *,
    on_progress: Callable[[int, int], None] | None = None,
    verify_rows: int = VERIFY_ROWS,
    check_cancel: Callable[[], None] | None = None,
) -> ExportReport:
    """Write `source` (a Bitsmith folder, HF folder, .gguf or Hub id) to the GGUF file `out`."""
    import gguf

    if mode not in MODES:
        raise BadInputError(f"unknown export mode {mode!r}", f"use one of: {', '.join(MODES)}")
    out_path = Path(out).expanduser()
    if out_path.suffix.lower() != ".gguf":
        raise BadInputError(f"the output {out_path} should end in .gguf", "name the file e.g. model.gguf")
    if out_path.is_dir():
        raise BadInputError(f"{out_path} is a folder", "give a file name such as model.gguf")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model, tok, meta = _load(str(source))
    config = model.config
    fam = family_for(config)
    arch_enum = {name: enum for enum, name in gguf.MODEL_ARCH_NAMES.items()}[fam.arch]
    name_map = gguf.get_tensor_name_map(arch_enum, int(config.num_hidden_layers))
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), fam.arch)
    try:
        report = _write(model, tok, meta, config, fam, name_map, writer, mode, verify_rows, on_progress,
                        check_cancel)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out_path)
    except OSError as exc:
        _discard(writer, tmp)
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(f"the disk is full while writing {out_path}",
                                "free some space and export again") from exc
        raise
    except BaseException:
        _discard(writer, tmp)
        raise
    report.path = str(out_path)
    report.file_bytes = out_path.stat().st_size
    report.bits_per_weight = round(report.file_bytes * 8 / max(_weight_count(model), 1), 4)
    return report


def _discard(writer: Any, tmp: Path) -> None:
    try:
        writer.close()
    except Exception:  # noqa: BLE001 - already failing
        pass
    tmp.unlink(missing_ok=True)


def _weight_count(model: nn.Module) -> int:
    from bitsmith.engine.quant.linear import QuantLinear

    n = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, QuantLinear))
    seen: set[int] = set()
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


def _write(model: nn.Module, tok: Any, meta: dict, config: Any, fam: Family, name_map: Any, writer: Any,
           mode: str, verify_rows: int, on_progress: Callable[[int, int], None] | None,
           check_cancel: Callable[[], None] | None) -> ExportReport:
    import gguf

    from bitsmith.engine.quant.linear import QuantLinear
    from bitsmith.engine.quant.mixed_linear import ChannelMixLinear

    writer.add_name(str((meta.get("source") or {}).get("model") or getattr(config, "_name_or_path", "") or "model"))
    writer.add_string("general.quantized_by", "Bitsmith")
    writer.add_string("bitsmith.export_mode", mode)
    if meta.get("layout"):
        bpw = (meta.get("bpw") or {}).get("quantized_linears")
        if bpw is not None:
            writer.add_float32("bitsmith.layout_bpw", float(bpw))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    rope_factors = write_hparams(writer, config, fam)
    vocab_size = int(model.get_input_embeddings().weight.shape[0])
    with tempfile.TemporaryDirectory(prefix="bitsmith-tok-") as tmpdir:
        tok.save_pretrained(tmpdir)
        origin = write_tokenizer(writer, Path(tmpdir), tok, meta, vocab_size)

    n_head = int(config.num_attention_heads)
    n_kv = int(getattr(config, "num_key_value_heads", None) or n_head)
    hd = head_dim(config)
    plan = _tensor_plan(model, fam)
    checker = _Checker(verify_rows)
    fallbacks: list[str] = []
    tensor_types: Counter[str] = Counter()
    linear_types: Counter[str] = Counter()
    if rope_factors is not None:
        writer.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", rope_factors)
        tensor_types["F32"] += 1
    for i, (hf_name, what, obj) in enumerate(plan):
        if check_cancel is not None:
            check_cancel()
        gg_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gg_name is None:
            raise UnsupportedModelError(f"tensor {hf_name} has no llama.cpp counterpart for {fam.arch}",
                                        "this model variant cannot be exported; chat with the native backend")
        perm = None
        if fam.permute_qk and what in ("linear", "bias"):
            if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
                perm = qk_permutation(n_head * hd, n_head)
            elif hf_name.endswith(("k_proj.weight", "k_proj.bias")):
                perm = qk_permutation(n_kv * hd, n_kv)
        if what == "linear":
            if isinstance(obj, QuantLinear):
                enc = _encode_quant(obj, mode, perm, hf_name, fallbacks, checker)
            elif isinstance(obj, ChannelMixLinear):
                enc = _encode_mixed(obj, mode, perm, hf_name, fallbacks, checker)
            else:
                w = obj.weight.detach().float().cpu().numpy()
                enc = _Encoded((w[perm] if perm is not None else w).astype(np.float16), None, "F16")
            linear_types[enc.kind] += 1
        elif what == "bias":
            b = obj.bias.detach().float().cpu().numpy()
            enc = _Encoded((b[perm] if perm is not None else b).astype(np.float32), None, "F32")
        else:
            t = obj.detach().float().cpu().numpy()
            if fam.norm_shift and hf_name.endswith("norm.weight"):
                t = t + fam.norm_shift
            kind = "F32" if t.ndim == 1 else "F16"
            enc = _Encoded(t.astype(np.float32 if kind == "F32" else np.float16), None, kind)
        writer.add_tensor(gg_name, enc.data, raw_dtype=enc.raw_dtype)
        tensor_types[enc.kind] += 1
        if on_progress is not None:
            on_progress(i + 1, len(plan))
    dominant = linear_types.most_common(1)[0][0] if linear_types else "F16"
    file_type = {"Q4_1": gguf.LlamaFileType.MOSTLY_Q4_1, "Q2_K": gguf.LlamaFileType.MOSTLY_Q2_K,
                 "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}.get(dominant, gguf.LlamaFileType.MOSTLY_F16)
    writer.add_file_type(int(file_type))
    return ExportReport(
        path="", mode=mode, architecture=fam.arch, file_bytes=0, bits_per_weight=0.0,
        tensor_types=dict(tensor_types), linear_types=dict(linear_types),
        q4_1_max_abs_error=checker.q4_max,
        q2_k_rel_rmse=(round(float(np.mean(checker.q2_rel)), 5) if checker.q2_rel else None),
        fallbacks=fallbacks, tokenizer=origin,
    )
