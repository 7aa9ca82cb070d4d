"""Bitsmith's installer core: find the GPU, pick the matching PyTorch, install with uv, self-test, repair.

Stdlib only: the Windows, Linux and macOS installers run it with a uv-managed Python before anything else
exists (`uv run --no-project --python 3.12 bootstrap.py install ...`). Everything lives in one per-user
folder, no admin rights needed:

    <root>/                 %LOCALAPPDATA%\\Bitsmith, ~/.local/share/Bitsmith, ~/Library/Application Support/Bitsmith
      app/                  what the installer owns; repair recreates app/env, uninstall removes app/
        env/                the Python environment Bitsmith runs in
        python/             the uv-managed Python interpreter
        uv-cache/           downloaded wheels: an interrupted install resumes without downloading again
        install.json        what is installed (versions, PyTorch build, self-test result)
        install-incomplete.json   exists only while an install runs, or after one was interrupted
        logs/               one log per installer run
      models/ jobs/ cache/ ...    the user's models, chats and jobs (bitsmith.engine.paths): always kept

The PyTorch choice is a pure function of the hardware facts (`choose_torch`) over a table of CUDA builds
(`CUDA_BUILDS`); detection, commands, network and disk sit behind injected callables so tests drive every
path without installing anything.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

APP_NAME = "Bitsmith"
STATE_FORMAT = 1
PYTHON_VERSION = "3.12"
MIN_TORCH = "2.4"  # pyproject's floor
PYTORCH_INDEX = "https://download.pytorch.org/whl"
# Prebuilt llama-cpp-python wheels (PyPI has only the source, which needs a C++ compiler to build).
LLAMA_CPP_INDEX = "https://abetlen.github.io/llama-cpp-python/whl"
NVIDIA_DRIVERS_URL = "https://www.nvidia.com/Download/index.aspx"
VC_REDIST_URL = "https://aka.ms/vs/17/release/vc_redist.x64.exe"
GB = 10**9

EXIT_OK, EXIT_SELFTEST, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
# The GPU cannot be used (no driver, driver too old, GPU too old) but a CPU install is possible: the platform
# installers ask the user, and run again with --allow-cpu on a yes. Nothing was changed on disk.
EXIT_CPU_OFFER = 3
CPU_OFFER_KINDS = ("no_driver", "driver_too_old", "gpu_too_old")


# ---------------------------------------------------------------------------------------------- errors


class InstallError(Exception):
    """A problem the user can act on: `kind` names it, `hint` says what to do; the state stays re-runnable."""

    def __init__(self, kind: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.hint = hint

    def plain(self) -> str:
        """The message and the fix, as shown to the user."""
        return f"Problem: {self.message}" + (f"\nWhat to do: {self.hint}" if self.hint else "")


# ---------------------------------------------------------------------------------------------- folders


def default_root(system: str | None = None, env: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """The per-user folder Bitsmith lives in (the same one bitsmith.engine.paths.data_dir uses)."""
    system = system or platform.system()
    env = os.environ if env is None else env
    home = home or Path.home()
    if env.get("BITSMITH_HOME"):
        return Path(env["BITSMITH_HOME"]).expanduser()
    if system == "Windows":
        base = env.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / APP_NAME
    if system == "Darwin":
        return home / "Library" / "Application Support" / APP_NAME
    return Path(env.get("XDG_DATA_HOME") or home / ".local" / "share") / APP_NAME


@dataclass(frozen=True)
class Layout:
    """Every path the installer touches, derived from the root folder."""

    root: Path
    system: str

    @property
    def app(self) -> Path:
        return self.root / "app"

    @property
    def env(self) -> Path:
        return self.app / "env"

    @property
    def python_dir(self) -> Path:
        return self.app / "python"

    @property
    def uv_cache(self) -> Path:
        return self.app / "uv-cache"

    @property
    def state_file(self) -> Path:
        return self.app / "install.json"

    @property
    def marker(self) -> Path:
        return self.app / "install-incomplete.json"

    @property
    def logs(self) -> Path:
        return self.app / "logs"

    @property
    def constraints(self) -> Path:
        return self.app / "constraints.txt"

    @property
    def excludes(self) -> Path:
        return self.app / "excludes.txt"

    @property
    def message_file(self) -> Path:
        """The last run's outcome in plain words (UTF-16 with BOM, so the NSIS installer can show it)."""
        return self.app / "last-message.txt"

    def env_bin(self, name: str) -> Path:
        """An executable inside the environment (python, pythonw, bitsmith)."""
        if self.system == "Windows":
            return self.env / "Scripts" / f"{name}.exe"
        return self.env / "bin" / name

    @property
    def env_python(self) -> Path:
        return self.env_bin("python")

    def launch_command(self) -> list[str]:
        """How shortcuts start the app: without a console window on Windows (pythonw)."""
        python = self.env_bin("pythonw") if self.system == "Windows" else self.env_python
        return [str(python), "-m", "bitsmith.app"]


# ---------------------------------------------------------------------------------------------- hardware


@dataclass(frozen=True)
class Gpu:
    """One NVIDIA GPU: its name, compute capability (None when the driver cannot say) and memory."""

    name: str
    cc: tuple[int, int] | None
    memory_mb: int = 0


@dataclass(frozen=True)
class Hardware:
    """What the installer needs to know about this machine to choose PyTorch."""

    system: str  # Windows, Linux, Darwin
    machine: str  # x86_64 or arm64
    gpus: tuple[Gpu, ...] = ()
    driver: str | None = None  # e.g. "572.16" (Windows) or "570.86.16" (Linux)
    nvidia_device: bool = False  # an NVIDIA display device is plugged in, driver or not
    apple_silicon: bool = False
    detail: str = ""  # why no driver answered, for the log


Run = Callable[[Sequence[str], float], tuple[int, str]]


