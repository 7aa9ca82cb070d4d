"""GPU and driver detection: nvidia-smi output, NVML through ctypes, PCI devices without a driver, folders."""

from __future__ import annotations

from pathlib import Path

import pytest

H100_SMI = "NVIDIA H100 80GB HBM3, 580.159.04, 9.0, 81559\n"  # real output (H100 machine)


class FakeRun:
    """Answers commands from a table of (argv prefix -> (rc, output)); records what was asked."""

    def __init__(self, answers: dict[str, tuple[int, str]]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, argv, timeout):
        self.calls.append(list(argv))
        line = " ".join(argv)
        for key, answer in self.answers.items():
            if line.startswith(key) or key in line:
                return answer
        return 127, f"{argv[0]}: not found"


def no_nvml():
    raise ImportError("unused")


def failing_nvml(bs):
    def nvml():
        raise bs.NvmlUnavailable("no driver")

    return nvml


def test_parse_real_h100_line(bs) -> None:
    driver, gpus = bs.parse_nvidia_smi(H100_SMI)
    assert driver == "580.159.04"
    assert gpus == (bs.Gpu("NVIDIA H100 80GB HBM3", (9, 0), 81559),)


def test_parse_two_gpus_and_noise(bs) -> None:
    text = "NVIDIA GeForce RTX 4090, 572.16, 8.9, 24564\nNVIDIA GeForce RTX 3090, 572.16, 8.6, 24576\n\nWARNING: x\n"
    driver, gpus = bs.parse_nvidia_smi(text)
    assert driver == "572.16" and [g.cc for g in gpus] == [(8, 9), (8, 6)]


def test_detect_with_nvidia_smi(bs) -> None:
    run = FakeRun({"nvidia-smi --query-gpu": (0, H100_SMI)})
    hw = bs.detect_hardware(run=run, nvml=no_nvml, system="Linux", machine="x86_64", env={})
    assert hw.driver == "580.159.04" and hw.gpus[0].cc == (9, 0) and hw.nvidia_device
    assert bs.choose_torch(hw).build == "cu130"


def test_old_nvidia_smi_without_compute_cap_falls_back_to_nvml_for_it(bs) -> None:
    run = FakeRun({
        "compute_cap": (6, 'Field "compute_cap" is not a valid field to query.\n'),
        "--query-gpu=name,driver_version,memory.total": (0, "NVIDIA GeForce GTX 1080 Ti, 470.82.01, 11264\n"),
    })
    hw_smi_only = bs.detect_hardware(run=run, nvml=failing_nvml(bs), system="Linux", machine="x86_64", env={})
    assert hw_smi_only.gpus[0].cc is None and hw_smi_only.driver == "470.82.01"
    nvml = lambda: ("470.82.01", (bs.Gpu("NVIDIA GeForce GTX 1080 Ti", (6, 1), 11264),))  # noqa: E731
    hw = bs.detect_hardware(run=run, nvml=nvml, system="Linux", machine="x86_64", env={})
    assert hw.gpus[0].cc == (6, 1)


def test_windows_looks_for_nvidia_smi_in_system32(bs) -> None:
    run = FakeRun({r"C:\Windows\System32\nvidia-smi.exe": (0, "NVIDIA GeForce RTX 5090, 576.88, 12.0, 32607\n")})
    hw = bs.detect_hardware(run=run, nvml=failing_nvml(bs), system="Windows", machine="AMD64",
                            env={"SystemRoot": r"C:\Windows"})
    assert hw.machine == "x86_64" and hw.gpus[0].cc == (12, 0)
    assert run.calls[0][0] == "nvidia-smi"  # PATH first


def test_no_driver_but_card_on_linux_pci(bs, tmp_path: Path) -> None:
    dev = tmp_path / "sys" / "bus" / "pci" / "devices" / "0000:01:00.0"
    dev.mkdir(parents=True)
    (dev / "vendor").write_text("0x10de\n")
    (dev / "class").write_text("0x030000\n")
    hw = bs.detect_hardware(run=FakeRun({}), nvml=failing_nvml(bs), system="Linux", machine="x86_64", env={},
                            sys_root=tmp_path)
    assert not hw.gpus and hw.nvidia_device and "nvidia-smi not found" in hw.detail
    with pytest.raises(bs.InstallError) as err:
        bs.choose_torch(hw)
    assert err.value.kind == "no_driver"


