"""Import GreenBitAI layer-mix models (green-bit-llm / bitorch-engine) into Bitsmith's native format.

The layout below was read from GreenBitAI's code (nothing of it is copied here):

* green-bit-llm ``green_bit_llm/common/model.py`` (``load_model``, ``make_quant``) and
  ``green_bit_llm/common/utils.py`` (``apply_quant_strategy``, ``STRATEGY_FILE_NAME``): a layer-mix model
  replaces each linear of ``model.layers.{i}`` by ``MBWQLinearCuda(use_mbw=False, use_gba_quant=True,
  asym=False, dq_group_size=32, dq_mode=2)`` with the bits and group size of its quant_strategy.json entry;
  ``lm_head``, embeddings and norms stay 16-bit.
* bitorch-engine ``bitorch_engine/layers/qlinear/nbit/layer.py`` (``MPQLinearBase.initialize``/``init_gba``),
  ``.../nbit/cuda/mbwq_layer.py`` (``MBWQLinearCuda``), ``.../nbit/cuda/mpq_layer.py`` (``prepare_params``),
  ``.../nbit/cuda/utils.py`` (``pack_fp_weight``, ``unpack_qweight``) and ``.../nbit/cuda/
  mbwq_linear_cuda_kernel.cu`` (``reconstruct_q4_gptq_kernel``, ``reconstruct_q2_gptq_kernel``) with
  ``.../cuda/exl2/q_gemm_kernel_gptq.cuh`` (``dot22_8_h2``, the input gather through ``q_perm``).
* GreenBitAI/gbx-lm ``gbx_lm/utils.py`` (``load_model``: transposes ``qweight``/``scales``/``zeros`` for MLX,
  whose codes are consecutive and least-significant first) and ``gbx_lm/models/quantized_linear_gba.py``
  (``create_scales_zeros``; the sign flip of ``zeros`` because MLX adds its biases).

What is supported, per quantized linear ``{prefix}`` of a folder with config.json, quant_strategy.json and
safetensors (N = out_features, K = in_features, G = ceil(K / g)):

==================  =========================  ====================================================
tensor              dtype / shape              meaning
==================  =========================  ====================================================
``qweight``         int32 [K·b/32, N]          codes packed along K, least significant bits first:
                                               code k of column n at bits (k mod 32/b)·b of word
                                               [k // (32/b), n] (GPTQ's order, Bitsmith's for b=2,4,8)
``scales``          fp16 [G, N]                s per group; group of input k is k // g
``zeros``           fp16 [G, N]                z per group, a float *in weight units*
``qstatistic``      uint8 [G, N/D, D]          instead of scales/zeros (double-quantized statistics,
``qscales_zeros``   fp16 [G, N/D, 1]           D = dq_group_size, 32): high nibble qs, low nibble qz;
``qscales_scales``  fp16 [G, N/D, 1]           s = (qs - qscales_zeros) · qscales_scales and
``qzeros_zeros``    fp16 [G, N/D, 1]           z = (qz - qzeros_zeros) · qzeros_scales, each
``qzeros_scales``   fp16 [G, N/D, 1]           operation rounded to fp16, then viewed as [G, N]
``q_perm``          int16 [K] (or [1, 1, K])   optional input permutation (all zeros: none): stored
                                               row j multiplies input x[q_perm[j]]
``channel_scale``   fp16 [1, 1, K]             optional per-input factor: x is multiplied by it first
``bias``            fp16 [N]                   used only where the model's linear has a bias
``g_idx``, ``wf``   int32                      loading leftovers the layer-mix kernels never read
==================  =========================  ====================================================

The weight GreenBitAI's kernels compute is ``w = fp16(s·q − z)`` (one fused multiply-add, ``__hfma2(s, q,
−z)``), with z subtracted after scaling — not ``(q − z)·s``. quant_strategy.json reads
``{"measurement": {"model.layers.{i}": {"q_proj": {"bits": [b], "bits_prop": [1], "group_size": {"b": g},
...}}}}``. When a layer has both fp16 scales/zeros and double-quantized statistics, the fp16 ones are used
(MBWQLinearCuda uses them and drops the rest).

Conversion (codes and scales are copied untouched, the zero-point becomes z / s in code units):

* ``z = fp16(z0 · s)`` for integers z0 in [0, 2^b − 1] everywhere: integer zero-points (``int{b}_g{g}``, or
  ``_sym`` when all are 2^(b−1)) — the same codes, scales and zero-points, exact up to GreenBitAI's own
  fp16 rounding of ``z``.
* otherwise fractional zero-points ``fp16(z / s)`` (``_zf``): the nearest Bitsmith format; the weight moves
  by at most ``s · ulp(z / s) / 2`` (≈ 2⁻¹¹·|z|) per element, about as much as fp16's own rounding of w.
  Each layer's measured error (max |Δw| / max |w|) is in the report.
* double-quantized statistics decode to fp16 scales first (Bitsmith's ``_dq`` scale codes are log2-domain,
  not GreenBitAI's affine 4-bit codes): per group and output the import stores 16-bit scales and b- or 16-bit
  zeros where the source had 4 + 4 bits, so such a layer grows (≈ +0.7 bpw at g = 32).
* a non-trivial ``q_perm`` or ``channel_scale`` has no Bitsmith counterpart: such a layer's effective weight is
  re-quantized (HQQ) in the same bits and group size — lossy, counted in the report; also a group with
  s = 0 but z ≠ 0.

Refused with a BadInputError naming the layer: channel-mix layers (several widths in one layer, ``q_groups``),
widths other than 2, 4 and 8 bits, a missing quant_strategy.json or entry, and tensors whose shapes do not
match the strategy and config.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from bitsmith.engine.errors import BadInputError
from bitsmith.kernels.pack import packed_rows, unpack_codes

from .checkpoint_import import import_checkpoint, read_tensors
from .gptq_import import ImportReport
from .linear import QuantLinear
from .quantize import quantize_weight
from .stats import pack_stat_codes

STRATEGY_FILE = "quant_strategy.json"
GREENBIT_BITS = (2, 4, 8)
"""Widths whose GreenBitAI packing (32/b codes per int32, LSB first) is Bitsmith's too."""
DQ_KEYS = ("qstatistic", "qscales_zeros", "qscales_scales", "qzeros_zeros", "qzeros_scales")
_CHUNK = 4096  # output columns dequantized at a time (bounds float64 temporaries)


