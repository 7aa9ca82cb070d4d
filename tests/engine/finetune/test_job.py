"""The `finetune` job end to end on a tiny quantized model: result, output folder, resume, and bad input."""

from __future__ import annotations

import json
import random
import string
import threading
from pathlib import Path

import pytest
import torch

from bitsmith.engine.jobclient import run_inprocess
from bitsmith.engine.quant.store import is_quantized_folder, load_quantized


def _words(rng: random.Random, n: int) -> str:
    return " ".join("".join(rng.choices(string.ascii_lowercase[:8], k=rng.randint(2, 5))) for _ in range(n))


def _dataset(path: Path, write_jsonl, n: int = 40) -> Path:  # noqa: ANN001
    rng = random.Random(7)
    rows = []
    for i in range(n):
        if i % 3 == 0:
            rows.append({"text": _words(rng, rng.randint(20, 60))})
        else:
            rows.append({"instruction": _words(rng, 4), "output": _words(rng, rng.randint(2, 8))})
    return write_jsonl(path, rows)


def _run(params: dict) -> tuple[int, list[dict]]:
    events: list[dict] = []
    code = run_inprocess("finetune", params, events.append)
    return code, events


def _params(tiny_folder: Path, data: Path, out: Path, **kw) -> dict:
    return {"model": str(tiny_folder), "data": str(data), "out": str(out), "steps": 6, "seq_len": 96,
            "eval_every": 3, "save_every": 2, "eval_tokens": 2000, **kw}


def test_finetune_job_writes_an_ordinary_folder_with_the_same_bpw(tiny_folder, tmp_path, write_jsonl) -> None:
    data = _dataset(tmp_path / "d.jsonl", write_jsonl)
    out = tmp_path / "ft"
    # a code step size large enough that 6 steps surely move codes (the default, 0.01, is tuned for 200+ steps)
    code, events = _run(_params(tiny_folder, data, out, code_lr=0.05))
    assert code == 0, [e for e in events if e["event"] == "error"]
    result = next(e for e in events if e["event"] == "result")
    for key in ("train_loss", "heldout_loss_before", "heldout_loss_after"):
        assert isinstance(result[key], float)
    assert result["steps"] == 6 and result["method"] == "qsft"
    metrics = [e for e in events if e["event"] == "metric"]
    assert any(m["name"] == "train_loss" and "tokens_per_s" in m for m in metrics)
    assert [m["step"] for m in metrics if m["name"] == "heldout_loss"] == [0, 3, 6]
    assert is_quantized_folder(out) and not out.with_name(".ft.partial").exists()
    before, after = load_quantized(tiny_folder), load_quantized(out)
    assert after.meta["bpw"] == before.meta["bpw"] and after.meta["layout"] == before.meta["layout"]
    assert after.meta["metrics"]["finetune"]["heldout_loss_after"] == result["heldout_loss_after"]
    assert after.meta["recipe"]["finetune"]["method"] == "qsft"
    assert after.tokenizer.chat_template == before.tokenizer.chat_template
    changed = [n for n, t in after.model.state_dict().items() if not torch.equal(t, before.model.state_dict()[n])]
    assert any(n.endswith(".qweight") for n in changed) and any(n.endswith(".scales") for n in changed)
    # the held-out loss the job reports is that of the model as saved
    from bitsmith.engine.finetune.job import _data, config_from_params
    from bitsmith.engine.finetune.loss import chunked_lm_loss
    from bitsmith.engine.finetune.qsft import backbone_and_head
    from bitsmith.engine.jobs import JobContext

    params = _params(tiny_folder, data, out)
    _, held, _ = _data(JobContext([].append, tmp_path), params, after.tokenizer, config_from_params(params))
    backbone, head = backbone_and_head(after.model)
    with torch.no_grad():
        hidden = [backbone(input_ids=b.input_ids, position_ids=b.position_ids, use_cache=False).last_hidden_state
                  for b in held]
        total = sum(float(chunked_lm_loss(h, head.weight, b.targets)) for h, b in zip(hidden, held, strict=True))
    assert total / sum(b.n_targets for b in held) == pytest.approx(result["heldout_loss_after"], rel=1e-5)
    (tmp_path / "eval.txt").write_text(_words(random.Random(1), 300))
    code = run_inprocess("eval", {"model": str(out), "text": str(tmp_path / "eval.txt"), "window": 64,
                                  "max_tokens": 256}, (evs := []).append)
    assert code == 0 and next(e for e in evs if e["event"] == "result")["ppl"] > 1


def test_lora_job_reports_merged_and_unmerged_losses(tiny_folder, tmp_path, write_jsonl) -> None:
    data = _dataset(tmp_path / "d.jsonl", write_jsonl)
    code, events = _run(_params(tiny_folder, data, tmp_path / "lora", method="lora", eval_every=0))
    assert code == 0
    result = next(e for e in events if e["event"] == "result")
    assert result["method"] == "lora" and isinstance(result["heldout_loss_after_unmerged"], float)
    assert load_quantized(tmp_path / "lora").meta["bpw"] == load_quantized(tiny_folder).meta["bpw"]


