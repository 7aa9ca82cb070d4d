"""The `export` job: a model written as a GGUF file, with progress per tensor and the report as `result`."""

from __future__ import annotations

from typing import Any

from bitsmith.engine.errors import BadInputError
from bitsmith.engine.jobs import JobContext, job


@job("export")
def export_job(ctx: JobContext, params: dict[str, Any]) -> None:
    """params: model (Bitsmith folder, HF folder, .gguf or Hub id), out (.gguf path), mode (exact|compact)."""
    from .gguf import export_gguf

    model, out = params.get("model"), params.get("out")
    if not model or not out:
        raise BadInputError("the export request needs 'model' and 'out'",
                            "e.g. {\"model\": \"my-model\", \"out\": \"my-model.gguf\", \"mode\": \"exact\"}")
    mode = str(params.get("mode") or "exact")
    ctx.stage("convert", total=None)
    report = export_gguf(str(model), str(out), mode,
                         on_progress=lambda done, total: ctx.progress(done, total),
                         check_cancel=ctx.check_cancel)
    if report.fallbacks:
        shown = "; ".join(report.fallbacks[:3]) + (f"; and {len(report.fallbacks) - 3} more"
                                                    if len(report.fallbacks) > 3 else "")
        ctx.log(f"{len(report.fallbacks)} layer(s) kept in an exact type: {shown}", level="warning")
    ctx.metric("file_gb", report.file_bytes / 2**30)
    ctx.metric("bits_per_weight", report.bits_per_weight)
    ctx.artifact("gguf", report.path, mode=mode)
    ctx.emit({"event": "result", **report.to_dict()})
