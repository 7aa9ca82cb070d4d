"""Import AutoGPTQ / GPTQModel checkpoints (qweight, qzeros, scales, g_idx) into Bitsmith's native format.

GPTQ packs codes exactly as Bitsmith does (int32 [K·b/32, N], least significant bits first along K) and
its qzeros as Bitsmith packs integer zero-points (int32 [G, N·b/32], LSB first along N), so a checkpoint
without act-order converts without touching a weight: codes and scales are copied, zeros re-packed.

Quirks handled:
* the "gptq" (v1) checkpoint format stores every zero minus one (AutoGPTQ's historical offset; GPTQModel's
  "gptq_v2" does not). A v1 zero stored as 2^b − 1 therefore means 2^b, which b-bit integer zeros cannot
  hold: such layers keep fp16 zeros (the `_zf` format; still exact).
* symmetric checkpoints whose zeros are all 2^(b−1) become the `_sym` format (no zeros stored).
* act-order (desc_act) checkpoints index groups through a permuted g_idx, which the native kernels cannot
  follow: those layers are dequantized and re-quantized (HQQ) in the same bits and group size. That is
  lossy; the import counts and reports such layers.
* group_size −1 means one group over the whole input.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from bitsmith.engine.errors import BadInputError, UnsupportedModelError
from bitsmith.kernels.pack import unpack_codes

from .checkpoint_import import import_checkpoint, read_tensors
from .linear import QuantLinear
from .quantize import quantize_weight
from .stats import pack_stat_codes, unpack_stat_codes

GPTQ_BITS = (2, 4, 8)


@dataclass(frozen=True)
class GptqConfig:
    """What a GPTQ checkpoint says about itself (config.json's quantization_config or quantize_config.json)."""

    bits: int
    group_size: int  # -1: one group per row
    sym: bool
    desc_act: bool
    v1_zeros: bool  # "gptq" format: zeros stored minus one


@dataclass
class ImportReport:
    """How each quantized layer came across."""

    exact: list[str] = field(default_factory=list)
    requantized: list[str] = field(default_factory=list)
    formats: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready summary."""
        return {"exact": len(self.exact), "requantized": len(self.requantized), "requantized_layers": self.requantized}


def read_gptq_config(folder: Path) -> GptqConfig:
    """The GPTQ settings of a checkpoint folder, or BadInputError saying what is missing or unsupported."""
    qc = None
    config_path = folder / "config.json"
    if config_path.is_file():
        qc = json.loads(config_path.read_text()).get("quantization_config")
    if qc is None and (folder / "quantize_config.json").is_file():
        qc = json.loads((folder / "quantize_config.json").read_text())
    if qc is None:
        raise BadInputError(f"{folder} has no GPTQ settings (no quantization_config in config.json, no "
                            "quantize_config.json)", "give the folder of an AutoGPTQ or GPTQModel checkpoint")
    method = str(qc.get("quant_method", "gptq")).lower()
    if method != "gptq":
        raise UnsupportedModelError(f"{folder} is a {method!r} checkpoint, not GPTQ",
                                    "Bitsmith imports GPTQ checkpoints; quantize the original model instead")
    bits = int(qc.get("bits", 0))
    if bits not in GPTQ_BITS:
        raise UnsupportedModelError(f"{folder} is a {bits}-bit GPTQ checkpoint; Bitsmith imports "
                                    f"{', '.join(map(str, GPTQ_BITS))}-bit ones",
                                    "quantize the original model with Bitsmith instead")
    fmt = str(qc.get("checkpoint_format", "gptq")).lower()
    if fmt not in ("gptq", "gptq_v2"):
        raise UnsupportedModelError(f"{folder}: GPTQ checkpoint format {fmt!r} is not one Bitsmith reads",
                                    "export it in the 'gptq' or 'gptq_v2' format")
    return GptqConfig(bits=bits, group_size=int(qc.get("group_size", 128)), sym=bool(qc.get("sym", True)),
                      desc_act=bool(qc.get("desc_act", False)), v1_zeros=fmt == "gptq")


def convert_layer(tensors: dict[str, torch.Tensor], in_features: int, cfg: GptqConfig,
                  name: str = "") -> tuple[QuantLinear, bool]:
    """One GPTQ linear ({qweight, qzeros, scales, g_idx?, bias?}) as a QuantLinear; True if exact."""
    for key in ("qweight", "qzeros", "scales"):
        if key not in tensors:
            raise BadInputError(f"GPTQ layer {name!r} lacks {key!r}", "the checkpoint is incomplete: download it again")
    bits = cfg.bits
    qweight, scales = tensors["qweight"].to(torch.int32), tensors["scales"].to(torch.float16)
    n = qweight.shape[1]
    group = in_features if cfg.group_size in (-1, 0) else cfg.group_size
    groups = -(-in_features // group)
    if tuple(scales.shape) != (groups, n):
        raise BadInputError(f"GPTQ layer {name!r}: scales have shape {tuple(scales.shape)}, expected "
                            f"{(groups, n)} for {in_features} inputs in groups of {group}",
                            "check the checkpoint's group_size")
    zeros = unpack_stat_codes(tensors["qzeros"].to(torch.int32), bits, n).to(torch.int32)
    if cfg.v1_zeros:
        zeros = (zeros + 1) & ((1 << (bits + 1)) - 1)  # a stored 2^b − 1 means 2^b: keep the carry
    g_idx = tensors.get("g_idx")
    trivial = g_idx is None or torch.equal(g_idx.to(torch.int64), torch.arange(in_features) // group)
    if not trivial:
        w = _dequantize(qweight, scales, zeros, g_idx.to(torch.int64), bits, in_features)
        spec = f"int{bits}_g{group}"
        qw = quantize_weight(w, spec, "hqq", name)
        return QuantLinear.from_quantized(qw, tensors.get("bias")), False
    maxq = (1 << bits) - 1
    half = (maxq + 1) // 2
    state = {"qweight": qweight, "scales": scales}
    if cfg.sym and bool((zeros == half).all()):
        spec = f"int{bits}_g{group}_sym"
    elif int(zeros.max()) <= maxq and int(zeros.min()) >= 0:
        spec = f"int{bits}_g{group}"
        state["zero_codes"] = pack_stat_codes(zeros.to(torch.uint8), bits)
    else:
        spec = f"int{bits}_g{group}_zf"
        state["zeros"] = zeros.to(torch.float16)
    if "bias" in tensors:
        state["bias"] = tensors["bias"]
    return QuantLinear.from_state_dict(state, spec, in_features), True


def _dequantize(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, g_idx: torch.Tensor, bits: int,
                in_features: int) -> torch.Tensor:
    """The float32 weight [N, K] of a GPTQ layer whose groups are indexed by g_idx (act-order)."""
    q = unpack_codes(qweight, bits, in_features).to(torch.float32)  # [N, K]
    s = scales.to(torch.float32)[g_idx].t()
    z = zeros.to(torch.float32)[g_idx].t()
    return (q - z) * s


def import_gptq(src: str | Path, out: str | Path,
                on_progress: Callable[[int, int], None] | None = None) -> tuple[Path, ImportReport]:
    """Convert a GPTQ checkpoint folder into a Bitsmith model folder at `out` (written atomically)."""
    folder = Path(src).expanduser()
    if not folder.is_dir():
        raise BadInputError(f"{folder} is not a folder", "give the folder of a GPTQ checkpoint")
    cfg = read_gptq_config(folder)
    state = read_tensors(folder, "GPTQ checkpoints in .bin files are not supported")
    report = ImportReport()

    def convert(prefix: str, tensors: dict[str, torch.Tensor], linear: nn.Linear) -> QuantLinear:
        layer, exact = convert_layer(tensors, linear.in_features, cfg, prefix)
        (report.exact if exact else report.requantized).append(prefix)
        report.formats[prefix] = layer.spec.name
        return layer

    path = import_checkpoint(folder, out, state, convert, {"model": str(folder), "format": "gptq"},
                             lambda: {"imported_from": "gptq", "gptq": cfg.__dict__, "import": report.to_dict()},
                             "GPTQ checkpoint", on_progress)
    return path, report
