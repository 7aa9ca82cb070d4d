"""How many layers llama.cpp should put on the GPU, from the fit planner's chat estimate (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass

from bitsmith.engine.hardware import HardwareProfile
from bitsmith.engine.modelinfo import ModelInfo
from bitsmith.engine.plan import MAX_BPW, MIN_BPW, accelerator, plan_model


@dataclass(frozen=True)
class Offload:
    """llama.cpp's n_gpu_layers (-1 = every layer and the output) and why."""

    n_gpu_layers: int
    reason: str


def choose_gpu_layers(info: ModelInfo, file_bytes: int, hw: HardwareProfile, n_ctx: int,
                      gpu_build: bool = True) -> Offload:
    """All layers when the chat stage fits the accelerator, a share when it only fits with offload, else 0."""
    if not gpu_build:
        return Offload(0, "this llama-cpp-python build has no GPU support (CPU only)")
    acc = accelerator(hw)
    if acc.kind == "cpu":
        return Offload(0, "no usable GPU: running on the CPU")
    params = max(info.total_params, 1)
    bpw = min(max(file_bytes * 8 / params, MIN_BPW), MAX_BPW)
    est = plan_model(info, bpw, hw, context=n_ctx, source_on_disk=True).stages["chat"]
    if est.verdict == "gpu":
        return Offload(-1, f"the model and a {n_ctx}-token KV cache fit the {acc.name}")
    if est.verdict == "offload" and acc.kind == "cuda":
        placed = est.breakdown.get("weights", 0.0) + est.breakdown.get("kv_cache", 0.0)
        share = max(0.0, (placed - est.gap_gb) / placed) if placed > 0 else 0.0
        layers = min(int(info.num_layers * share), info.num_layers - 1)
        return Offload(layers, f"{layers} of {info.num_layers} layers fit the {acc.name}; the rest run on the CPU")
    return Offload(0, f"the model does not fit the {acc.name} (plan: {est.verdict}): running on the CPU")
