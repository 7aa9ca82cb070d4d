"""The numbers behind the Quantize wizard's budget step, torch-free: the smallest feasible budget, the planner's
size, chat-memory and quantize-job figures (for the detected machine or the memory the user plans for, with the
chosen effort preset and loading), and where the output goes. Kept apart from the widgets so tests can check them."""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bitsmith.engine.modelinfo import ModelInfo
from bitsmith.engine.quant.bpw import layer_bits
from bitsmith.engine.quant.spec import parse_spec

MAX_BPW = 4.25  # every layer INT4/g128: the top of the slider
PRESET_BUDGETS = (2.2, 2.5, 3.0, 4.0)
GIB = 2**30


def preset_formats(preset: str) -> tuple[str, ...]:
    """The candidate formats the engine's preset searches over (engine/pipeline/presets.py, torch-free)."""
    from bitsmith.engine.pipeline.presets import get_preset

    return tuple(get_preset(preset).formats)


def min_feasible_bpw(info: ModelInfo, formats: tuple[str, ...] = ("int2_g64",)) -> float:
    """The budget of the smallest layout: every layer in its cheapest candidate format (codes + statistics,
    shorter last groups included), rounded up to a hundredth: no layout the search can build goes below it."""
    specs = [parse_spec(f) for f in formats]
    bits = weights = 0
    for lin in info.linears:
        n, k = lin.out_features, lin.in_features
        bits += min(layer_bits(n, k, spec).total for spec in specs)
        weights += n * k
    return math.ceil(bits / max(weights, 1) * 100 - 1e-6) / 100


@dataclass(frozen=True)
class BudgetFigures:
    """What the budget step shows for one budget."""

    bpw: float
    size_gb: float           # the quantized model (linears at bpw, the rest 16-bit)
    source16_gb: float       # the same model with every weight in 16 bits
    chat_verdict: str | None  # gpu / offload / cpu / no_fit, None before hardware is known
    chat_gpu_gb: float | None
    chat_ram_gb: float | None
    chat_gap_gb: float | None
    calibrate_verdict: str | None
    distill_verdict: str | None = None  # None: the preset does not distil (or no hardware yet)
    distill_ram_gb: float | None = None
    distill_gap_gb: float | None = None

    def chat_text(self) -> str:
        """A sentence about running the result in chat on this machine."""
        if self.chat_verdict is None:
            return "Waiting for hardware detection…"
        if self.chat_verdict == "gpu":
            return f"Chat runs on the GPU: {self.chat_gpu_gb:.2f} GB of VRAM"
        if self.chat_verdict == "offload":
            return (f"Chat runs partly on the GPU: {self.chat_gpu_gb:.2f} GB of VRAM, "
                    f"{self.chat_gap_gb:.2f} GB spilled to RAM")
        if self.chat_verdict == "cpu":
            return f"Chat runs on the CPU: {self.chat_ram_gb:.2f} GB of RAM"
        return f"Won't fit for chat: {self.chat_gap_gb:.2f} GB short"

    def quantize_text(self) -> str:
        """A sentence about the quantize job on this machine: where calibration runs, and whether the preset's
        distillation (on the CPU, whatever the machine) fits too; '' before hardware is known."""
        if self.calibrate_verdict is None:
            return ""
        where = {"gpu": "on the GPU", "offload": "partly on the GPU", "cpu": "on the CPU (slow for big models)",
                 "no_fit": "— not enough memory on this machine"}[self.calibrate_verdict]
        text = f"Calibration runs {where}."
        if self.distill_verdict == "no_fit":
            text += f" Distillation after it won't fit: {self.distill_gap_gb:.2f} GB of RAM short."
        elif self.distill_verdict is not None:
            text += f" Distillation after it runs on the CPU: {self.distill_ram_gb:.2f} GB of RAM."
        return text


def quantize_settings(preset: str, profile: dict[str, Any], stream: bool | None = None) -> Any:
    """The settings the quantize job runs with for an effort preset and a loading choice (None: the engine decides)
    on the machine of `profile`, calibrating where the pipeline would there."""
    from bitsmith.engine.hardware import HardwareProfile
    from bitsmith.engine.plan import calibration_device
    from bitsmith.engine.plan_quantize import QuantizeSettings

    return QuantizeSettings.from_preset(preset, calibration_device(HardwareProfile.from_dict(profile)), stream)


