"""Zero-shot task accuracy through EleutherAI's lm-evaluation-harness, when it is installed and online.

GreenBitAI's tables report PIQA, BoolQ, Winogrande, ARC-e/c, WiC and HellaSwag; `run_tasks` evaluates an
already loaded model (a Bitsmith folder included: its QuantLinear layers run as they do in chat) by wrapping
it in lm-eval's HFLM adapter, and returns one accuracy per task. The harness downloads each task's dataset
from the Hub, so it needs the network; both the missing package and a failed download are clear errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bitsmith.engine.errors import BadInputError, NetworkError

__all__ = ["GREENBITAI_TASKS", "NetworkError", "parse_tasks", "run_tasks"]

GREENBITAI_TASKS = ("piqa", "boolq", "winogrande", "arc_easy", "arc_challenge", "wic", "hellaswag")


def _harness() -> Any:
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise BadInputError("zero-shot tasks need EleutherAI's lm-evaluation-harness, which is not installed",
                            "pip install lm-eval (into Bitsmith's environment), then run again") from None
    return lm_eval, HFLM


def parse_tasks(text: str) -> list[str]:
    """'piqa,boolq' → ['piqa', 'boolq']; 'greenbitai' → the seven tasks GreenBitAI reports."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if names == ["greenbitai"]:
        return list(GREENBITAI_TASKS)
    if not names:
        raise BadInputError("no task named", "pass tasks like --tasks piqa,boolq or --tasks greenbitai")
    return names


def run_tasks(model: Any, tokenizer: Any, tasks: Sequence[str], *, limit: int | None = None,
              batch_size: int = 8, num_fewshot: int = 0) -> dict[str, dict[str, float]]:
    """{task: {"acc": ..., "acc_norm": ... (when reported), "stderr": ...}} for a loaded model."""
    lm_eval, hflm = _harness()
    wrapped = hflm(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    try:
        out = lm_eval.simple_evaluate(model=wrapped, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit)
    except (ConnectionError, OSError) as exc:
        raise NetworkError(f"lm-eval could not fetch the task data ({type(exc).__name__}: {exc})",
                           "zero-shot tasks download their datasets from the Hugging Face Hub: connect and retry"
                           ) from exc
    except KeyError as exc:
        raise BadInputError(f"lm-eval does not know the task {exc}", "see `lm_eval --tasks list`") from exc
    results: dict[str, dict[str, float]] = {}
    for task, metrics in (out or {}).get("results", {}).items():
        row = {}
        for key, value in metrics.items():
            name, _, _filter = key.partition(",")
            if isinstance(value, (int, float)) and name in ("acc", "acc_norm", "acc_stderr", "acc_norm_stderr"):
                row[name] = float(value)
        results[task] = row
    missing = [t for t in tasks if t not in results]
    if missing:
        raise BadInputError(f"lm-eval returned no result for {missing}", "check the task names")
    return results
