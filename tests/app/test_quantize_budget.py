"""The budget step's smallest layout follows the preset's candidate formats, layer by layer."""

from types import SimpleNamespace

import pytest

from bitsmith.app.pages import quantize_budget as qb
from bitsmith.engine.modelinfo import LinearShape
from bitsmith.engine.quant.bpw import layer_bits
from bitsmith.engine.quant.spec import parse_spec


def _info() -> SimpleNamespace:  # min_feasible_bpw reads only the linear shapes of a ModelInfo
    shapes = [(576, 576), (1536, 576), (576, 1536), (192, 576)]
    return SimpleNamespace(linears=[LinearShape(f"l{i}", n, k) for i, (n, k) in enumerate(shapes)])


def test_smallest_layout_takes_each_layers_cheapest_format() -> None:
    info = _info()
    formats = ("int4_g128_dq8", "int2_g64_dq8", "int2_g64")
    bits = sum(min(layer_bits(li.out_features, li.in_features, parse_spec(f)).total for f in formats)
               for li in info.linears)
    weights = sum(li.out_features * li.in_features for li in info.linears)
    low = qb.min_feasible_bpw(info, formats)
    assert low == pytest.approx(bits / weights, abs=0.01) and low >= bits / weights
    assert low < qb.min_feasible_bpw(info, ("int2_g64",)) < qb.min_feasible_bpw(info, ("int4_g128",))


def test_preset_formats_come_from_the_engine() -> None:
    from bitsmith.engine.pipeline.presets import PRESETS

    for name, preset in PRESETS.items():
        assert qb.preset_formats(name) == tuple(preset.formats)


def test_figures_plan_the_chosen_preset_and_loading(gpu_profile) -> None:  # noqa: ANN001
    """figures() plans the quantize job the wizard would start: the preset's settings on the device calibration
    would use (the GPU here), loading as chosen; distillation's verdict only for a preset that distils."""
    from bitsmith.engine.hardware import HardwareProfile
    from bitsmith.engine.modelinfo import ModelInfo
    from bitsmith.engine.plan import plan_model
    from bitsmith.engine.plan_quantize import QuantizeSettings

    info = ModelInfo.from_config({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 2048,
                                  "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
                                  "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": True})
    profile = gpu_profile(free_gb=7.0)
    where = {"gpu": "on the GPU", "offload": "partly on the GPU"}
    verdicts = {}
    for preset in ("demo", "default", "best"):
        for stream in (None, False, True):
            fig = qb.figures(info, 3.0, profile, local=True, preset=preset, stream=stream)
            plan = plan_model(info, 3.0, HardwareProfile.from_dict(profile), source_on_disk=True,
                              quantize=QuantizeSettings.from_preset(preset, "cuda", stream))
            verdicts[preset] = calib = plan.stages["calibrate"].verdict
            assert fig.calibrate_verdict == calib and fig.chat_verdict == plan.stages["chat"].verdict
            text = f"Calibration runs {where[calib]}."
            distils = QuantizeSettings.from_preset(preset).distill_epochs > 0
            assert (fig.distill_verdict is None) == (not distils) and ("teacher" in plan.stages) == distils
            if distils:
                worst = max((plan.stages["teacher"], plan.stages["distill"]), key=lambda e: e.gap_gb)
                assert (fig.distill_verdict, fig.distill_ram_gb) == (worst.verdict, worst.cpu_gb) and worst.gpu_gb == 0
                text += f" Distillation after it runs on the CPU: {worst.cpu_gb:.2f} GB of RAM."
            assert fig.quantize_text() == text
    # the default preset's 128 calibration samples × 2048 tokens keep 4 GiB of activation streams: with 7 GB free
    # they spill to RAM, the demo's fit
    assert (verdicts["demo"], verdicts["default"]) == ("gpu", "offload")
    # Too little RAM for distillation: said with the shortfall.
    short = qb.figures(info, 3.0, {**profile, "ram_available_bytes": 2**31}, local=True, preset="best", stream=True)
    assert short.distill_verdict == "no_fit" and short.distill_gap_gb > 0
    assert short.quantize_text().endswith(
        f"Distillation after it won't fit: {short.distill_gap_gb:.2f} GB of RAM short.")
    assert qb.figures(info, 3.0, None, local=True, preset="best").quantize_text() == ""