def run_quiet(argv: Sequence[str], timeout: float = 60) -> tuple[int, str]:
    """Run a command, return (exit code, stdout+stderr); a missing program is exit code 127, never a raise."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout
        )
    except FileNotFoundError as exc:
        return 127, str(exc)
    except (OSError, subprocess.SubprocessError) as exc:
        return 126, f"{type(exc).__name__}: {exc}"
    return done.returncode, (done.stdout or "") + (done.stderr or "")


def normalize_machine(machine: str) -> str:
    """x86_64 for AMD64/x86_64, arm64 for aarch64/arm64; anything else as given, lower-case."""
    m = machine.lower()
    return {"amd64": "x86_64", "x64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(m, m)


def parse_version(text: str) -> tuple[int, ...]:
    """'570.86.16' -> (570, 86, 16); digits only, so '2.9.1+cu128' -> (2, 9, 1)."""
    parts = []
    for piece in re.split(r"[.+]", text.strip()):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


def parse_cc(text: str) -> tuple[int, int] | None:
    """'8.9' -> (8, 9); anything unreadable -> None."""
    m = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


SMI_FIELDS = "name,driver_version,compute_cap,memory.total"


def parse_nvidia_smi(text: str, with_cc: bool = True) -> tuple[str | None, tuple[Gpu, ...]]:
    """Parse `nvidia-smi --query-gpu=name,driver_version[,compute_cap],memory.total --format=csv,noheader,nounits`."""
    driver, gpus = None, []
    for line in text.splitlines():
        cols = [c.strip() for c in line.split(",")]
        if len(cols) != (4 if with_cc else 3) or not parse_version(cols[1]):
            continue
        name, driver = cols[0], cols[1]
        cc = parse_cc(cols[2]) if with_cc else None
        mem = cols[-1]
        gpus.append(Gpu(name, cc, int(float(mem)) if re.fullmatch(r"[\d.]+", mem) else 0))
    return driver, tuple(gpus)


def smi_candidates(system: str, env: Mapping[str, str]) -> list[str]:
    """Where nvidia-smi lives: on PATH, and on Windows also where older drivers put it."""
    names = ["nvidia-smi"]
    if system == "Windows":
        sysroot = env.get("SystemRoot", r"C:\Windows")
        names += [rf"{sysroot}\System32\nvidia-smi.exe"]
        pf = env.get("ProgramFiles", r"C:\Program Files")
        names += [rf"{pf}\NVIDIA Corporation\NVSMI\nvidia-smi.exe"]
    return names


def query_nvidia_smi(run: Run, system: str, env: Mapping[str, str]) -> tuple[str | None, tuple[Gpu, ...], str]:
    """Ask nvidia-smi for the driver and the GPUs; old drivers lack the compute_cap field, so retry without it."""
    detail = ""
    for exe in smi_candidates(system, env):
        rc, out = run([exe, f"--query-gpu={SMI_FIELDS}", "--format=csv,noheader,nounits"], 30)
        if rc == 127:
            detail = "nvidia-smi not found"
            continue
        if rc != 0 and "compute_cap" in out:
            rc, out = run([exe, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader,nounits"], 30)
            if rc == 0:
                driver, gpus = parse_nvidia_smi(out, with_cc=False)
                return driver, gpus, ""
        if rc == 0:
            driver, gpus = parse_nvidia_smi(out)
            if gpus:
                return driver, gpus, ""
        detail = f"nvidia-smi failed: {out.strip()[:300]}"
        break
    return None, (), detail


class NvmlUnavailable(Exception):
    """NVML could not be loaded or initialised (no driver)."""


def nvml_query(library: object | None = None) -> tuple[str, tuple[Gpu, ...]]:
    """Driver version and GPUs through NVML's C API (ctypes), for when nvidia-smi is missing or too old."""
    lib = library
    if lib is None:
        names = ["nvml.dll"] if platform.system() == "Windows" else ["libnvidia-ml.so.1", "libnvidia-ml.so"]
        for name in names:
            try:
                lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
        if lib is None:
            raise NvmlUnavailable("the NVIDIA management library (NVML) is not installed")
    if lib.nvmlInit_v2() != 0:
        raise NvmlUnavailable("NVML could not start (no working NVIDIA driver)")
    try:
        buf = ctypes.create_string_buffer(96)
        lib.nvmlSystemGetDriverVersion(buf, 96)
        driver = buf.value.decode(errors="replace")
        count = ctypes.c_uint(0)
        lib.nvmlDeviceGetCount_v2(ctypes.byref(count))
        gpus = []
        for i in range(count.value):
            handle = ctypes.c_void_p()
            if lib.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(handle)) != 0:
                continue
            name = ctypes.create_string_buffer(96)
            lib.nvmlDeviceGetName(handle, name, 96)
            major, minor = ctypes.c_int(0), ctypes.c_int(0)
            ok = lib.nvmlDeviceGetCudaComputeCapability(handle, ctypes.byref(major), ctypes.byref(minor)) == 0
            mem = (ctypes.c_ulonglong * 3)()  # nvmlMemory_t: total, free, used
            lib.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(mem))
            cc = (major.value, minor.value) if ok else None
            gpus.append(Gpu(name.value.decode(errors="replace"), cc, int(mem[0] // 2**20)))
        return driver, tuple(gpus)
    finally:
        lib.nvmlShutdown()


def nvidia_pci_device(system: str, run: Run, sys_root: Path = Path("/")) -> bool:
    """Whether an NVIDIA display device is plugged in, even with no driver (PCI vendor 0x10de)."""
    if system == "Linux":
        for dev in (sys_root / "sys" / "bus" / "pci" / "devices").glob("*"):
            try:
                vendor = (dev / "vendor").read_text().strip().lower()
                klass = (dev / "class").read_text().strip().lower()
            except OSError:
                continue
            if vendor == "0x10de" and klass.startswith("0x03"):
                return True
        return False
    if system == "Windows":
        cmd = "Get-CimInstance Win32_VideoController | ForEach-Object { $_.PNPDeviceID }"
        rc, out = run(["powershell", "-NoProfile", "-NonInteractive", "-Command", cmd], 60)
        return rc == 0 and "VEN_10DE" in out.upper()
    return False


def detect_hardware(
    run: Run = run_quiet,
    nvml: Callable[[], tuple[str, tuple[Gpu, ...]]] = nvml_query,
    system: str | None = None,
    machine: str | None = None,
    env: Mapping[str, str] | None = None,
    sys_root: Path = Path("/"),
) -> Hardware:
    """Detect NVIDIA GPUs and driver (nvidia-smi, then NVML), Apple silicon, or neither."""
    system = system or platform.system()
    machine = normalize_machine(machine or platform.machine())
    env = os.environ if env is None else env
    if system == "Darwin":
        apple = machine == "arm64"
        if not apple:  # an x86_64 Python under Rosetta on an Apple-silicon Mac
            rc, out = run(["sysctl", "-n", "hw.optional.arm64"], 10)
            apple = rc == 0 and out.strip() == "1"
        return Hardware(system, machine, apple_silicon=apple)
    driver, gpus, detail = query_nvidia_smi(run, system, env)
    if not gpus or any(g.cc is None for g in gpus):
        try:
            nv_driver, nv_gpus = nvml()
            if nv_gpus and (not gpus or len(nv_gpus) == len(gpus)):
                driver, gpus, detail = nv_driver, nv_gpus, ""
        except (NvmlUnavailable, OSError, AttributeError) as exc:
            detail = detail or str(exc)
    device = bool(gpus) or nvidia_pci_device(system, run, sys_root)
    return Hardware(system, machine, gpus, driver, device, detail=detail)


# ---------------------------------------------------------------------------------------------- choosing PyTorch


@dataclass(frozen=True)
class CudaBuild:
    """One PyTorch CUDA build: its index tag, the driver it needs, the GPU architectures its wheels carry."""

    tag: str
    cuda: str
    min_driver: Mapping[str, tuple[int, ...]]  # by OS, from the CUDA toolkit release notes ("toolkit driver")
    archs: tuple[tuple[int, int], ...]  # SASS in PyTorch's wheels; a GPU runs SASS of its major, minor <= its own
    torch: str  # the torch versions that exist on that index and that Bitsmith accepts
    machines: tuple[str, ...] = ("x86_64",)

    def driver_ok(self, system: str, driver: tuple[int, ...]) -> bool:
        return system in self.min_driver and driver >= self.min_driver[system]

    def supports(self, cc: tuple[int, int]) -> bool:
        return any(major == cc[0] and minor <= cc[1] for major, minor in self.archs)


_LEGACY = ((5, 0), (6, 0), (7, 0), (7, 5), (8, 0), (8, 6), (9, 0))  # Maxwell .. Hopper
_MODERN = ((7, 5), (8, 0), (8, 6), (9, 0), (10, 0), (12, 0))  # Turing .. Blackwell (RTX 50 is sm_120)

# Newest first; the first build whose driver minimum is met and whose architectures cover the GPU wins.
# Only architectures known to be in the wheels are listed: missing one costs a fall back to an older
# build, never a broken install, and the first-start self-test checks torch.cuda.get_arch_list() anyway.
# Driver minimums are the CUDA toolkit's own ("toolkit driver"), not the looser minor-version-compatibility
# floor: Triton compiles kernels with its bundled, newer ptxas, which an older driver may refuse to load.
# PyTorch's builds by release (RELEASE.md): 2.9-2.11 cu126/cu128/cu130; 2.12-2.14 cu126/cu130/cu132. A build
# that stopped being published still resolves to its last torch (cu128: 2.11, cu124: 2.6, cu118: 2.7).
# Since CUDA 13.1 NVIDIA no longer lists a Windows toolkit driver; cu132 on Windows asks for the 595 branch,
# the branch its Linux minimum (595.45.04) belongs to.
CUDA_BUILDS: tuple[CudaBuild, ...] = (
    CudaBuild("cu132", "13.2", {"Linux": (595, 45, 4), "Windows": (595,)}, _MODERN, ">=2.12", ("x86_64", "arm64")),
    CudaBuild("cu130", "13.0", {"Linux": (580, 65, 6), "Windows": (580, 88)}, _MODERN, ">=2.9", ("x86_64", "arm64")),
    CudaBuild("cu128", "12.8", {"Linux": (570, 26), "Windows": (570, 65)}, _MODERN, ">=2.7", ("x86_64", "arm64")),
    CudaBuild("cu126", "12.6", {"Linux": (560, 28, 3), "Windows": (560, 76)}, _LEGACY, ">=2.6"),
    CudaBuild("cu124", "12.4", {"Linux": (550, 54, 14), "Windows": (551, 61)}, _LEGACY, f">={MIN_TORCH}"),
    CudaBuild("cu118", "11.8", {"Linux": (520, 61, 5), "Windows": (520, 6)}, _LEGACY, f">={MIN_TORCH}"),
)
TRITON_MIN_CC = (7, 5)


@dataclass(frozen=True)
class TorchChoice:
    """The PyTorch build to install, where it comes from, and what the user should be told about it."""

    build: str  # cu130, cu128, ..., cpu, or "default" (PyPI's own build: Metal on Apple silicon)
    label: str
    index_url: str | None  # None: the default index (PyPI)
    torch_spec: str
    gpu: Gpu | None = None
    notes: tuple[str, ...] = ()
    disk_gb: float = 3.0  # free space needed for the environment and downloads

    @property
    def cuda(self) -> bool:
        return self.build.startswith("cu")


def _fmt(version: tuple[int, ...]) -> str:
    """(520, 6) -> '520.06': NVIDIA writes every part after the first with two digits; a branch (595,) -> '595.xx'."""
    if len(version) == 1:
        return f"{version[0]}.xx"
    return ".".join([str(version[0]), *(f"{v:02d}" for v in version[1:])]) if version else "?"


def _cpu_option(system: str) -> str:
    """How to ask this platform's installer for a CPU install."""
    if system == "Windows":
        return "answer Yes when Setup offers it (or run Setup with /ALLOWCPU)"
    return "answer yes when the installer offers it (or run it with --allow-cpu)"


def _cpu_choice(hw: Hardware, note: str) -> TorchChoice:
    return TorchChoice("cpu", "PyTorch for the CPU", f"{PYTORCH_INDEX}/cpu", f"torch>={MIN_TORCH}", notes=(note,))


def _cuda_choice(build: CudaBuild, gpu: Gpu, notes: list[str]) -> TorchChoice:
    if gpu.cc and gpu.cc < TRITON_MIN_CC:
        notes.append(
            f"{gpu.name} is older than the RTX 20 series: Bitsmith's Triton kernels need compute capability 7.5 "
            "or newer, so it may fall back to slower code (the first-start check tells)."
        )
    return TorchChoice(
        build.tag,
        f"PyTorch with CUDA {build.cuda} for {gpu.name}",
        f"{PYTORCH_INDEX}/{build.tag}",
        f"torch{build.torch}",
        gpu,
        tuple(notes),
        disk_gb=8.0,
    )


def choose_torch(hw: Hardware, requested: str = "auto", allow_cpu: bool = False) -> TorchChoice:
    """Pick the PyTorch build for this machine, or raise InstallError saying what to fix first."""
    if hw.system == "Darwin":
        if not hw.apple_silicon:
            raise InstallError(
                "unsupported_platform",
                "This Mac has an Intel processor; PyTorch stopped publishing builds for Intel Macs after 2.2, "
                "and Bitsmith needs 2.4 or newer.",
                "Use a Mac with Apple silicon (M1 or newer), or a Windows or Linux PC.",
            )
        if hw.machine != "arm64":
            raise InstallError(
                "unsupported_platform",
                "The installer is running as an Intel program (Rosetta) on an Apple-silicon Mac.",
                "Run the Apple-silicon (arm64) installer.",
            )
        return TorchChoice("default", "PyTorch for Apple silicon (Metal)", None, f"torch>={MIN_TORCH}", disk_gb=3.0)
    if requested == "cpu":
        return _cpu_choice(hw, "You asked for the CPU-only build.")
    if requested != "auto":
        by_tag = {b.tag: b for b in CUDA_BUILDS}
        if requested not in by_tag:
            known = ", ".join(["auto", "cpu", *by_tag])
            raise InstallError("bad_input", f"Unknown PyTorch build '{requested}'.", f"Use one of: {known}.")
        gpu = max(hw.gpus, key=lambda g: g.memory_mb) if hw.gpus else Gpu("your NVIDIA GPU", None)
        return _cuda_choice(by_tag[requested], gpu, ["You chose this PyTorch build yourself."])

    if not hw.gpus:
        if hw.nvidia_device:
            if allow_cpu:
                return _cpu_choice(
                    hw,
                    "An NVIDIA GPU is present but has no working driver, so it is NOT used: installing for the CPU "
                    "(much slower). After installing the driver, run the installer again to switch to the GPU.",
                )
            raise InstallError(
                "no_driver",
                "An NVIDIA graphics card is installed, but its driver is missing or not working, so PyTorch "
                "could not use it." + (f" ({hw.detail})" if hw.detail else ""),
                f"Install the current NVIDIA driver ({NVIDIA_DRIVERS_URL} or the NVIDIA App), restart the computer, "
                f"then run the installer again. To install for the CPU anyway (much slower), {_cpu_option(hw.system)}.",
            )
        return _cpu_choice(hw, "No NVIDIA GPU found: Bitsmith runs on the CPU, which is slow for large models.")

    driver = parse_version(hw.driver or "")
    primary = max(hw.gpus, key=lambda g: g.memory_mb)
    builds = [b for b in CUDA_BUILDS if hw.machine in b.machines and hw.system in b.min_driver]
    usable = [b for b in builds if b.driver_ok(hw.system, driver)]
    known = [g for g in hw.gpus if g.cc is not None]
    newest_known = max(cc for b in CUDA_BUILDS for cc in b.archs)

    def covers(build: CudaBuild, gpus: Sequence[Gpu]) -> bool:
        return all(g.cc is None or g.cc > newest_known or build.supports(g.cc) for g in gpus)

    notes: list[str] = []
    if any(g.cc and g.cc > newest_known for g in known):
        notes.append("Your GPU is newer than this installer's table; the newest PyTorch build is used and checked.")
    for build in usable:
        if covers(build, hw.gpus):
            return _cuda_choice(build, primary, notes)
    for build in usable:
        if covers(build, [primary]):
            others = ", ".join(g.name for g in hw.gpus if g is not primary and not covers(build, [g]))
            notes.append(f"PyTorch cannot use these older GPUs together with {primary.name}: {others}.")
            return _cuda_choice(build, primary, notes)

    if allow_cpu:
        return _cpu_choice(
            hw,
            f"No PyTorch CUDA build fits {primary.name} with driver {hw.driver}, so the GPU is NOT used: installing "
            "for the CPU (much slower). After updating the driver, run the installer again to switch to the GPU.",
        )
    fitting = [b for b in builds if primary.cc is None or covers(b, [primary])]
    if not fitting:
        cc = f"{primary.cc[0]}.{primary.cc[1]}" if primary.cc else "unknown"
        raise InstallError(
            "gpu_too_old",
            f"{primary.name} (compute capability {cc}) is too old for any PyTorch build Bitsmith can use "
            "(they start at the GTX 900 series, compute capability 5.0).",
            f"To install for the CPU (slow), {_cpu_option(hw.system)}; or use a newer NVIDIA GPU.",
        )
    need = min(b.min_driver[hw.system] for b in fitting)
    best = fitting[0]
    raise InstallError(
        "driver_too_old",
        f"Your NVIDIA driver ({hw.driver or 'unknown version'}) is too old for the PyTorch builds that support "
        f"{primary.name}: they need driver {_fmt(need)} or newer.",
        f"Update the NVIDIA driver ({NVIDIA_DRIVERS_URL} or the NVIDIA App) to {_fmt(best.min_driver[hw.system])} "
        f"or newer for CUDA {best.cuda} (at least {_fmt(need)}), restart, then run the installer again. "
        f"To install for the CPU instead (slow), {_cpu_option(hw.system)}.",
    )


# torch minor -> the Triton 3.x minor its Linux wheels pin; triton-windows follows the same pairing (its README:
# "triton-windows<3.9 for PyTorch 2.7-2.14"). Not a formula: 2.10 and 2.11 share 3.6, 2.12 and 2.13 share 3.7.
TRITON_FOR_TORCH = {
    (2, 6): 2, (2, 7): 3, (2, 8): 4, (2, 9): 5, (2, 10): 6, (2, 11): 6, (2, 12): 7, (2, 13): 7, (2, 14): 8,
}
# On Windows a CUDA torch is kept below the first minor with no triton-windows pairing known here, so a newer
# torch on the index can never leave the install without a matching Triton.
WINDOWS_TORCH_BELOW = f"2.{max(m for _, m in TRITON_FOR_TORCH) + 1}"


def triton_windows_spec(torch_version: str) -> str:
    """The triton-windows release line that matches a torch version (TRITON_FOR_TORCH)."""
    v = parse_version(torch_version)
    if len(v) < 2 or v < (2, 6):
        return "triton-windows<3.2"
    minor = TRITON_FOR_TORCH.get(v[:2])
    if minor is None:
        raise InstallError(
            "install_failed",
            f"This installer knows no Triton for Windows that matches PyTorch {torch_version}.",
            f"Run Setup again without a PyTorch override (it picks PyTorch below {WINDOWS_TORCH_BELOW}), or use a "
            "newer Bitsmith Setup.",
        )
    return f"triton-windows>=3.{minor},<3.{minor + 1}"


def arch_supported(cc: tuple[int, int], arch_list: Sequence[str]) -> bool:
    """Whether torch's compiled architectures (get_arch_list) run on a GPU of compute capability cc."""
    for arch in arch_list:
        m = re.fullmatch(r"(sm|compute)_(\d+)(\d)([af]?)", arch)
        if not m:
            continue
        kind, major, minor, suffix = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
        if kind == "sm" and (suffix and (major, minor) == cc or not suffix and major == cc[0] and minor <= cc[1]):
            return True
        if kind == "compute" and not suffix and (major, minor) <= cc:  # PTX: compiled on first use
            return True
    return False


# ---------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Options:
    """What the user (or the platform installer) asked for."""

    root: Path
    wheel: Path | None = None  # the Bitsmith wheel to install; None: the newest on PyPI
    find_links: tuple[Path, ...] = ()
    offline: bool = False
    without_llama_cpp: bool = False  # for tests and CI: skip llama-cpp-python (GGUF chat then unavailable)
    python: str = PYTHON_VERSION  # a version for uv to fetch, or a path to an interpreter
    build: str = "auto"
    allow_cpu: bool = False
    torch: str | None = None  # overrides the torch requirement, e.g. "torch==2.13.0"
    uv: str = "uv"


@dataclass(frozen=True)
class Step:
    """One command of the install, with its plain-words title."""

    key: str
    title: str
    argv: tuple[str, ...]


def uv_env(layout: Layout, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for uv: its cache and interpreters inside app/, no user config, UTF-8 everywhere."""
    env = dict(os.environ if base is None else base)
    env.update(
        UV_CACHE_DIR=str(layout.uv_cache),
        UV_PYTHON_INSTALL_DIR=str(layout.python_dir),
        UV_NO_CONFIG="1",
        UV_NO_PROGRESS="1",
        PYTHONUTF8="1",
        PYTHONIOENCODING="utf-8",
    )
    env.pop("VIRTUAL_ENV", None)
    return env


def _python_is_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or spec.endswith(".exe")


def _source_args(opts: Options, index_url: str | None) -> list[str]:
    args: list[str] = []
    if opts.offline:
        args += ["--offline", "--no-index"]
    elif index_url:
        args += ["--index-url", index_url]
    for link in opts.find_links:
        args += ["--find-links", str(link)]
    return args


def venv_step(layout: Layout, opts: Options) -> Step:
    """Create the environment with the managed Python (or the interpreter the caller named)."""
    argv = [opts.uv, "venv", "--python", opts.python]
    if not _python_is_path(opts.python):
        argv.append("--managed-python")
    if opts.offline:
        argv.append("--offline")
    return Step(
        "venv",
        f"Setting up Python {opts.python if not _python_is_path(opts.python) else ''}".strip(),
        (*argv, str(layout.env)),
    )


def torch_step(layout: Layout, opts: Options, choice: TorchChoice, upgrade: bool = False) -> Step:
    """Install PyTorch from the index of the chosen build, at least as new as the Bitsmith wheel asks.

    The wheel's own floor matters on an update: a newer Bitsmith may need a newer torch than the environment
    has, and only this step may move torch (the Bitsmith step pins it), so it must ask for that floor here.
    """
    spec = opts.torch
    if not spec:
        floor = wheel_requirement(opts.wheel, "torch")
        spec = choice.torch_spec + (f",{floor}" if floor else "")
        if layout.system == "Windows" and choice.cuda:
            spec += f",<{WINDOWS_TORCH_BELOW}"
    argv = [opts.uv, "pip", "install", "--python", str(layout.env_python), *_source_args(opts, choice.index_url)]
    if upgrade:
        argv += ["--upgrade-package", "torch"]
    size = "about 2.5 GB" if choice.cuda else "about 200 MB"
    return Step("torch", f"Downloading and installing {choice.label} ({size})", (*argv, spec))


def triton_step(layout: Layout, opts: Options, torch_version: str) -> Step:
    """Windows only: triton-windows, matched to the installed torch (Linux wheels bring Triton themselves)."""
    argv = [opts.uv, "pip", "install", "--python", str(layout.env_python), *_source_args(opts, None)]
    return Step(
        "triton", "Installing Triton for Windows (the GPU kernel compiler)", (*argv, triton_windows_spec(torch_version))
    )


def llama_cpp_index(choice: TorchChoice) -> str:
    """Prebuilt llama-cpp-python wheels: Metal on Apple silicon, the CPU build elsewhere."""
    return f"{LLAMA_CPP_INDEX}/{'metal' if choice.build == 'default' else 'cpu'}"


def bitsmith_step(layout: Layout, opts: Options, choice: TorchChoice, upgrade: bool = False) -> Step:
    """Install Bitsmith and its other dependencies, keeping the torch just installed."""
    argv = [opts.uv, "pip", "install", "--python", str(layout.env_python), *_source_args(opts, None)]
    argv += ["--constraints", str(layout.constraints), "--reinstall-package", "bitsmith"]
    if opts.without_llama_cpp:
        argv += ["--excludes", str(layout.excludes)]
    elif not opts.offline:
        argv += ["--extra-index-url", llama_cpp_index(choice)]
    if upgrade:  # only Bitsmith: a global --upgrade could trade the CUDA torch for PyPI's build
        argv += ["--upgrade-package", "bitsmith"]
    target = str(opts.wheel) if opts.wheel else "bitsmith"
    return Step("bitsmith", "Installing Bitsmith and its libraries", (*argv, target))


# ---------------------------------------------------------------------------------------------- running


DISK_PATTERNS = (
    "no space left on device",
    "os error 28",
    "not enough space on the disk",
    "os error 112",
    "disk quota exceeded",
    "os error 122",
)
BUSY_PATTERNS = ("os error 32", "being used by another process", "os error 5)", "access is denied")
NETWORK_PATTERNS = (
    "dns error",
    "failed to lookup address",
    "name resolution",
    "connection refused",
    "network is unreachable",
    "error sending request",
    "tcp connect error",
    "operation timed out",
    "connection reset",
    "could not connect",
    "no such host is known",
    "network connectivity is disabled",
    "failed to fetch",
    "request failed after",
)


def classify_failure(step: Step, output: str, layout: Layout, log: Path | None) -> InstallError:
    """Turn a failed command's output into a plain message with a fix (disk, files in use, network, other)."""
    low = output.lower()
    where = f" The full log is {log}." if log else ""
    if any(p in low for p in DISK_PATTERNS):
        return InstallError(
            "disk_full",
            f"The disk holding {layout.root} is full.",
            "Free some space (PyTorch for NVIDIA GPUs needs about 8 GB), then run the installer again; "
            "it continues where it stopped." + where,
        )
    if any(p in low for p in BUSY_PATTERNS):
        return InstallError(
            "busy",
            "Some of Bitsmith's files are in use, so they could not be replaced.",
            "Close Bitsmith (and any window that uses its files), then run the installer again." + where,
        )
    if any(p in low for p in NETWORK_PATTERNS):
        return InstallError(
            "network",
            f"A download failed during this step: {step.title}. The internet connection was lost or a server "
            "could not be reached.",
            "Check the connection, then run the installer again; finished downloads are kept, so it continues "
            "where it stopped." + where,
        )
    last = "\n".join(line for line in output.strip().splitlines()[-6:])
    return InstallError(
        "install_failed",
        f"This step failed: {step.title}.\n{last}",
        "Run the installer again (it repairs a half-finished install). If it fails the same way, send the log "
        "to the Bitsmith issue tracker." + where,
    )


class Console:
    """Prints plain progress lines and copies everything into the run's log file."""

    def __init__(self, log: Path | None = None, stream=None) -> None:
        self.log = log
        self.stream = stream or sys.stdout
        self.lines: list[str] = []

    def say(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            self.lines.append(line)
            try:
                print(line, file=self.stream, flush=True)
            except UnicodeEncodeError:
                print(line.encode("ascii", "replace").decode(), file=self.stream, flush=True)
            self.write_log(line)

    def write_log(self, line: str) -> None:
        if self.log is not None:
            try:
                with open(self.log, "a", encoding="utf-8") as fh:
                    fh.write(line + "\n")
            except OSError:
                pass


def stream_command(argv: Sequence[str], env: Mapping[str, str], console: Console) -> tuple[int, str]:
    """Run an install command, echoing its output indented; returns (exit code, the last lines of output)."""
    tail: list[str] = []
    try:
        proc = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(env),
            text=True,
            encoding="utf-8",
            errors="replace",
        )
    except OSError as exc:
        return 127, f"could not start {argv[0]}: {exc}"
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-200:]
        console.say(f"    {line}")
    return proc.wait(), "\n".join(tail)


@dataclass
class Deps:
    """The installer's boundary with the world, replaced by fakes in tests."""

    run_step: Callable[[Sequence[str], Mapping[str, str], Console], tuple[int, str]] = stream_command
    run: Run = run_quiet
    detect: Callable[[], Hardware] = detect_hardware
    can_reach: Callable[[str], bool] = lambda host: _can_reach(host)
    disk_free: Callable[[Path], int] = lambda path: _disk_free(path)
    now: Callable[[], float] = time.time
    remove_tree: Callable[[Path], None] = lambda path: shutil.rmtree(path)


def _can_reach(host: str, port: int = 443, timeout: float = 8.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _disk_free(path: Path) -> int:
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temp file + os.replace), so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict | None:
    """A JSON file's content, or None when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_message(layout: Layout, text: str) -> None:
    """Leave the outcome in plain words for the platform installer to show (UTF-16 with BOM: NSIS reads it)."""
    try:
        layout.app.mkdir(parents=True, exist_ok=True)
        layout.message_file.write_text(text.replace("\n", "\r\n"), encoding="utf-16")
    except OSError:
        pass


def wheel_requirement(wheel: Path | None, name: str) -> str | None:
    """The version specifier a wheel's METADATA gives `name` ('>=2.9'), when unconditional; None otherwise."""
    if wheel is None:
        return None
    try:
        with zipfile.ZipFile(wheel) as zf:
            meta = next((n for n in zf.namelist() if n.endswith(".dist-info/METADATA")), None)
            text = zf.read(meta).decode("utf-8", "replace") if meta else ""
    except (OSError, zipfile.BadZipFile, KeyError):
        return None
    pattern = re.compile(rf"Requires-Dist:\s*{re.escape(name)}\s*\(?\s*([<>=!~][^;()]*?)\s*\)?\s*(;.*)?$", re.I)
    for line in text.splitlines():
        m = pattern.match(line.strip())
        if m and not m.group(2):  # a marker (extra, platform) would need evaluating: keep no floor instead
            return re.sub(r"\s+", "", m.group(1))
    return None


def wheel_version(wheel: Path | None) -> str | None:
    """The version in a wheel's file name (bitsmith-0.1.0-py3-none-any.whl -> 0.1.0)."""
    if wheel is None:
        return None
    parts = wheel.name.split("-")
    return parts[1] if len(parts) >= 5 else None


# ---------------------------------------------------------------------------------------------- self-test


@dataclass(frozen=True)
class Check:
    """One line of the first-start check: what works, what does not and how to fix it."""

    name: str
    status: str  # ok, problem, skipped, note
    message: str
    fix: str = ""


def repair_hint(system: str, root: Path | None = None) -> str:
    """How a user starts a repair on this platform (models and chats are kept)."""
    if system == "Windows":
        return "Run Repair (Start menu > Bitsmith > Repair Bitsmith, or Setup again)."
    if system == "Darwin":
        where = f"the folder {root / 'app'}" if root else "the app folder inside Bitsmith's folder"
        return f"Quit Bitsmith, delete {where} (your models and chats stay), then open Bitsmith again."
    where = str(root / "app" / "install.sh") if root else "install.sh"
    return f"Run {where} --repair (your models and chats stay)."


def interpret_probe(probe: Mapping, build: str, system: str, root: Path | None = None) -> list[Check]:
    """Turn the probe's raw facts into plain-words checks, each problem with its fix."""
    checks: list[Check] = []
    repair = repair_hint(system, root)
    if probe.get("bitsmith_error"):
        checks.append(Check("Bitsmith", "problem", f"Bitsmith does not start: {probe['bitsmith_error']}", repair))
    else:
        checks.append(Check("Bitsmith", "ok", f"Bitsmith {probe.get('bitsmith', '?')} is installed."))
    if probe.get("torch_error"):
        err = probe["torch_error"]
        fix = repair
        if system == "Windows" and "dll" in err.lower():
            fix = f"Install the Microsoft Visual C++ Redistributable ({VC_REDIST_URL}), restart, then: {repair}"
        checks.append(Check("PyTorch", "problem", f"PyTorch does not load: {err}", fix))
        return checks

    torch_v = probe.get("torch", "?")
    if build.startswith("cu"):
        cc = tuple(probe.get("capability") or ())
        device = probe.get("device", "the GPU")
        if not probe.get("torch_cuda"):
            checks.append(
                Check(
                    "GPU",
                    "problem",
                    f"A CPU-only PyTorch ({torch_v}) was installed instead of the "
                    "CUDA build, so the GPU would sit idle.",
                    repair,
                )
            )
        elif not probe.get("cuda_available"):
            reason = probe.get("cuda_error") or "CUDA is not available"
            checks.append(
                Check(
                    "GPU",
                    "problem",
                    f"PyTorch {torch_v} (CUDA {probe.get('torch_cuda')}) cannot use the NVIDIA GPU: {reason}.",
                    "Update the NVIDIA driver (" + NVIDIA_DRIVERS_URL + "), "
                    "restart the computer, then " + repair[0].lower() + repair[1:],
                )
            )
        elif len(cc) == 2 and not arch_supported(cc, probe.get("arch_list") or []):
            checks.append(
                Check(
                    "GPU",
                    "problem",
                    f"This PyTorch ({torch_v}) has no code for {device} "
                    f"(sm_{cc[0]}{cc[1]}; it has {', '.join(probe.get('arch_list') or [])}).",
                    "Update the NVIDIA driver so a newer CUDA build can be chosen, then "
                    + repair[0].lower()
                    + repair[1:],
                )
            )
        elif probe.get("gpu_compute_error"):
            checks.append(
                Check(
                    "GPU",
                    "problem",
                    f"{device} fails a small computation: {probe['gpu_compute_error']}",
                    "Restart the computer; if it persists, update the NVIDIA driver, then "
                    + repair[0].lower()
                    + repair[1:],
                )
            )
        else:
            checks.append(
                Check(
                    "GPU",
                    "ok",
                    f"PyTorch {torch_v} uses {device} (CUDA {probe.get('torch_cuda')}, "
                    f"compute capability {cc[0]}.{cc[1]}).",
                )
            )
    elif build == "default":
        if probe.get("mps_available"):
            checks.append(Check("GPU", "ok", f"PyTorch {torch_v} uses the Apple GPU (Metal)."))
        else:
            checks.append(
                Check(
                    "GPU",
                    "problem",
                    "PyTorch cannot use the Apple GPU (Metal).",
                    "Update macOS to 13 or newer, then " + repair[0].lower() + repair[1:],
                )
            )
    else:
        checks.append(
            Check(
                "GPU",
                "note",
                f"PyTorch {torch_v} runs on the CPU (no usable NVIDIA GPU); "
                "quantizing and chatting work, large models are slow.",
            )
        )

    triton = probe.get("triton")
    if triton == "ok":
        checks.append(Check("Triton", "ok", "The GPU kernel compiler (Triton) works."))
    elif triton == "skipped" or triton is None:
        checks.append(Check("Triton", "skipped", "Triton kernels are not used without an NVIDIA GPU."))
    else:
        err = probe.get("triton_error", "unknown error")
        fix = "Bitsmith falls back to slower PyTorch code until this is fixed. " + repair
        if system == "Windows":
            fix = (
                f"Install the Microsoft Visual C++ Redistributable ({VC_REDIST_URL}) and restart. "
                + (
                    "Your user folder name has non-English letters, which the Triton compiler on Windows may "
                    "not handle: set TRITON_CACHE_DIR to a plain folder such as C:\\TritonCache. "
                    if root is not None and not str(root).isascii()
                    else ""
                )
                + "Then "
                + repair[0].lower()
                + repair[1:]
            )
        checks.append(Check("Triton", "problem", f"A tiny Triton GPU kernel failed: {err}", fix))

    llama = probe.get("llama_cpp")
    if llama == "missing":
        checks.append(
            Check(
                "llama.cpp",
                "skipped",
                "llama.cpp is not installed (installed without it on request): GGUF chat uses the native runtime only.",
            )
        )
    elif probe.get("llama_cpp_error"):
        checks.append(
            Check(
                "llama.cpp",
                "problem",
                f"llama.cpp does not load: {probe['llama_cpp_error']}",
                "Chat with GGUF files through llama.cpp is unavailable until fixed. " + repair,
            )
        )
    else:
        checks.append(Check("llama.cpp", "ok", f"llama.cpp {llama} loads."))
    return checks


def render_checks(checks: Sequence[Check]) -> str:
    """The checks as the lines a user reads."""
    mark = {"ok": "OK     ", "problem": "PROBLEM", "skipped": "SKIPPED", "note": "NOTE   "}
    lines = []
    for c in checks:
        lines.append(f"  {mark.get(c.status, c.status)} {c.name}: {c.message}")
        if c.fix:
            lines.append(f"          What to do: {c.fix}")
    return "\n".join(lines)


TRITON_KERNEL = """
import triton
import triton.language as tl


@triton.jit
def add_one(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=mask) + 1.0, mask=mask)
"""


def run_triton_kernel(torch, device: str) -> None:
    """Compile and run a tiny Triton kernel on `device`; raises when the result is wrong."""
    import importlib.util

    folder = Path(tempfile.mkdtemp(prefix="bitsmith-selftest-"))
    try:
        src = folder / "bitsmith_selftest_kernel.py"
        src.write_text(TRITON_KERNEL, encoding="utf-8")
        spec = importlib.util.spec_from_file_location("bitsmith_selftest_kernel", src)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        x = torch.arange(100, dtype=torch.float32, device=device)
        y = torch.empty_like(x)
        module.add_one[(1,)](x, y, 100, BLOCK=128)
        if not torch.equal(y.cpu(), (x + 1).cpu()):
            raise RuntimeError("the kernel ran but computed wrong numbers")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def probe() -> dict:
    """Run inside the installed environment: the raw facts the self-test judges (never raises)."""
    out: dict = {"python": sys.version.split()[0]}
    try:
        from bitsmith import engine

        out["bitsmith"] = engine.__version__
    except Exception as exc:  # noqa: BLE001 - every failure is a finding
        out["bitsmith_error"] = f"{type(exc).__name__}: {exc}"
    try:
        import torch
    except Exception as exc:  # noqa: BLE001
        out["torch_error"] = f"{type(exc).__name__}: {exc}"
        return out
    out["torch"] = torch.__version__
    out["torch_cuda"] = torch.version.cuda
    try:
        out["cuda_available"] = bool(torch.cuda.is_available())
    except Exception as exc:  # noqa: BLE001
        out["cuda_available"], out["cuda_error"] = False, f"{type(exc).__name__}: {exc}"
    if out["cuda_available"]:
        out["device"] = torch.cuda.get_device_name(0)
        out["capability"] = list(torch.cuda.get_device_capability(0))
        out["arch_list"] = list(torch.cuda.get_arch_list())
        try:
            a = torch.ones(64, 64, device="cuda")
            if float((a @ a).sum()) != 64.0**3:
                raise RuntimeError("wrong result")
        except Exception as exc:  # noqa: BLE001
            out["gpu_compute_error"] = f"{type(exc).__name__}: {exc}"
        try:
            run_triton_kernel(torch, "cuda")
            out["triton"] = "ok"
        except Exception as exc:  # noqa: BLE001
            out["triton"], out["triton_error"] = "error", f"{type(exc).__name__}: {exc}"[:500]
    else:
        out["triton"] = "skipped"
    mps = getattr(torch.backends, "mps", None)
    out["mps_available"] = bool(mps and mps.is_available())
    try:
        import llama_cpp

        out["llama_cpp"] = getattr(llama_cpp, "__version__", "?")
    except ModuleNotFoundError:
        out["llama_cpp"] = "missing"
    except Exception as exc:  # noqa: BLE001
        out["llama_cpp"], out["llama_cpp_error"] = "error", f"{type(exc).__name__}: {exc}"
    return out


def run_selftest(layout: Layout, build: str, deps: Deps) -> tuple[dict, list[Check]]:
    """Run the probe in the installed environment; returns its raw facts and their judgement."""
    rc, out = deps.run([str(layout.env_python), str(Path(__file__).resolve()), "_probe"], 900)
    lines = [line for line in out.strip().splitlines() if line.startswith("{")]
    try:
        facts = json.loads(lines[-1]) if lines else None
    except ValueError:
        facts = None
    if not isinstance(facts, dict):
        return {}, [
            Check(
                "Bitsmith",
                "problem",
                f"The installed environment does not start (exit {rc}): {out.strip()[-300:]}",
                repair_hint(layout.system, layout.root),
            )
        ]
    return facts, interpret_probe(facts, build, layout.system, layout.root)


# ---------------------------------------------------------------------------------------------- install


def _check_root(layout: Layout) -> None:
    try:
        layout.logs.mkdir(parents=True, exist_ok=True)
        probe_file = layout.app / ".write-test"
        probe_file.write_text("ok")
        probe_file.unlink()
    except OSError as exc:
        if getattr(exc, "errno", None) == 28:
            raise InstallError(
                "disk_full",
                f"The disk holding {layout.root} is full.",
                "Free some space, then run the installer again.",
            ) from exc
        raise InstallError(
            "bad_input", f"Cannot write to {layout.root}: {exc}.", "Choose a folder you own, or check its permissions."
        ) from exc


def _env_works(layout: Layout, deps: Deps) -> bool:
    if not layout.env_python.exists():
        return False
    rc, _ = deps.run([str(layout.env_python), "-c", "import torch, bitsmith.engine"], 300)
    return rc == 0


def _remove_env(layout: Layout, deps: Deps, console: Console) -> None:
    """Move the old environment aside and delete it; a file in use means the app is running."""
    if not layout.env.exists():
        return
    aside = layout.app / f"env.old-{int(deps.now())}"
    try:
        os.replace(layout.env, aside)
    except OSError as exc:
        raise InstallError(
            "busy",
            f"The old Bitsmith environment could not be replaced ({exc}).",
            "Close Bitsmith, then run the installer again.",
        ) from exc
    try:
        deps.remove_tree(aside)
    except OSError:
        console.say(f"  (could not delete {aside} yet; it is removed on the next run)")


def _cleanup_old_envs(layout: Layout, deps: Deps) -> None:
    for old in layout.app.glob("env.old-*"):
        try:
            deps.remove_tree(old)
        except OSError:
            pass


def installed_torch_version(layout: Layout, deps: Deps) -> str:
    """The torch version now in the environment (for the constraint and the triton-windows match)."""
    code = "import importlib.metadata as m; print(m.version('torch'))"
    rc, out = deps.run([str(layout.env_python), "-c", code], 120)
    version = out.strip().splitlines()[-1] if rc == 0 and out.strip() else ""
    if not parse_version(version):
        raise InstallError(
            "install_failed", f"PyTorch was not installed correctly: {out.strip()[-300:]}", "Run the installer again."
        )
    return version


def install(
    opts: Options,
    mode: str = "install",
    deps: Deps | None = None,
    console: Console | None = None,
    system: str | None = None,
) -> int:
    """Install, repair or update Bitsmith under opts.root; returns an exit code, leaves a re-runnable state."""
    deps = deps or Deps()
    system = system or platform.system()
    layout = Layout(opts.root, system)
    _check_root(layout)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(deps.now()))
    console = console or Console(layout.logs / f"install-{stamp}.log")
    try:
        return _install(opts, mode, deps, console, layout)
    except (InstallError, OSError) as exc:
        err = exc if isinstance(exc, InstallError) else os_failure(exc, layout, console.log)
        console.say(err.plain())
        write_message(layout, err.plain())
        return EXIT_CPU_OFFER if err.kind in CPU_OFFER_KINDS else EXIT_ERROR
    except KeyboardInterrupt:
        text = (
            "Problem: the install was interrupted.\nWhat to do: run the installer again; it finishes the job "
            "and keeps what was already downloaded."
        )
        console.say(text)
        write_message(layout, text)
        return EXIT_INTERRUPTED


def os_failure(exc: OSError, layout: Layout, log: Path | None) -> InstallError:
    """A file operation of the installer itself failed (disk full, no permission, ...): say so plainly."""
    where = f" The full log is {log}." if log else ""
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return InstallError(
            "disk_full",
            f"The disk holding {layout.root} is full.",
            "Free some space (PyTorch for NVIDIA GPUs needs about 8 GB), then run the installer again; "
            "it continues where it stopped." + where,
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EBUSY):
        return InstallError(
            "busy",
            f"A Bitsmith file could not be written ({exc}).",
            "Close Bitsmith (and any window that uses its files), then run the installer again." + where,
        )
    return InstallError(
        "install_failed",
        f"A file operation failed: {exc}.",
        "Run the installer again (it repairs a half-finished install)." + where,
    )


def _install(opts: Options, mode: str, deps: Deps, console: Console, layout: Layout) -> int:
    state = read_json(layout.state_file)
    marker = read_json(layout.marker)
    new_version = wheel_version(opts.wheel)
    console.say(f"Bitsmith installer: {mode} into {layout.root}")
    hw = deps.detect()
    console.say(f"  Found: {describe_hardware(hw)}")
    choice = choose_torch(hw, opts.build, opts.allow_cpu)
    console.say(f"  Chosen: {choice.label}")
    for note in choice.notes:
        console.say(f"  Note: {note}")

    recreate = mode == "repair"
    if marker is not None:
        console.say(
            f"  The last install stopped before it finished (during: {marker.get('step', '?')}); "
            "setting the environment up again. Finished downloads are reused."
        )
        recreate = True
    if state is not None:
        old = state.get("bitsmith")
        if state.get("format") != STATE_FORMAT:
            console.say("  An install made by an older installer was found; rebuilding its environment.")
            recreate = True
        elif state.get("build") != choice.build:
            console.say(
                f"  Your PyTorch build changes from {state.get('build')} to {choice.build}; rebuilding the environment."
            )
            recreate = True
        if old and new_version and old != new_version:
            console.say(f"  Found Bitsmith {old}; installing {new_version}. Your models and chats are kept.")
    elif layout.env.exists() and marker is None:
        console.say("  Found an environment without an install record; rebuilding it.")
        recreate = True
    if not recreate and not _env_works(layout, deps):
        if layout.env.exists():
            console.say("  The existing environment is damaged; rebuilding it.")
        recreate = True

    # A rebuild downloads PyTorch again; an update may too (a newer torch within the build).
    need = choice.disk_gb if recreate or mode == "update" else 1.0
    free = deps.disk_free(layout.root)
    if free < need * GB:
        raise InstallError(
            "disk_full",
            f"Not enough free disk space at {layout.root}: {free / GB:.1f} GB free, about {need:.0f} GB needed.",
            "Free some space (or empty the recycle bin), then run the installer again.",
        )
    if not opts.offline and not any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY")):
        host = (choice.index_url or "https://pypi.org").split("/")[2]
        if not deps.can_reach(host):
            raise InstallError(
                "network",
                f"No internet connection: the installer downloads PyTorch and its libraries from {host}.",
                "Connect to the internet, then run the installer again.",
            )

    started = deps.now()
    progress = {"mode": mode, "build": choice.build, "started": started, "step": "start"}
    write_json(layout.marker, progress)
    _cleanup_old_envs(layout, deps)
    env = uv_env(layout)
    layout.excludes.write_text("llama-cpp-python\n", encoding="utf-8")
    upgrade = mode == "update"

    def run(step: Step, number: int, total: int) -> None:
        write_json(layout.marker, {**progress, "step": step.key})
        console.say(f"[{number}/{total}] {step.title}...")
        console.write_log("    $ " + " ".join(step.argv))
        rc, out = deps.run_step(step.argv, env, console)
        if rc != 0:
            raise classify_failure(step, out, layout, console.log)

    windows_cuda = layout.system == "Windows" and choice.cuda
    total = 2 + int(recreate) + int(windows_cuda) + 1
    n = 0
    if recreate:
        _remove_env(layout, deps, console)
        n += 1
        run(venv_step(layout, opts), n, total)
    n += 1
    run(torch_step(layout, opts, choice, upgrade), n, total)
    torch_version = installed_torch_version(layout, deps)
    # The exact build (local version included): nothing later may swap it for another index's torch.
    layout.constraints.write_text(f"torch=={torch_version}\n", encoding="utf-8")
    if windows_cuda:
        n += 1
        run(triton_step(layout, opts, torch_version), n, total)
    n += 1
    run(bitsmith_step(layout, opts, choice, upgrade), n, total)

    n += 1
    write_json(layout.marker, {**progress, "step": "selftest"})
    console.say(f"[{n}/{total}] Checking that everything works (first start)...")
    facts, checks = run_selftest(layout, choice.build, deps)
    console.say(render_checks(checks))
    ok = not any(c.status == "problem" for c in checks)
    write_json(
        layout.state_file,
        {
            "format": STATE_FORMAT,
            "bitsmith": facts.get("bitsmith") or new_version,
            "build": choice.build,
            "torch": torch_version,
            "python": opts.python,
            "llama_cpp": not opts.without_llama_cpp,
            "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(deps.now())),
            "seconds": round(deps.now() - started, 1),
            "selftest": {"ok": ok, "checks": [asdict(c) for c in checks]},
            "launch": layout.launch_command(),
        },
    )
    layout.marker.unlink(missing_ok=True)
    summary = (
        (
            "Bitsmith is installed and works."
            if ok
            else "Bitsmith is installed, but the first-start check found problems:"
        )
        + "\n"
        + render_checks(checks)
        + "".join(f"\nNote: {note}" for note in choice.notes)
    )
    console.say("Done. " + ("Everything works." if ok else "Some checks failed; see 'What to do' above."))
    write_message(layout, summary)
    return EXIT_OK if ok else EXIT_SELFTEST


def describe_hardware(hw: Hardware) -> str:
    """One line about the GPU(s) and driver, in plain words."""
    if hw.system == "Darwin":
        return "an Apple-silicon Mac" if hw.apple_silicon else "an Intel Mac"
    if hw.gpus:
        gpus = ", ".join(
            f"{g.name} (compute capability {g.cc[0]}.{g.cc[1]}, {round(g.memory_mb / 1024)} GB)" if g.cc else g.name
            for g in hw.gpus
        )
        return f"{gpus}; NVIDIA driver {hw.driver or 'unknown'}"
    if hw.nvidia_device:
        return "an NVIDIA graphics card without a working driver"
    return "no NVIDIA GPU"


# ---------------------------------------------------------------------------------------------- uninstall


def uninstall(root: Path, keep_data: bool, system: str | None = None, home: Path | None = None) -> list[Path]:
    """Remove the program (app/); with keep_data False also the models, chats and jobs. Returns what was removed."""
    layout = Layout(root, system or platform.system())
    home = (home or Path.home()).resolve()
    resolved = root.resolve()
    # Only a folder named Bitsmith is deleted whole: a custom root (--prefix, BITSMITH_HOME) such as ~/Documents
    # may hold other files, even when an install record shows Bitsmith lived there.
    ours = resolved.name.lower() == APP_NAME.lower()
    if not keep_data and (resolved in (home, Path(resolved.anchor)) or not ours):
        raise InstallError(
            "bad_input",
            f"Refusing to delete {root}: it is not a folder named {APP_NAME}, so it may hold other files.",
            "Nothing was removed. Delete your models and chats there by hand if you want them gone, then run "
            "the uninstaller again without removing data.",
        )
    removed = []
    if layout.app.exists():
        shutil.rmtree(layout.app)
        removed.append(layout.app)
    if not keep_data and root.exists():
        shutil.rmtree(root)
        removed.append(root)
    return removed


# ---------------------------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    """The bootstrap's command line (the platform installers and the Repair shortcut call it)."""
    p = argparse.ArgumentParser(prog="bootstrap.py", description="Install, repair, update or check Bitsmith.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--root", type=Path, default=None, help="Bitsmith's folder (default: the per-user app folder)")

    for name, text in (
        ("install", "install (or finish an interrupted install, or update an older one)"),
        ("repair", "rebuild the environment; models and chats are kept"),
        ("update", "install a newer Bitsmith (and PyTorch) into the environment"),
    ):
        sp = sub.add_parser(name, help=text)
        common(sp)
        sp.add_argument(
            "--wheel",
            type=Path,
            help="the Bitsmith wheel to install (default: a wheels/ folder next "
            "to this script, else the newest release)",
        )
        sp.add_argument("--find-links", type=Path, action="append", default=[], help="a folder of wheels to use")
        sp.add_argument("--offline", action="store_true", help="use only --find-links folders and the uv cache")
        sp.add_argument(
            "--without-llama-cpp",
            action="store_true",
            help="skip llama-cpp-python (for tests/CI; GGUF chat via llama.cpp is then unavailable)",
        )
        sp.add_argument("--python", default=PYTHON_VERSION, help="Python version to fetch, or an interpreter path")
        sp.add_argument("--build", default="auto", help="PyTorch build: auto (default), cpu, cu130, cu128, ...")
        sp.add_argument("--allow-cpu", action="store_true", help="install for the CPU when the GPU cannot be used")
        sp.add_argument("--torch", help="override the torch requirement, e.g. 'torch==2.13.0'")
        sp.add_argument("--uv", default=None, help="the uv executable (default: next to this script, else PATH)")
        sp.add_argument("--pause", action="store_true", help="wait for Enter before closing (console windows)")
        sp.add_argument(
            "--ask", action="store_true", help="when the GPU cannot be used, ask here whether to install for the CPU"
        )
    sp = sub.add_parser("selftest", help="check that the installed Bitsmith can use the GPU")
    common(sp)
    sp = sub.add_parser("detect", help="show the GPU, the driver and the PyTorch build that would be chosen")
    sp.add_argument("--json", action="store_true")
    sp = sub.add_parser("uninstall", help="remove the program; --remove-data also deletes models and chats")
    common(sp)
    sp.add_argument("--remove-data", action="store_true")
    sub.add_parser("_probe")  # internal: run inside the installed environment by the self-test
    return p


def find_uv(explicit: str | None) -> str:
    """uv next to this script (bundled by the installers), else on PATH."""
    if explicit:
        return explicit
    here = Path(__file__).resolve().parent
    for name in ("uv.exe", "uv"):
        if (here / name).is_file():
            return str(here / name)
    return shutil.which("uv") or "uv"


def find_wheel(explicit: Path | None) -> Path | None:
    """The Bitsmith wheel the installer carries (wheels/ next to this script), newest name last."""
    if explicit:
        return explicit.resolve()
    found = sorted((Path(__file__).resolve().parent / "wheels").glob("bitsmith-*.whl"))
    return found[-1] if found else None


CPU_QUESTION = (
    "Install Bitsmith for the CPU instead? It works, but large models are much slower; run the installer again "
    "after fixing the driver to switch to the GPU. [y/N] "
)


def install_asking(
    opts: Options,
    mode: str,
    ask: Callable[[str], str] | None,
    run: Callable[[Options, str], int] = install,
) -> int:
    """Install; when the GPU cannot be used and `ask` is given, offer the CPU build and install it on a yes."""
    code = run(opts, mode)
    if code != EXIT_CPU_OFFER or ask is None:
        return code
    try:
        answer = ask(CPU_QUESTION)
    except (EOFError, KeyboardInterrupt):
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        return code
    return run(replace(opts, allow_cpu=True), mode)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; every failure ends as a plain message and an exit code, never a traceback."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="replace")
        except (AttributeError, ValueError):
            pass
    args = build_parser().parse_args(argv)
    if args.command == "_probe":
        print(json.dumps(probe()))
        return 0
    if args.command == "detect":
        hw = detect_hardware()
        try:
            choice = choose_torch(hw)
            result = {"hardware": asdict(hw), "choice": asdict(choice)}
            text = f"{describe_hardware(hw)}\n-> {choice.label} from {choice.index_url or 'PyPI'}"
        except InstallError as exc:
            result = {"hardware": asdict(hw), "error": {"kind": exc.kind, "message": exc.message, "hint": exc.hint}}
            text = f"{describe_hardware(hw)}\n{exc.plain()}"
        print(json.dumps(result, indent=2) if args.json else text)
        return 0
    root = (args.root or default_root()).expanduser().absolute()
    if args.command == "uninstall":
        try:
            for path in uninstall(root, keep_data=not args.remove_data):
                print(f"Removed {path}")
        except InstallError as exc:
            print(exc.plain())
            return EXIT_ERROR
        if not args.remove_data:
            print(f"Your models and chats are still in {root}.")
        return 0
    if args.command == "selftest":
        layout = Layout(root, platform.system())
        state = read_json(layout.state_file) or {}
        _, checks = run_selftest(layout, state.get("build", "cpu"), Deps())
        print(render_checks(checks))
        return EXIT_SELFTEST if any(c.status == "problem" for c in checks) else EXIT_OK
    opts = Options(
        root=root,
        wheel=find_wheel(args.wheel),
        find_links=tuple(p.resolve() for p in args.find_links),
        offline=args.offline,
        without_llama_cpp=args.without_llama_cpp,
        python=args.python,
        build=args.build,
        allow_cpu=args.allow_cpu,
        torch=args.torch,
        uv=find_uv(args.uv),
    )
    code = install_asking(opts, args.command, input if args.ask else None)
    if args.pause:
        try:
            input("Press Enter to close this window.")
        except EOFError:
            pass
    return code


if __name__ == "__main__":
    raise SystemExit(main())
