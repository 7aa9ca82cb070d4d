"""Hardware detection: NVML driven through a fake (0, 1, 2 GPUs and every error path), the real NVML
library as this machine has it, Apple/CPU probing from canned system answers, JSON round trips, the CLI."""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from bitsmith.engine import hardware
from bitsmith.engine.hardware import GIB, HardwareProfile, detect

_spec = importlib.util.spec_from_file_location("bitsmith_test_fake_nvml",
                                               Path(__file__).parent / "fixtures" / "fake_nvml.py")
fake_nvml = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fake_nvml
_spec.loader.exec_module(fake_nvml)
FakeGpu, FakeNvml = fake_nvml.FakeGpu, fake_nvml.FakeNvml


@pytest.fixture(autouse=True)
def _all_gpus_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def _random_gpu(rng: random.Random, name: str) -> FakeGpu:
    total = rng.randint(4, 96) * GIB
    return FakeGpu(name=name, total=total, free=rng.randint(total // 10, total),
                   cc=(rng.randint(6, 12), rng.randint(0, 9)), pcie_gen=rng.randint(3, 5),
                   pcie_width=rng.choice([4, 8, 16]), power_mw=rng.randint(50, 700) * 1000)


def test_no_gpu_is_a_normal_answer(tmp_path: Path) -> None:
    nvml = FakeNvml([])
    profile = detect(nvml=nvml, models_dir=tmp_path)
    assert profile.gpus == [] and "no GPU" in profile.nvidia_reason
    assert profile.nvidia_driver == "555.42.06" and profile.cuda_driver_version == "12.5"
    assert profile.best_device in ("cpu", "mps") and nvml.shutdown_calls == 1
    assert profile.disk_path == str(tmp_path) and profile.disk_free_bytes > 0
    assert 0 < profile.ram_available_bytes <= profile.ram_total_bytes


def test_one_gpu_reports_every_fact() -> None:
    rng = random.Random()
    gpu = _random_gpu(rng, "NVIDIA Fake One")
    nvml = FakeNvml([gpu], cuda_version=12040)
    profile = detect(nvml=nvml)
    [got] = profile.gpus
    assert (got.index, got.name, got.total_bytes, got.free_bytes) == (0, gpu.name, gpu.total, gpu.free)
    assert got.compute_capability == gpu.cc and (got.pcie_gen, got.pcie_width) == (gpu.pcie_gen, gpu.pcie_width)
    assert got.power_limit_w == pytest.approx(gpu.power_mw / 1000)
    assert profile.cuda_driver_version == "12.4" and profile.nvidia_reason == ""
    assert profile.best_device == "cuda:0" and nvml.shutdown_calls == 1 and not nvml.initialised


def test_two_gpus_best_is_most_free_and_json_round_trips() -> None:
    rng = random.Random()
    gpus = [_random_gpu(rng, "NVIDIA Fake A"), _random_gpu(rng, "NVIDIA Fake B")]
    profile = detect(nvml=FakeNvml(gpus))
    best = max(range(2), key=lambda i: (gpus[i].free, -i))
    assert [g.name for g in profile.gpus] == ["NVIDIA Fake A", "NVIDIA Fake B"]
    assert profile.best_device == f"cuda:{best}"
    data = json.loads(json.dumps(profile.to_dict()))
    assert data["best_device"] == f"cuda:{best}" and data["gpus"][0]["compute_capability"] == list(gpus[0].cc)
    assert HardwareProfile.from_dict(data) == profile
    assert HardwareProfile.from_dict({**data, "from_a_newer_version": 1}) == profile


@pytest.mark.parametrize("error", [fake_nvml.library_not_found(), fake_nvml.driver_not_loaded()])
def test_init_errors_say_why(error: Exception) -> None:
    profile = detect(nvml=FakeNvml([_random_gpu(random.Random(), "x")], init_error=error))
    assert profile.gpus == [] and str(error) in profile.nvidia_reason and profile.nvidia_driver is None
    assert profile.best_device in ("cpu", "mps")


def test_a_failing_device_is_skipped_and_optional_facts_become_none() -> None:
    rng = random.Random()
    broken = _random_gpu(rng, "broken")
    broken.errors["nvmlDeviceGetMemoryInfo"] = fake_nvml.NVMLError(15, "GPU is lost")
    partial = _random_gpu(rng, "partial")
    for call in ("nvmlDeviceGetCurrPcieLinkGeneration", "nvmlDeviceGetCurrPcieLinkWidth",
                 "nvmlDeviceGetPowerManagementLimit", "nvmlDeviceGetCudaComputeCapability"):
        partial.errors[call] = fake_nvml.not_supported()
    nvml = FakeNvml([broken, partial])
    profile = detect(nvml=nvml)
    [got] = profile.gpus
    assert got.index == 1 and got.name == "partial" and got.free_bytes == partial.free
    assert (got.pcie_gen, got.pcie_width, got.power_limit_w, got.compute_capability) == (None, None, None, None)
    assert any("GPU 0" in w and "GPU is lost" in w for w in profile.warnings)
    assert profile.best_device == "cuda:1" and nvml.shutdown_calls == 1


def test_every_device_failing_or_count_failing_gives_a_reason() -> None:
    gpu = _random_gpu(random.Random(), "x")
    gpu.errors["nvmlDeviceGetHandleByIndex"] = fake_nvml.NVMLError(999, "Unknown Error")
    profile = detect(nvml=FakeNvml([gpu]))
    assert profile.gpus == [] and "Unknown Error" in profile.nvidia_reason
    nvml = FakeNvml([gpu], count_error=fake_nvml.NVMLError(999, "count broke"))
    profile = detect(nvml=nvml)
    assert profile.gpus == [] and "count broke" in profile.nvidia_reason and nvml.shutdown_calls == 1


def test_non_nvml_failures_are_answers_too() -> None:
    """An older pynvml without a function, or a driver failing in another way, never crashes detect()."""
    rng = random.Random()
    odd, fine = _random_gpu(rng, "odd"), _random_gpu(rng, "fine")
    odd.errors["nvmlDeviceGetName"] = RuntimeError("driver hiccup")  # type: ignore[assignment]
    nvml = FakeNvml([odd, fine])
    del FakeNvml.nvmlSystemGetCudaDriverVersion  # as if pynvml were too old to have it
    try:
        profile = detect(nvml=nvml)
    finally:
        FakeNvml.nvmlSystemGetCudaDriverVersion = _cuda_version
    assert [g.name for g in profile.gpus] == ["fine"] and profile.cuda_driver_version is None
    assert any("RuntimeError: driver hiccup" in w for w in profile.warnings)
    broken_init = FakeNvml([fine], init_error=OSError("libnvidia-ml.so.1: cannot open shared object file"))
    assert "OSError" in detect(nvml=broken_init).nvidia_reason


_cuda_version = FakeNvml.nvmlSystemGetCudaDriverVersion


def test_old_pynvml_bytes_names_are_decoded() -> None:
    gpu = _random_gpu(random.Random(), "NVIDIA Bytes")
    gpu.name_as_bytes = True
    profile = detect(nvml=FakeNvml([gpu], driver=b"470.1"))
    assert profile.gpus[0].name == "NVIDIA Bytes" and profile.nvidia_driver == "470.1"


def test_cuda_visible_devices_filters_by_nvml_index(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random()
    gpus = [_random_gpu(rng, f"g{i}") for i in range(3)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    assert [g.name for g in detect(nvml=FakeNvml(gpus)).gpus] == ["g2", "g0"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    profile = detect(nvml=FakeNvml(gpus))
    assert profile.gpus == [] and "CUDA_VISIBLE_DEVICES" in profile.nvidia_reason


def test_missing_pynvml_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    profile = detect()
    assert profile.gpus == [] and "not installed" in profile.nvidia_reason


def test_real_nvml_on_this_machine() -> None:
    """The real pynvml: with no NVIDIA driver (this dev box) it is a reason, never an exception."""
    profile = detect()
    json.dumps(profile.to_dict())
    if profile.gpus:
        assert profile.best_device.startswith("cuda:") and all(g.total_bytes >= g.free_bytes for g in profile.gpus)
    else:
        assert profile.nvidia_reason


def test_apple_silicon_from_sysctl_answers() -> None:
    mem = random.choice([8, 16, 24, 36, 64]) * GIB
    answers = {"machdep.cpu.brand_string": "Apple M3 Pro", "hw.memsize": str(mem)}
    info = hardware.detect_apple("Darwin", "arm64", "14.5", sysctl=answers.get)
    assert (info.chip, info.unified_memory_bytes, info.mps_usable) == ("Apple M3 Pro", mem, True)
    old = hardware.detect_apple("Darwin", "arm64", "12.2.1", sysctl=answers.get)
    assert not old.mps_usable and "12.3" in old.mps_reason
    assert hardware.detect_apple("Darwin", "x86_64", "13.0", sysctl=answers.get) is None
    assert hardware.detect_apple("Linux", "aarch64", "", sysctl=answers.get) is None


def test_best_device_prefers_cuda_then_mps_then_cpu() -> None:
    base = detect(nvml=FakeNvml([]))
    apple = hardware.AppleInfo("Apple M2", 16 * GIB, "14.0", True)
    assert HardwareProfile.from_dict({**base.to_dict(), "gpus": [], "apple": apple.__dict__}).best_device == "mps"
    with_gpu = detect(nvml=FakeNvml([_random_gpu(random.Random(), "g")]))
    assert HardwareProfile.from_dict({**with_gpu.to_dict(), "apple": apple.__dict__}).best_device == "cuda:0"
    unusable = {**apple.__dict__, "mps_usable": False}
    assert HardwareProfile.from_dict({**base.to_dict(), "gpus": [], "apple": unusable}).best_device == "cpu"


def test_cpu_flags_from_cpuinfo() -> None:
    x86 = "processor\t: 0\nmodel name\t: Fake CPU 9000\nflags\t\t: fpu sse avx avx2 fma avx512f avx512_bf16\n"
    cpu = hardware.detect_cpu(x86, "Linux", "x86_64")
    assert cpu.model == "Fake CPU 9000" and {"avx2", "fma", "avx512f", "avx512_bf16"} <= set(cpu.flags)
    assert "neon" not in cpu.flags
    arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes\nCPU implementer\t: 0x41\n"
    cpu = hardware.detect_cpu(arm, "Linux", "aarch64")
    assert cpu.flags == ["neon"] and "avx2" not in cpu.flags
    assert cpu.logical_cores and cpu.logical_cores >= (cpu.physical_cores or 1)


def test_cli_hw_json_and_table(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from bitsmith.engine.cli import main

    assert main(["hw", "--json", "--models-dir", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["disk_path"] == str(tmp_path)
    assert HardwareProfile.from_dict(data).best_device == data["best_device"]
    assert main(["hw"]) == 0
    out = capsys.readouterr().out
    assert "Best device" in out and "RAM" in out and "CPU" in out


def test_hardware_never_imports_torch() -> None:
    code = ("import sys; from bitsmith.engine import hardware, modelinfo, plan; hardware.detect(); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_recorded_h100_replays_to_the_profile_it_gave() -> None:
    """NVML's answers on a real H100 (tests/benchmarks/record_nvml.py, 2026-11-22), replayed through the fake,
    give the GPU facts that detect() reported on that machine in the same run."""
    recording = json.loads((Path(__file__).parent / "fixtures" / "nvml_h100.json").read_text())
    profile = detect(nvml=fake_nvml.from_recording(recording["nvml"]))
    real = recording["profile"]
    assert [g.to_dict() if hasattr(g, "to_dict") else g for g in profile.to_dict()["gpus"]] == real["gpus"]
    assert (profile.nvidia_driver, profile.cuda_driver_version) == (real["nvidia_driver"], real["cuda_driver_version"])
    assert profile.best_device == real["best_device"] == "cuda:0"
    [gpu] = profile.gpus
    assert gpu.name == "NVIDIA H100 80GB HBM3" and gpu.compute_capability == (9, 0)
