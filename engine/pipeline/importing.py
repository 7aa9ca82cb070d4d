"""The `import` job: a GPTQ checkpoint (AutoGPTQ / GPTQModel) or a GreenBitAI layer-mix model becomes a
Bitsmith model folder. The source's layout is detected from its files unless the request names it."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from bitsmith.engine.errors import BadInputError
from bitsmith.engine.jobs import JobContext, job

FORMATS = ("auto", "gptq", "greenbit")
_GREENBIT_KEYS = (".qstatistic", ".zeros", ".q_perm", ".channel_scale", ".q_groups")


def _tensor_names(folder: Path) -> list[str]:
    """Tensor names in the folder's safetensors files, read from their JSON headers (no tensor is loaded)."""
    names: list[str] = []
    for f in sorted(folder.glob("*.safetensors")):
        try:
            with f.open("rb") as fh:
                (size,) = struct.unpack("<Q", fh.read(8))
                names.extend(k for k in json.loads(fh.read(size)) if k != "__metadata__")
        except (OSError, ValueError, struct.error) as exc:
            raise BadInputError(f"{f} is not a readable safetensors file ({exc})", "download it again") from None
    return names


def _has_gptq_settings(folder: Path) -> bool:
    if (folder / "quantize_config.json").is_file():
        return True
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    qc = config.get("quantization_config") if isinstance(config, dict) else None
    return isinstance(qc, dict) and str(qc.get("quant_method", "gptq")).lower() == "gptq"


def detect_format(source: str | Path) -> str:
    """"gptq" or "greenbit" for a checkpoint folder, from its settings files and tensor names; else BadInputError."""
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise BadInputError(f"{folder} is not a folder", "give the folder of a GPTQ or GreenBitAI checkpoint")
    if (folder / "bitsmith.json").is_file():
        raise BadInputError(f"{folder} is already a Bitsmith model folder", "use it as it is; nothing to import")
    if (folder / "quant_strategy.json").is_file():
        return "greenbit"
    if _has_gptq_settings(folder):
        return "gptq"
    names = _tensor_names(folder)
    if any(n.endswith(".qzeros") for n in names):
        return "gptq"
    if any(n.endswith(".qweight") for n in names) and any(n.endswith(_GREENBIT_KEYS) for n in names):
        return "greenbit"  # its importer then says that quant_strategy.json is missing
    raise BadInputError(f"{folder} is neither a GPTQ checkpoint nor a GreenBitAI low-bit model",
                        "give the folder of an AutoGPTQ / GPTQModel checkpoint or of a GreenBitAI layer-mix model")


@job("import")
def import_job(ctx: JobContext, params: dict[str, Any]) -> None:
    """Convert `source` into `out`; the result event says how many layers came across exactly."""
    source, out = params.get("source"), params.get("out")
    if not source or not out:
        raise BadInputError("the import request needs 'source' and 'out'", "pass the checkpoint folder and --out")
    kind = str(params.get("format") or "auto").lower()
    if kind not in FORMATS:
        raise BadInputError(f"unknown import format {kind!r}", f"choose one of {', '.join(FORMATS)}")
    out_path = Path(str(out)).expanduser().resolve()
    if out_path.exists() and any(out_path.iterdir()) and not (out_path / "bitsmith.json").is_file():
        raise BadInputError(f"{out_path} exists and is not a Bitsmith model folder", "choose a new or empty --out")
    if kind == "auto":
        kind = detect_format(str(source))
    ctx.log(f"importing {source} as a {'GreenBitAI layer-mix' if kind == 'greenbit' else 'GPTQ'} checkpoint")
    ctx.stage("convert", total=None)
    progress = lambda done, total: ctx.progress(done, total)  # noqa: E731
    if kind == "greenbit":
        from bitsmith.engine.quant.greenbit_import import import_greenbit

        path, report = import_greenbit(str(source), out_path, on_progress=progress)
        summary = report.to_dict()
        if report.approximate:
            ctx.log(f"{len(report.approximate)} layers keep fractional zero-points (fp16 z/s): weights within "
                    f"{summary['max_weight_error']:.2g} of the source's (max |Δw| / max |w|)")
        if report.double_quantized:
            ctx.log(f"{len(report.double_quantized)} layers had double-quantized statistics, stored as fp16 scales")
    else:
        from bitsmith.engine.quant.gptq_import import import_gptq

        path, report = import_gptq(str(source), out_path, on_progress=progress)
        summary = report.to_dict()
    if report.requantized:
        ctx.log(f"{len(report.requantized)} layers were re-quantized (lossy); "
                f"{len(report.exact)} came across exactly", level="warning")
    ctx.artifact("model", path)
    ctx.emit({"event": "result", "out": str(path), "format": kind, **summary})