def test_intel_gpu_only_on_linux_is_a_cpu_install(bs, tmp_path: Path) -> None:
    dev = tmp_path / "sys" / "bus" / "pci" / "devices" / "0000:00:02.0"
    dev.mkdir(parents=True)
    (dev / "vendor").write_text("0x8086\n")
    (dev / "class").write_text("0x030000\n")
    hw = bs.detect_hardware(run=FakeRun({}), nvml=failing_nvml(bs), system="Linux", machine="x86_64", env={},
                            sys_root=tmp_path)
    assert not hw.nvidia_device and bs.choose_torch(hw).build == "cpu"


def test_no_driver_but_card_on_windows(bs) -> None:
    run = FakeRun({"powershell": (0, "PCI\\VEN_10DE&DEV_2684&SUBSYS_16F310DE\r\nPCI\\VEN_8086&DEV_A780\r\n")})
    hw = bs.detect_hardware(run=run, nvml=failing_nvml(bs), system="Windows", machine="AMD64", env={})
    assert hw.nvidia_device and not hw.gpus


def test_macs_are_detected_without_nvidia(bs) -> None:
    hw = bs.detect_hardware(run=FakeRun({}), system="Darwin", machine="arm64", env={})
    assert hw.apple_silicon
    rosetta = bs.detect_hardware(run=FakeRun({"sysctl": (0, "1\n")}), system="Darwin", machine="x86_64", env={})
    assert rosetta.apple_silicon and rosetta.machine == "x86_64"


class FakeNvmlLib:
    """Mimics libnvidia-ml's C functions closely enough for nvml_query (ctypes buffers and byref)."""

    def __init__(self, init_rc: int = 0) -> None:
        self.init_rc = init_rc
        self.shut = False

    def nvmlInit_v2(self):
        return self.init_rc

    def nvmlShutdown(self):
        self.shut = True
        return 0

    def nvmlSystemGetDriverVersion(self, buf, n):
        buf.value = b"572.16"
        return 0

    def nvmlDeviceGetCount_v2(self, ref):
        ref._obj.value = 1
        return 0

    def nvmlDeviceGetHandleByIndex_v2(self, i, ref):
        ref._obj.value = 1234
        return 0

    def nvmlDeviceGetName(self, handle, buf, n):
        buf.value = b"NVIDIA GeForce RTX 5090"
        return 0

    def nvmlDeviceGetCudaComputeCapability(self, handle, major, minor):
        major._obj.value, minor._obj.value = 12, 0
        return 0

    def nvmlDeviceGetMemoryInfo(self, handle, ref):
        ref._obj[0] = 32607 * 2**20
        return 0


def test_nvml_query_through_ctypes(bs) -> None:
    lib = FakeNvmlLib()
    assert bs.nvml_query(lib) == ("572.16", (bs.Gpu("NVIDIA GeForce RTX 5090", (12, 0), 32607),))
    assert lib.shut
    with pytest.raises(bs.NvmlUnavailable):
        bs.nvml_query(FakeNvmlLib(init_rc=9))


@pytest.mark.parametrize(
    "system,env,expected",
    [
        ("Windows", {"LOCALAPPDATA": r"C:\Users\Jürgen Groß\AppData\Local"}, r"C:\Users\Jürgen Groß\AppData\Local"),
        ("Linux", {}, "/home/u/.local/share"),
        ("Linux", {"XDG_DATA_HOME": "/data/x"}, "/data/x"),
        ("Darwin", {}, "/home/u/Library/Application Support"),
    ],
)
def test_default_root(bs, system, env, expected) -> None:
    root = bs.default_root(system, env, Path("/home/u"))
    assert str(root).replace("\\", "/") == (expected + "/Bitsmith").replace("\\", "/")


def test_bitsmith_home_wins_and_matches_the_engine(bs, tmp_path: Path) -> None:
    from bitsmith.engine import paths

    env = {"BITSMITH_HOME": str(tmp_path / "here")}
    assert bs.default_root("Linux", env) == paths.data_dir(env)
    assert bs.Layout(paths.data_dir(env), "Linux").app.parent == paths.models_dir(env).parent


def test_layout_on_windows_launches_without_console(bs) -> None:
    layout = bs.Layout(Path("C:/Users/Zoë/AppData/Local/Bitsmith"), "Windows")
    cmd = layout.launch_command()
    assert cmd[0].endswith("pythonw.exe") and "Scripts" in cmd[0] and cmd[1:] == ["-m", "bitsmith.app"]
    assert bs.Layout(Path("/x"), "Linux").env_python == Path("/x/app/env/bin/python")