def test_cancel_keeps_a_checkpoint_and_the_rerun_resumes(tiny_folder, tmp_path, write_jsonl, monkeypatch) -> None:
    from bitsmith.engine.finetune import job as job_mod

    data = _dataset(tmp_path / "d.jsonl", write_jsonl)
    straight_out = tmp_path / "straight"
    assert _run(_params(tiny_folder, data, straight_out))[0] == 0

    real_step = job_mod.Trainer.train_step
    cancel = threading.Event()

    def step_then_cancel(self):  # noqa: ANN001, ANN202
        out = real_step(self)
        if self.step == 3:
            cancel.set()  # the user presses Cancel during step 3; the job stops at the next step boundary
        return out

    out = tmp_path / "resumed"
    monkeypatch.setattr(job_mod.Trainer, "train_step", step_then_cancel)
    events: list[dict] = []
    code = run_inprocess("finetune", _params(tiny_folder, data, out), events.append, cancel_event=cancel)
    assert events[-1]["status"] == "cancelled" and code != 0
    ckpt = out.with_name(".resumed.partial") / "checkpoint"
    assert json.loads((ckpt / "trainer.json").read_text())["step"] == 3
    monkeypatch.setattr(job_mod.Trainer, "train_step", real_step)
    code, events = _run(_params(tiny_folder, data, out))
    assert code == 0
    assert any("resuming from the checkpoint at step 3" in e.get("message", "") for e in events)
    a = load_quantized(straight_out).model.state_dict()
    b = load_quantized(out).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a different run into the same folder does not silently reuse (or delete) a checkpoint
    calls = {"n": 0}

    def crash_at_3(self):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # a hard stop (like a killed process): the step-2 checkpoint remains
        return real_step(self)

    monkeypatch.setattr(job_mod.Trainer, "train_step", crash_at_3)
    with pytest.raises(KeyboardInterrupt):
        _run(_params(tiny_folder, data, tmp_path / "other"))
    monkeypatch.setattr(job_mod.Trainer, "train_step", real_step)
    code, events = _run(_params(tiny_folder, data, tmp_path / "other", lr=1e-2))
    err = next(e for e in events if e["event"] == "error")
    assert code != 0 and "different run" in err["message"] and "--fresh" in err["hint"]
    assert _run(_params(tiny_folder, data, tmp_path / "other", lr=1e-2, fresh=True))[0] == 0


def test_not_quantized_model_is_refused_with_the_quantize_command(tmp_path, write_jsonl, bundled_folder) -> None:
    data = _dataset(tmp_path / "d.jsonl", write_jsonl)
    code, events = _run({"model": str(bundled_folder), "data": str(data), "out": str(tmp_path / "o")})
    err = next(e for e in events if e["event"] == "error")
    assert code != 0 and err["kind"] == "bad_input" and "not a quantized Bitsmith model" in err["message"]
    assert "bitsmith quantize" in err["hint"]


def test_malformed_data_names_the_line_and_can_be_skipped(tiny_folder, tmp_path, write_jsonl) -> None:
    path = _dataset(tmp_path / "d.jsonl", write_jsonl)
    lines = path.read_text().splitlines()
    lines.insert(4, '{"instruction": "no answer"}')
    path.write_text("\n".join(lines) + "\n")
    code, events = _run(_params(tiny_folder, path, tmp_path / "o"))
    err = next(e for e in events if e["event"] == "error")
    assert code != 0 and "d.jsonl:5" in err["message"] and "'output'" in err["message"]
    code, events = _run(_params(tiny_folder, path, tmp_path / "o", on_bad_line="skip", steps=1, eval_every=0))
    assert code == 0
    assert any("skipped 1 malformed record(s): d.jsonl:5" in e.get("message", "") for e in events)


def test_long_examples_are_truncated_with_a_count(tiny_folder, tmp_path, write_jsonl) -> None:
    rng = random.Random(3)
    rows = [{"instruction": _words(rng, 3), "output": _words(rng, 80 if i < 4 else 3)} for i in range(20)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    code, events = _run(_params(tiny_folder, data, tmp_path / "o", steps=1, eval_every=0, seq_len=48))
    logs = " ".join(e.get("message", "") for e in events if e["event"] == "log")
    assert code == 0 and "longer than 48 tokens were truncated" in logs


def test_out_of_memory_suggests_what_fits(tiny_folder, tmp_path, write_jsonl, monkeypatch) -> None:
    from bitsmith.engine.finetune import job as job_mod

    def oom(self):  # noqa: ANN001, ANN202
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(job_mod.Trainer, "train_step", oom)
    data = _dataset(tmp_path / "d.jsonl", write_jsonl)
    code, events = _run(_params(tiny_folder, data, tmp_path / "o", seq_len=1024))
    err = next(e for e in events if e["event"] == "error")
    assert code != 0 and err["kind"] == "out_of_memory" and "--seq-len 1024" in err["message"]
    assert "--seq-len" in err["hint"]


def test_oom_advice_names_a_sequence_length_the_planner_accepts() -> None:
    from bitsmith.engine.finetune.advice import oom_advice
    from bitsmith.engine.hardware import CpuInfo, GpuInfo, HardwareProfile

    gpu = GpuInfo(index=0, name="RTX 3060", total_bytes=12 * 2**30, free_bytes=11 * 2**30)
    hw = HardwareProfile(cpu=CpuInfo(model="x", arch="x86_64", physical_cores=8, logical_cores=16),
                         ram_total_bytes=64 * 2**30, ram_available_bytes=60 * 2**30, gpus=[gpu])
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
              "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
              "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192}
    hint = oom_advice(config, 4.0, 16384, hw=hw)
    assert "--seq-len" in hint and "fits by the planner's estimate" in hint
