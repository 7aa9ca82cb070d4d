"""The `import` job: a GPTQ checkpoint folder (AutoGPTQ / GPTQModel) becomes a Bitsmith model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bitsmith.engine.errors import BadInputError
from bitsmith.engine.jobs import JobContext, job


@job("import")
def import_job(ctx: JobContext, params: dict[str, Any]) -> None:
    """Convert `source` into `out`; the result event says how many layers came across exactly."""
    from bitsmith.engine.quant.gptq_import import import_gptq

    source, out = params.get("source"), params.get("out")
    if not source or not out:
        raise BadInputError("the import request needs 'source' and 'out'", "pass the checkpoint folder and --out")
    out_path = Path(str(out)).expanduser().resolve()
    if out_path.exists() and any(out_path.iterdir()) and not (out_path / "bitsmith.json").is_file():
        raise BadInputError(f"{out_path} exists and is not a Bitsmith model folder", "choose a new or empty --out")
    ctx.stage("convert", total=None)
    path, report = import_gptq(str(source), out_path, on_progress=lambda done, total: ctx.progress(done, total))
    if report.requantized:
        ctx.log(f"{len(report.requantized)} act-order layers were re-quantized (lossy); "
                f"{len(report.exact)} came across exactly", level="warning")
    ctx.artifact("model", path)
    ctx.emit({"event": "result", "out": str(path), **report.to_dict()})
