"""What this machine can run: NVIDIA GPUs (via NVML), Apple silicon, CPU, RAM and disk, without torch.

The GUI shows this before any download, and the fit planner (engine/plan.py) decides from it. NVML is
injected at the boundary (`detect(nvml=...)`) so tests drive every path with a fake; a missing library,
a missing driver or any NVML error is an ordinary "no NVIDIA GPU" answer with its reason, never a crash.
GPU indices are NVML's (PCI bus order); run torch with CUDA_DEVICE_ORDER=PCI_BUS_ID so `cuda:N` agrees.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

GIB = 2**30

# Flags worth showing: the SIMD families torch's CPU kernels dispatch on.
_X86_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


@dataclass
class GpuInfo:
    """One NVIDIA GPU as NVML sees it; optional facts are None where the driver does not report them."""

    index: int
    name: str
    total_bytes: int
    free_bytes: int
    compute_capability: tuple[int, int] | None = None
    pcie_gen: int | None = None
    pcie_width: int | None = None
    power_limit_w: float | None = None

    @property
    def total_gb(self) -> float:
        """Total memory in GiB."""
        return self.total_bytes / GIB

    @property
    def free_gb(self) -> float:
        """Free memory in GiB at detection time."""
        return self.free_bytes / GIB


@dataclass
class AppleInfo:
    """Apple-silicon facts: the chip, its unified memory and whether PyTorch's MPS backend can run."""

    chip: str
    unified_memory_bytes: int
    macos_version: str
    mps_usable: bool
    mps_reason: str = ""


@dataclass
class CpuInfo:
    """The host CPU: model name, core counts and the SIMD flags that matter for CPU inference."""

    model: str
    arch: str
    physical_cores: int | None
    logical_cores: int | None
    flags: list[str] = field(default_factory=list)

    @property
    def fast_bf16(self) -> bool:
        """Whether it multiplies bf16 matrices natively (AVX512-BF16 or AMX): about 4x fp32 on the dev box, so
        CPU training computes in bf16 here (engine/finetune/qsft.py: resolve_compute_dtype)."""
        return bool({"avx512_bf16", "amx_tile", "amx_bf16"} & set(self.flags))


@dataclass
class HardwareProfile:
    """Everything the planner and the GUI need to know about this machine; JSON via to_dict/from_dict."""

    cpu: CpuInfo
    ram_total_bytes: int
    ram_available_bytes: int
    gpus: list[GpuInfo] = field(default_factory=list)
    nvidia_driver: str | None = None
    cuda_driver_version: str | None = None
    nvidia_reason: str = ""
    apple: AppleInfo | None = None
    disk_path: str | None = None
    disk_free_bytes: int | None = None
    os: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def best_device(self) -> str:
        """Where heavy work should run: the NVIDIA GPU with most free memory, else MPS, else the CPU."""
        if self.gpus:
            best = max(self.gpus, key=lambda g: (g.free_bytes, -g.index))
            return f"cuda:{best.index}"
        if self.apple is not None and self.apple.mps_usable:
            return "mps"
        return "cpu"

    def gpu(self, index: int) -> GpuInfo | None:
        """The GPU with this NVML index, or None."""
        return next((g for g in self.gpus if g.index == index), None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists); `best_device` is included for readers' convenience."""
        out = asdict(self)
        for gpu in out["gpus"]:
            if gpu["compute_capability"] is not None:
                gpu["compute_capability"] = list(gpu["compute_capability"])
        out["best_device"] = self.best_device
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HardwareProfile:
        """Rebuild a profile from to_dict() output; unknown keys (from newer versions) are ignored."""
        data = dict(data)
        gpus = []
        for g in data.get("gpus") or []:
            g = _known(GpuInfo, g)
            if g.get("compute_capability") is not None:
                g["compute_capability"] = tuple(g["compute_capability"])
            gpus.append(GpuInfo(**g))
        apple = data.get("apple")
        kwargs = _known(cls, data)
        kwargs["gpus"] = gpus
        kwargs["cpu"] = CpuInfo(**_known(CpuInfo, data["cpu"]))
        kwargs["apple"] = AppleInfo(**_known(AppleInfo, apple)) if apple else None
        return cls(**kwargs)


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def detect(nvml: Any = None, models_dir: str | os.PathLike | None = None) -> HardwareProfile:
    """Probe this machine. `nvml` is the pynvml module or a stand-in (None: import pynvml lazily);
    `models_dir` is where models live, for the free-disk figure (default: Bitsmith's models folder)."""
    import psutil

    from bitsmith.engine import paths

    warnings: list[str] = []
    gpus, driver, cuda_version, reason = detect_nvidia(nvml, warnings)
    mem = psutil.virtual_memory()
    disk_path, disk_free = _disk_free(Path(models_dir) if models_dir else paths.models_dir())
    return HardwareProfile(
        cpu=detect_cpu(),
        ram_total_bytes=int(mem.total),
        ram_available_bytes=int(mem.available),
        gpus=gpus,
        nvidia_driver=driver,
        cuda_driver_version=cuda_version,
        nvidia_reason=reason,
        apple=detect_apple(),
        disk_path=disk_path,
        disk_free_bytes=disk_free,
        os=platform.platform(),
        warnings=warnings,
    )


