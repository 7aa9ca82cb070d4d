"""`bitsmith eval --tasks` drives lm-eval's HFLM adapter with the loaded model (checked with a stand-in harness,
since the real one needs the Hub), and says clearly when the harness is missing or offline."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from bitsmith.engine.cli import main
from bitsmith.engine.errors import BadInputError
from bitsmith.engine.eval.lm_eval_bridge import GREENBITAI_TASKS, NetworkError, parse_tasks, run_tasks


def _fake_harness(monkeypatch: pytest.MonkeyPatch, fail: Exception | None = None) -> dict:
    """Install a stand-in `lm_eval` package that records how it was called and scores by the model's output."""
    seen: dict = {}

    class HFLM:
        def __init__(self, pretrained, tokenizer, batch_size) -> None:  # noqa: ANN001
            seen.update(model=pretrained, tokenizer=tokenizer, batch_size=batch_size)

    def simple_evaluate(model, tasks, num_fewshot, limit):  # noqa: ANN001
        if fail:
            raise fail
        seen.update(tasks=tasks, limit=limit, fewshot=num_fewshot, wrapped=model)
        return {"results": {t: {"alias": t, "acc,none": 0.5 + i / 10, "acc_stderr,none": 0.01,
                                "acc_norm,none": 0.6} for i, t in enumerate(tasks)}}

    pkg = types.ModuleType("lm_eval")
    pkg.simple_evaluate = simple_evaluate
    models = types.ModuleType("lm_eval.models")
    hf = types.ModuleType("lm_eval.models.huggingface")
    hf.HFLM = HFLM
    monkeypatch.setitem(sys.modules, "lm_eval", pkg)
    monkeypatch.setitem(sys.modules, "lm_eval.models", models)
    monkeypatch.setitem(sys.modules, "lm_eval.models.huggingface", hf)
    return seen


def test_eval_tasks_through_the_cli(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    seen = _fake_harness(monkeypatch)
    assert main(["eval", str(tiny_model_dir), "--tasks", "piqa,boolq", "--max-tokens", "20", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["tasks"]["piqa"]["acc"] == 0.5 and result["tasks"]["boolq"]["acc"] == pytest.approx(0.6)
    assert result["tasks"]["boolq"]["acc_norm"] == 0.6 and result["tasks"]["piqa"]["acc_stderr"] == 0.01
    assert seen["tasks"] == ["piqa", "boolq"] and seen["limit"] == 20 and seen["fewshot"] == 0
    assert type(seen["model"]).__name__ == "LlamaForCausalLM" and seen["tokenizer"] is not None


def test_task_names_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_tasks("greenbitai") == list(GREENBITAI_TASKS) and parse_tasks(" piqa , wic") == ["piqa", "wic"]
    with pytest.raises(BadInputError, match="no task"):
        parse_tasks(" , ")
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # not installed
    with pytest.raises(BadInputError, match="not installed") as info:
        run_tasks(object(), object(), ["piqa"])
    assert "pip install lm-eval" in info.value.hint
    _fake_harness(monkeypatch, fail=ConnectionError("Hub unreachable"))
    with pytest.raises(NetworkError, match="could not fetch") as info:
        run_tasks(object(), object(), ["piqa"])
    assert info.value.kind == "network"