def figures(info: ModelInfo, bpw: float, profile: dict[str, Any] | None, *, local: bool, preset: str = "default",
            stream: bool | None = None) -> BudgetFigures:
    """The planner's figures for `info` at `bpw` on the detected machine (`profile`, a hardware job's dict), for the
    quantize job of effort `preset` loading the model whole, streamed or as the engine decides (`stream`)."""
    from bitsmith.engine.plan import plan_model, quantized_bytes

    size = quantized_bytes(info, bpw) / GIB
    src16 = (info.linear_params + info.other_params) * 2 / GIB
    if profile is None:
        return BudgetFigures(bpw, size, src16, None, None, None, None, None)
    from bitsmith.engine.hardware import HardwareProfile

    plan = plan_model(info, bpw, HardwareProfile.from_dict(profile), source_on_disk=local,
                      quantize=quantize_settings(preset, profile, stream))
    chat, calib = plan.stages["chat"], plan.stages["calibrate"]
    distill = max((plan.stages[s] for s in ("teacher", "distill") if s in plan.stages), key=lambda e: e.gap_gb,
                  default=None)  # the stricter of the two distillation stages
    return BudgetFigures(bpw, size, src16, chat.verdict, chat.gpu_gb, chat.cpu_gb, chat.gap_gb, calib.verdict,
                         distill.verdict if distill else None, distill.cpu_gb if distill else None,
                         distill.gap_gb if distill else None)


def detected_memory_gb(profile: dict[str, Any]) -> tuple[float, float]:
    """(GPU memory, RAM) in GB that the planner takes from a detected profile: the free memory of the GPU it
    would use (Apple: the MPS working set; 0 without a usable GPU) and the available RAM."""
    from bitsmith.engine.hardware import HardwareProfile
    from bitsmith.engine.plan import accelerator

    hw = HardwareProfile.from_dict(profile)
    return accelerator(hw).budget / GIB, hw.ram_available_bytes / GIB


def planning_profile(profile: dict[str, Any] | None, gpu_gb: float | None = None,
                     ram_gb: float | None = None) -> dict[str, Any] | None:
    """The profile the planner should see: `profile` with the user's GPU memory and RAM in place of the detected
    ones (None keeps a detected value). GPU memory 0 plans for the CPU alone; on a machine without a GPU a
    positive value plans for one (another machine). Only the GPU the plan uses is kept, so it stays the one."""
    if profile is None or (gpu_gb is None and ram_gb is None):
        return profile
    from bitsmith.engine.hardware import HardwareProfile
    from bitsmith.engine.plan import MPS_WORKING_SET_FRACTION

    data = copy.deepcopy(profile)
    if ram_gb is not None:
        ram = int(max(ram_gb, 0.0) * GIB)
        data["ram_available_bytes"] = ram
        data["ram_total_bytes"] = max(int(data.get("ram_total_bytes") or 0), ram)
    if gpu_gb is not None:
        gpu = int(max(gpu_gb, 0.0) * GIB)
        device = HardwareProfile.from_dict(profile).best_device
        if gpu == 0:
            data["gpus"] = []
            if data.get("apple"):
                data["apple"] = {**data["apple"], "mps_usable": False, "mps_reason": "planning for the CPU alone"}
        elif device.startswith("cuda:"):
            index = int(device.split(":")[1])
            [chosen] = [dict(g) for g in data["gpus"] if g["index"] == index]
            chosen["free_bytes"], chosen["total_bytes"] = gpu, max(int(chosen["total_bytes"]), gpu)
            data["gpus"] = [chosen]
        elif device == "mps":
            data["apple"] = {**data["apple"], "unified_memory_bytes": int(gpu / MPS_WORKING_SET_FRACTION)}
        else:
            data["gpus"] = [{"index": 0, "name": "planned GPU", "total_bytes": gpu, "free_bytes": gpu}]
    data["best_device"] = HardwareProfile.from_dict(data).best_device
    return data


def model_slug(source: str) -> str:
    """A folder-friendly name for a source: 'bundled', a path or a Hub id."""
    if source == "bundled":
        return "SmolLM2-135M-Instruct"
    name = source.rstrip("/\\").replace("\\", "/").split("/")[-1]
    if name.lower().endswith(".gguf"):
        name = name[:-5]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"


def default_output(models_dir: Path, source: str, bpw: float) -> Path:
    """<models dir>/<model>-<bpw>bpw: running the same model and budget again reuses (and resumes) it."""
    return models_dir / f"{model_slug(source)}-{bpw:.2f}bpw"


def format_eta(seconds: float | None) -> str:
    """'1 h 02 min', '3 min 05 s', '12 s', or '' when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return ""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


def folder_bytes(path: Path) -> int:
    """Bytes of the files in a folder (recursively), or of one file."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