def _text(value: Any) -> str:
    """NVML strings are bytes in older pynvml releases and str in newer ones."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _visible_indices(count: int) -> tuple[list[int], str]:
    """NVML indices that CUDA_VISIBLE_DEVICES leaves visible (integer lists only), and a note if filtered."""
    spec = os.environ.get("CUDA_VISIBLE_DEVICES")
    if spec is None:
        return list(range(count)), ""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not all(re.fullmatch(r"-?\d+", p) for p in parts):
        return list(range(count)), "CUDA_VISIBLE_DEVICES names GPUs by UUID; showing all GPUs"
    visible: list[int] = []
    for p in parts:
        i = int(p)
        if i < 0 or i >= count:
            break  # CUDA stops at the first invalid entry
        visible.append(i)
    return visible, f"CUDA_VISIBLE_DEVICES={spec}"


def detect_nvidia(nvml: Any = None, warnings: list[str] | None = None
                  ) -> tuple[list[GpuInfo], str | None, str | None, str]:
    """NVIDIA GPUs via NVML: (gpus, driver version, CUDA driver version, reason when there are none)."""
    warnings = warnings if warnings is not None else []
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return [], None, None, "nvidia-ml-py (pynvml) is not installed"
    # NVML reports problems as NVMLError subclasses; an old pynvml may lack a function (AttributeError) and a
    # broken driver may fail in other ways. Every one of them is an answer about the GPUs, never a crash.
    nvml_error = getattr(nvml, "NVMLError", Exception)

    def why(exc: BaseException) -> str:
        text = _text(exc)
        return text if isinstance(exc, nvml_error) and text else f"{type(exc).__name__}: {text}"

    try:
        nvml.nvmlInit()
    except Exception as exc:
        return [], None, None, f"NVML unavailable: {why(exc)} (no NVIDIA driver?)"
    try:
        driver = _optional(lambda: _text(nvml.nvmlSystemGetDriverVersion()))
        cuda_int = _optional(lambda: nvml.nvmlSystemGetCudaDriverVersion())
        cuda_version = f"{cuda_int // 1000}.{cuda_int % 1000 // 10}" if isinstance(cuda_int, int) else None
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except Exception as exc:
            return [], driver, cuda_version, f"NVML could not count GPUs: {why(exc)}"
        indices, note = _visible_indices(count)
        gpus = []
        for i in indices:
            try:
                gpus.append(_query_gpu(nvml, i))
            except Exception as exc:
                warnings.append(f"GPU {i}: NVML query failed ({why(exc)}); skipped")
        if gpus:
            return gpus, driver, cuda_version, ""
        if count == 0:
            reason = "NVIDIA driver found but no GPU"
        elif not indices:
            reason = f"no GPU visible ({note})"
        else:
            reason = "every GPU query failed: " + "; ".join(warnings[-len(indices):])
        return [], driver, cuda_version, reason
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass  # a failed shutdown changes nothing we report


def _optional(call: Any) -> Any:
    """Facts some boards, drivers or pynvml releases do not report (NotSupported, missing function): None."""
    try:
        return call()
    except Exception:
        return None


def _query_gpu(nvml: Any, index: int) -> GpuInfo:
    """One GPU; name and memory are required (errors propagate), the rest is best effort."""
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    name = _text(nvml.nvmlDeviceGetName(handle))
    mem = nvml.nvmlDeviceGetMemoryInfo(handle)
    cc = _optional(lambda: nvml.nvmlDeviceGetCudaComputeCapability(handle))
    power_mw = _optional(lambda: nvml.nvmlDeviceGetPowerManagementLimit(handle))
    return GpuInfo(
        index=index,
        name=name,
        total_bytes=int(mem.total),
        free_bytes=int(mem.free),
        compute_capability=(int(cc[0]), int(cc[1])) if cc else None,
        pcie_gen=_optional(lambda: int(nvml.nvmlDeviceGetCurrPcieLinkGeneration(handle))),
        pcie_width=_optional(lambda: int(nvml.nvmlDeviceGetCurrPcieLinkWidth(handle))),
        power_limit_w=power_mw / 1000.0 if isinstance(power_mw, (int, float)) else None,
    )


def _sysctl(name: str) -> str | None:
    """`sysctl -n name` on macOS, None if it fails."""
    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def detect_apple(system: str | None = None, machine: str | None = None, mac_version: str | None = None,
                 sysctl: Any = _sysctl) -> AppleInfo | None:
    """Apple-silicon facts, or None on other machines. MPS is judged without torch: it needs an arm64
    Mac on macOS 12.3 or newer (PyPI's arm64 macOS torch wheels are built with MPS)."""
    system = system or platform.system()
    machine = machine or platform.machine()
    if system != "Darwin":
        return None
    if machine != "arm64":
        return None  # an Intel Mac: its CPU is described by detect_cpu, MPS there is not worth using
    version = mac_version if mac_version is not None else platform.mac_ver()[0]
    chip = sysctl("machdep.cpu.brand_string") or "Apple silicon"
    memsize = sysctl("hw.memsize")
    if memsize and memsize.isdigit():
        unified = int(memsize)
    else:
        import psutil

        unified = int(psutil.virtual_memory().total)
    parts = [int(p) for p in re.findall(r"\d+", version)[:2]] + [0, 0]
    usable = bool(version) and (parts[0], parts[1]) >= (12, 3)
    reason = "" if usable else f"MPS needs macOS 12.3 or newer (this is macOS {version or 'unknown'})"
    return AppleInfo(chip=chip, unified_memory_bytes=unified, macos_version=version, mps_usable=usable,
                     mps_reason=reason)


def detect_cpu(cpuinfo_text: str | None = None, system: str | None = None,
               machine: str | None = None) -> CpuInfo:
    """The CPU's name, cores and SIMD flags; `cpuinfo_text` stands in for /proc/cpuinfo in tests."""
    import psutil

    system = system or platform.system()
    machine = (machine or platform.machine()).lower()
    is_arm = machine in ("arm64", "aarch64") or machine.startswith("armv")
    model, flags = "", set()
    if cpuinfo_text is None and system == "Linux":
        try:
            cpuinfo_text = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo_text = None
    if cpuinfo_text:
        model, flags = _parse_cpuinfo(cpuinfo_text)
    elif system == "Darwin":
        model = _sysctl("machdep.cpu.brand_string") or ""
        feats = " ".join(filter(None, (_sysctl(f"machdep.cpu.{k}") for k in ("features", "leaf7_features"))))
        flags = {f.lower() for f in feats.split()}
    elif system == "Windows":
        model = _windows_cpu_name() or platform.processor()
        flags = _windows_flags()
    shown = sorted(f for f in flags if f in _X86_FLAGS)
    if is_arm and ("asimd" in flags or "neon" in flags or system in ("Darwin", "Windows") or not flags):
        shown.append("neon")  # Advanced SIMD is mandatory on AArch64
    return CpuInfo(
        model=model or platform.processor() or machine,
        arch=machine,
        physical_cores=psutil.cpu_count(logical=False),
        logical_cores=psutil.cpu_count(logical=True),
        flags=shown,
    )


def _parse_cpuinfo(text: str) -> tuple[str, set[str]]:
    """Model name and flags from /proc/cpuinfo (x86 `flags`, ARM `Features`)."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        value = value.strip()
        if not model and key in ("model name", "hardware", "cpu model", "processor") and not value.isdigit():
            model = value
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, flags


def _windows_cpu_name() -> str | None:
    """ProcessorNameString from the registry (platform.processor() on Windows is only a family code)."""
    try:
        import winreg

        key = winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"HARDWARE\DESCRIPTION\System\CentralProcessor\0")
        return str(winreg.QueryValueEx(key, "ProcessorNameString")[0]).strip()
    except (ImportError, OSError):
        return None


def _windows_flags() -> set[str]:
    """AVX2 / AVX-512 on Windows via IsProcessorFeaturePresent (PF_AVX2=40, PF_AVX512F=41)."""
    try:
        import ctypes

        present = ctypes.windll.kernel32.IsProcessorFeaturePresent  # type: ignore[attr-defined]
    except (ImportError, AttributeError, OSError):
        return set()
    return {name for name, code in (("avx2", 40), ("avx512f", 41)) if present(code)}


def _disk_free(path: Path) -> tuple[str, int | None]:
    """Free bytes on the disk holding `path` (its nearest existing parent if it does not exist yet)."""
    import psutil

    probe = path.expanduser().absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return str(path), int(psutil.disk_usage(str(probe)).free)
    except OSError:
        return str(path), None


def describe(profile: HardwareProfile) -> str:
    """A readable multi-line table of the profile, for `bitsmith hw`."""
    rows: list[tuple[str, str]] = []
    if profile.gpus:
        for g in profile.gpus:
            extra = []
            if g.compute_capability:
                extra.append(f"sm_{g.compute_capability[0]}{g.compute_capability[1]}")
            if g.pcie_gen and g.pcie_width:
                extra.append(f"PCIe {g.pcie_gen} x{g.pcie_width}")
            if g.power_limit_w:
                extra.append(f"{g.power_limit_w:.0f} W")
            rows.append((f"GPU {g.index}", f"{g.name}: {g.free_gb:.1f} of {g.total_gb:.1f} GiB free"
                         + (f" ({', '.join(extra)})" if extra else "")))
        cuda = profile.cuda_driver_version or "?"
        rows.append(("NVIDIA driver", f"{profile.nvidia_driver or '?'} (CUDA {cuda})"))
    else:
        rows.append(("NVIDIA GPU", f"none ({profile.nvidia_reason or 'not found'})"))
    if profile.apple is not None:
        a = profile.apple
        mps = "usable" if a.mps_usable else f"not usable: {a.mps_reason}"
        rows.append(("Apple silicon", f"{a.chip}, {a.unified_memory_bytes / GIB:.0f} GiB unified, "
                     f"macOS {a.macos_version}, MPS {mps}"))
    c = profile.cpu
    cores = f"{c.physical_cores or '?'} cores / {c.logical_cores or '?'} threads"
    rows.append(("CPU", f"{c.model} ({c.arch}), {cores}"))
    rows.append(("CPU flags", ", ".join(c.flags) or "none detected"))
    ram = f"{profile.ram_available_bytes / GIB:.1f} of {profile.ram_total_bytes / GIB:.1f} GiB available"
    rows.append(("RAM", ram))
    if profile.disk_free_bytes is not None:
        rows.append(("Disk", f"{profile.disk_free_bytes / GIB:.1f} GiB free at {profile.disk_path}"))
    rows.append(("OS", profile.os))
    rows.append(("Best device", profile.best_device))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines += [f"warning: {w}" for w in profile.warnings]
    return "\n".join(lines)