@dataclass(frozen=True)
class LayerFormat:
    """Bits and group size of one GreenBitAI layer, from quant_strategy.json."""

    bits: int
    group_size: int


@dataclass
class GreenBitReport(ImportReport):
    """How each layer came across: exact, nearest format (fractional zeros) or re-quantized, with errors."""

    approximate: list[str] = field(default_factory=list)
    double_quantized: list[str] = field(default_factory=list)
    weight_error: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready summary (max_weight_error: max over layers of max |Δw| / max |w|)."""
        worst = max(self.weight_error.items(), key=lambda kv: kv[1], default=(None, 0.0))
        return {
            "exact": len(self.exact), "approximate": len(self.approximate), "requantized": len(self.requantized),
            "double_quantized": len(self.double_quantized), "requantized_layers": self.requantized,
            "max_weight_error": worst[1], "worst_layer": worst[0],
        }


# -- quant_strategy.json -------------------------------------------------------------------------------------
def read_strategy(folder: Path) -> dict[str, dict]:
    """The "measurement" of a folder's quant_strategy.json (block → linear → entry), or BadInputError."""
    path = folder / STRATEGY_FILE
    if not path.is_file():
        raise BadInputError(f"{folder} has no {STRATEGY_FILE}: it is not a GreenBitAI layer-mix model",
                            "download the model's quant_strategy.json too (GreenBitAI's layer-mix repositories "
                            "carry one), or import a GPTQ checkpoint with --from gptq")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path} cannot be read as JSON: {exc}", "download the file again") from None
    blocks = data.get("measurement", data) if isinstance(data, dict) else None
    if not isinstance(blocks, dict) or not all(isinstance(v, dict) for v in blocks.values()):
        raise BadInputError(f"{path} is not a quant_strategy.json ({{\"measurement\": {{block: {{linear: ...}}}}}})",
                            "download the file again")
    return blocks


def _strategy_entry(blocks: dict[str, dict], prefix: str) -> dict:
    """The strategy entry of the layer at `prefix` (GreenBitAI keys by block, then by the linear's short name)."""
    parts = prefix.split(".")
    cut = next((i for i, p in enumerate(parts) if p.isdigit()), None)
    if cut is not None:
        block, inner = ".".join(parts[: cut + 1]), ".".join(parts[cut + 1:])
        linears = blocks.get(block, {})
        short = parts[-1]
        keys = [inner, short]
        if ".shared_expert" in prefix:
            keys.append(f"moe_shared_expert_{short}")
        elif ".experts." in prefix:
            keys.append(f"moe_expert_{short}")
        for key in keys:
            if isinstance(linears.get(key), dict):
                return linears[key]
    raise BadInputError(f"{STRATEGY_FILE} has no entry for the quantized layer {prefix!r}",
                        "the checkpoint and its quant_strategy.json do not match: download both again")


