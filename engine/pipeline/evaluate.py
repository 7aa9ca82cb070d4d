"""The `eval` job: perplexity of any model (Bitsmith folder, HF folder, GGUF, Hub id) over a text."""

from __future__ import annotations

from typing import Any

from bitsmith.engine.errors import BadInputError
from bitsmith.engine.eval.perplexity import perplexity
from bitsmith.engine.jobs import JobContext, job
from bitsmith.engine.pipeline.loading import load_any
from bitsmith.engine.pipeline.quantize import eval_tokens


@job("eval")
def eval_job(ctx: JobContext, params: dict[str, Any]) -> None:
    """Load the model, tokenize the text, report perplexity as a metric and as the final `result`."""
    model_src = params.get("model")
    if not model_src:
        raise BadInputError("the eval request lacks 'model'", "pass a model folder, .gguf file or Hub id")
    text = params.get("text", "stdlib:heldout")
    window = int(params.get("window", 512))
    stride = int(params["stride"]) if params.get("stride") else None
    limit = int(params.get("max_tokens", 0))
    ctx.stage("load", total=1)
    model, tok, meta = load_any(str(model_src))
    ctx.progress(1)
    if params.get("tasks"):
        from bitsmith.engine.eval.lm_eval_bridge import parse_tasks, run_tasks

        tasks = parse_tasks(str(params["tasks"]))
        ctx.stage("tasks", total=None)
        ctx.log(f"lm-eval zero-shot: {', '.join(tasks)}" + (f" (first {limit} examples each)" if limit else ""))
        results = run_tasks(model, tok, tasks, limit=limit or None)
        for task, row in results.items():
            ctx.metric("acc", row.get("acc"), task=task, acc_norm=row.get("acc_norm"))
        ctx.emit({"event": "result", "tasks": results, "model": str(model_src)})
        return
    ids = eval_tokens(tok, str(text), limit)
    ctx.stage("evaluate", total=None)
    res = perplexity(
        model, ids, window, stride, on_window=lambda done, total: ctx.progress(done, total),
    )
    ctx.metric("ppl", res.ppl, split=str(text), tokens=res.tokens, window=res.window, stride=res.stride)
    ctx.emit({"event": "result", **res.to_dict(), "model": str(model_src), "text": str(text)})