def layer_format(entry: dict, prefix: str, in_features: int) -> LayerFormat:
    """Bits and group size of a layer-mix entry; BadInputError for channel-mix entries and unknown widths."""
    bits = entry.get("bits")
    widths = bits if isinstance(bits, list) else [bits]
    props = entry.get("bits_prop", [1])
    props = props if isinstance(props, list) else [props]
    if len(widths) != 1 or len(props) > 1 or (props and float(props[0]) != 1.0):
        raise BadInputError(f"{prefix}: {STRATEGY_FILE} mixes widths {widths} in proportions {props} inside the "
                            "layer (GreenBitAI channel-mix), which Bitsmith's per-layer formats cannot hold",
                            "import a layer-mix model instead, or quantize the original model with Bitsmith")
    try:
        b = int(widths[0])
    except (TypeError, ValueError):
        raise BadInputError(f"{prefix}: {STRATEGY_FILE} gives no bit width (bits = {bits!r})",
                            "the quant_strategy.json is damaged: download it again") from None
    if b not in GREENBIT_BITS:
        raise BadInputError(f"{prefix}: {STRATEGY_FILE} gives {b}-bit codes; Bitsmith imports GreenBitAI layers "
                            f"of {', '.join(map(str, GREENBIT_BITS))} bits",
                            "quantize the original model with Bitsmith instead")
    gs = entry.get("group_size", -1)
    try:
        g = int(gs.get(str(b), next(iter(gs.values()))) if isinstance(gs, dict) else gs)
    except (StopIteration, TypeError, ValueError):
        raise BadInputError(f"{prefix}: {STRATEGY_FILE} gives no usable group size ({gs!r})",
                            "the quant_strategy.json is damaged: download it again") from None
    if g in (-1, 0):
        g = in_features
    if g < 0:
        raise BadInputError(f"{prefix}: {STRATEGY_FILE} gives group size {g}", "download the file again")
    return LayerFormat(b, g)


# -- statistics and the weight GreenBitAI computes ----------------------------------------------------------
def _fp16(x: torch.Tensor) -> torch.Tensor:
    """Round float64 values to fp16 (one rounding: what one fp16 arithmetic operation does)."""
    return x.to(torch.float16)


def _check_shape(t: torch.Tensor, shape: tuple[int, ...], prefix: str, key: str, why: str) -> None:
    if tuple(t.shape) != shape:
        raise BadInputError(f"{prefix}.{key} has shape {tuple(t.shape)}, expected {shape} ({why})",
                            "the checkpoint, its config.json and its quant_strategy.json do not match")


def decode_statistics(tensors: dict[str, torch.Tensor], groups: int, out_features: int,
                      prefix: str) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """fp16 scales and zeros [G, N] of a layer, and whether they came from double-quantized statistics."""
    why = f"{groups} groups × {out_features} outputs"
    if "scales" in tensors and "zeros" in tensors:
        s, z = tensors["scales"], tensors["zeros"]
        _check_shape(s, (groups, out_features), prefix, "scales", why)
        _check_shape(z, (groups, out_features), prefix, "zeros", why)
        return s.to(torch.float16), z.to(torch.float16), False
    missing = [k for k in DQ_KEYS if k not in tensors]
    if missing:
        raise BadInputError(f"GreenBitAI layer {prefix!r} has neither fp16 scales/zeros nor the double-quantized "
                            f"statistics (missing {missing})", "the checkpoint is incomplete: download it again")
    qstat = tensors["qstatistic"]
    if qstat.dim() != 3 or qstat.shape[0] != groups or qstat.shape[1] * qstat.shape[2] != out_features:
        raise BadInputError(f"{prefix}.qstatistic has shape {tuple(qstat.shape)}, expected [{groups}, N/D, D] "
                            f"with N = {out_features}", "the checkpoint and its config.json do not match")
    meta_shape = (groups, qstat.shape[1], 1)
    for key in DQ_KEYS[1:]:
        _check_shape(tensors[key], meta_shape, prefix, key, "one per group and block of outputs")
    q = qstat.to(torch.int32) & 0xFF
    codes = {"qscales": (q >> 4) & 0xF, "qzeros": q & 0xF}
    out = []
    for name in ("qscales", "qzeros"):
        off = tensors[f"{name}_zeros"].to(torch.float16).to(torch.float64)
        step = tensors[f"{name}_scales"].to(torch.float16).to(torch.float64)
        centred = _fp16(codes[name].to(torch.float64) - off).to(torch.float64)
        out.append(_fp16(centred * step).reshape(groups, out_features))
    return out[0], out[1], True


def greenbit_weight(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, bits: int, group_size: int,
                    in_features: int, q_perm: torch.Tensor | None = None,
                    channel_scale: torch.Tensor | None = None) -> torch.Tensor:
    """The float32 weight [N, K] GreenBitAI's kernels use: fp16(s·q − z), gathered by q_perm, times channel_scale."""
    n = qweight.shape[1]
    g_of_k = torch.arange(in_features) // group_size
    w = torch.empty(n, in_features, dtype=torch.float32)
    for c0 in range(0, n, _CHUNK):
        cols = slice(c0, min(c0 + _CHUNK, n))
        q = unpack_codes(qweight[:, cols].contiguous(), bits, in_features).to(torch.float64)  # [n_c, K]
        s = scales[:, cols].to(torch.float64)[g_of_k].t()
        z = zeros[:, cols].to(torch.float64)[g_of_k].t()
        w[cols] = _fp16(q * s - z).to(torch.float32)  # exact in float64, one rounding: __hfma2
    if q_perm is not None:
        permuted = torch.empty_like(w)
        permuted[:, q_perm] = w
        w = permuted
    if channel_scale is not None:
        w = w * channel_scale.to(torch.float32).view(1, -1)
    return w


def _permutation(tensors: dict[str, torch.Tensor], in_features: int, prefix: str) -> torch.Tensor | None:
    """The layer's input permutation as int64 [K], or None when absent or trivial (all zeros or identity)."""
    t = tensors.get("q_perm")
    if t is None:
        return None
    perm = t.reshape(-1).to(torch.int64) & 0xFFFF  # stored as int16, read by the kernels as uint16
    if perm.numel() != in_features:
        raise BadInputError(f"{prefix}.q_perm has {perm.numel()} entries for {in_features} inputs",
                            "the checkpoint and its config.json do not match")
    ident = torch.arange(in_features)
    if not bool(perm.any()) or torch.equal(perm, ident):
        return None
    if not torch.equal(torch.sort(perm).values, ident):
        raise BadInputError(f"{prefix}.q_perm is not a permutation of the {in_features} inputs",
                            "the checkpoint is damaged: download it again")
    return perm


def _channel_scale(tensors: dict[str, torch.Tensor], in_features: int, prefix: str) -> torch.Tensor | None:
    """The layer's per-input factor [K], or None when absent or all ones."""
    t = tensors.get("channel_scale")
    if t is None:
        return None
    cs = t.reshape(-1)
    if cs.numel() != in_features:
        raise BadInputError(f"{prefix}.channel_scale has {cs.numel()} entries for {in_features} inputs",
                            "the checkpoint and its config.json do not match")
    return None if bool((cs == 1).all()) else cs


# -- one layer ------------------------------------------------------------------------------------------------
def _zero_points(scales: torch.Tensor, zeros: torch.Tensor, bits: int) -> tuple[str, torch.Tensor] | None:
    """("int", z0) / ("sym", z0) when z = fp16(z0·s) with integer z0, ("zf", fp16 z/s), or None (not representable)."""
    maxq = (1 << bits) - 1
    s, z = scales.to(torch.float64), zeros.to(torch.float64)
    dead = s == 0
    if bool((dead & (z != 0)).any()):
        return None  # the group's weights are all −z: (q − z')·0 cannot give that
    ratio = torch.where(dead, torch.full_like(s, float((maxq + 1) // 2)), z / torch.where(dead, 1.0, s))
    z0 = torch.round(ratio)
    if bool(((z0 >= 0) & (z0 <= maxq)).all()) and torch.equal(_fp16(z0 * s), zeros.to(torch.float16)):
        return ("sym" if bool((z0 == (maxq + 1) // 2).all()) else "int"), z0
    zf = _fp16(ratio)
    if not bool(torch.isfinite(zf).all()):
        return None
    return "zf", zf


def convert_layer(tensors: dict[str, torch.Tensor], in_features: int, fmt: LayerFormat, prefix: str = "",
                  bias: torch.Tensor | None = None) -> tuple[QuantLinear, str, float, bool]:
    """One GreenBitAI linear as a QuantLinear; returns (layer, "exact"|"approximate"|"requantized", error, dq).

    error is max |w_bitsmith − w_greenbit| / max |w_greenbit| over the layer; dq says whether the statistics
    were double-quantized.
    """
    if "q_groups" in tensors:
        raise BadInputError(f"{prefix} is a GreenBitAI channel-mix layer (it has q_groups): several widths in one "
                            "layer cannot be held by Bitsmith's per-layer formats",
                            "import a layer-mix model instead, or quantize the original model with Bitsmith")
    if "qweight" not in tensors:
        raise BadInputError(f"GreenBitAI layer {prefix!r} lacks 'qweight'", "the checkpoint is incomplete")
    qweight = tensors["qweight"]
    if qweight.dtype != torch.int32 or qweight.dim() != 2:
        raise BadInputError(f"{prefix}.qweight is {qweight.dtype} {tuple(qweight.shape)}, expected 2-D int32",
                            "is this a GreenBitAI checkpoint?")
    bits, group = fmt.bits, fmt.group_size
    rows, n = packed_rows(in_features, bits), qweight.shape[1]
    if qweight.shape[0] != rows:
        raise BadInputError(f"{prefix}.qweight has {qweight.shape[0]} rows, but {in_features} inputs at {bits} bits "
                            f"pack into {rows}: the layer's bits in {STRATEGY_FILE} do not match its codes",
                            "the checkpoint, its config.json and its quant_strategy.json do not match")
    groups = -(-in_features // group)
    scales, zeros, dq = decode_statistics(tensors, groups, n, prefix)
    perm, cs = _permutation(tensors, in_features, prefix), _channel_scale(tensors, in_features, prefix)
    ref = greenbit_weight(qweight, scales, zeros, bits, group, in_features, perm, cs)
    zp = None if perm is not None or cs is not None else _zero_points(scales, zeros, bits)
    if zp is None:
        qw = quantize_weight(ref, f"int{bits}_g{group}", "hqq", prefix)
        layer, how = QuantLinear.from_quantized(qw, bias), "requantized"
    else:
        kind, z = zp
        state = {"qweight": qweight, "scales": scales}
        spec = f"int{bits}_g{group}" + {"sym": "_sym", "int": "", "zf": "_zf"}[kind]
        if kind == "int":
            state["zero_codes"] = pack_stat_codes(z.to(torch.uint8), bits)
        elif kind == "zf":
            state["zeros"] = z
        if bias is not None:
            state["bias"] = bias.to(torch.float16) if bias.dtype != torch.float32 else bias
        layer = QuantLinear.from_state_dict(state, spec, in_features)
        how = "approximate" if kind == "zf" else "exact"
    peak = float(ref.abs().max())
    err = float((layer.dequantize() - ref).abs().max()) / peak if peak > 0 else 0.0
    return layer, how, err, dq


# -- the folder -----------------------------------------------------------------------------------------------
def import_greenbit(src: str | Path, out: str | Path,
                    on_progress: Callable[[int, int], None] | None = None) -> tuple[Path, GreenBitReport]:
    """Convert a GreenBitAI layer-mix folder into a Bitsmith model folder at `out` (written atomically)."""
    folder = Path(src).expanduser()
    if not folder.is_dir():
        raise BadInputError(f"{folder} is not a folder", "give the folder of a GreenBitAI layer-mix model")
    blocks = read_strategy(folder)
    state = read_tensors(folder, "GreenBitAI models ship as safetensors: download the model's *.safetensors files")
    report = GreenBitReport()

    def convert(prefix: str, tensors: dict[str, torch.Tensor], linear: nn.Linear) -> QuantLinear:
        fmt = layer_format(_strategy_entry(blocks, prefix), prefix, linear.in_features)
        bias = None
        if linear.bias is not None:
            if "bias" not in tensors:
                raise BadInputError(f"GreenBitAI layer {prefix!r} lacks the bias its model has",
                                    "the checkpoint is incomplete: download it again")
            bias = tensors["bias"]
        layer, how, err, dq = convert_layer(tensors, linear.in_features, fmt, prefix, bias)
        getattr(report, how).append(prefix)  # report.exact / .approximate / .requantized
        if dq:
            report.double_quantized.append(prefix)
        report.formats[prefix] = layer.spec.name
        report.weight_error[prefix] = err
        return layer

    path = import_checkpoint(folder, out, state, convert, {"model": str(folder), "format": "greenbit"},
                             lambda: {"imported_from": "greenbit", "import": report.to_dict()},
                             "GreenBitAI low-bit model", on_progress)
    return path, report
