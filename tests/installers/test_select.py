"""The PyTorch choice: many GPU/driver/OS combinations, the error paths, and the facts it is built from."""

from __future__ import annotations

import pytest

# Real output of `nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader,nounits`
# and of torch.cuda.get_arch_list() for torch 2.11.0+cu130, both taken on an H100 machine.
H100_SMI = "NVIDIA H100 80GB HBM3, 580.159.04, 9.0, 81559\n"
CU130_ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]

RTX5090 = ("NVIDIA GeForce RTX 5090", (12, 0), 32607)
RTX5070 = ("NVIDIA GeForce RTX 5070", (12, 0), 12227)
RTX4090 = ("NVIDIA GeForce RTX 4090", (8, 9), 24564)
RTX3090 = ("NVIDIA GeForce RTX 3090", (8, 6), 24576)
RTX3060 = ("NVIDIA GeForce RTX 3060", (8, 6), 12288)
RTX2060 = ("NVIDIA GeForce RTX 2060", (7, 5), 6144)
TITANV = ("NVIDIA TITAN V", (7, 0), 12288)
GTX1080TI = ("NVIDIA GeForce GTX 1080 Ti", (6, 1), 11264)
GTX980 = ("NVIDIA GeForce GTX 980", (5, 2), 4096)
GTX780 = ("NVIDIA GeForce GTX 780", (3, 5), 3072)
H100 = ("NVIDIA H100 80GB HBM3", (9, 0), 81559)
A100 = ("NVIDIA A100-SXM4-40GB", (8, 0), 40960)
GH200 = ("NVIDIA GH200 480GB", (9, 0), 97871)
H200 = ("NVIDIA H200", (9, 0), 143771)
B200 = ("NVIDIA B200", (10, 0), 183359)
RTXPRO6000 = ("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", (12, 0), 97887)
GB10 = ("NVIDIA GB10", (12, 1), 124610)  # DGX Spark: arm64, sm_121 runs sm_120 code
RTX2080TI = ("NVIDIA GeForce RTX 2080 Ti", (7, 5), 11264)
GTX1660 = ("NVIDIA GeForce GTX 1660 SUPER", (7, 5), 6144)
RTX4060LAPTOP = ("NVIDIA GeForce RTX 4060 Laptop GPU", (8, 9), 8188)
M4000 = ("Quadro M4000", (5, 2), 8192)
FUTURE = ("NVIDIA GeForce RTX 7090", (13, 0), 49152)

# (case, os, machine, gpus, driver, expected build)
CHOICES = [
    ("5090, Windows, first Blackwell driver", "Windows", "x86_64", [RTX5090], "572.16", "cu128"),
    ("5090, Windows, CUDA 13 driver", "Windows", "x86_64", [RTX5090], "581.57", "cu130"),
    ("5080, Linux, 570 driver", "Linux", "x86_64", [RTX5090], "570.86.16", "cu128"),
    ("5070, Linux, exactly the cu128 minimum", "Linux", "x86_64", [RTX5070], "570.26", "cu128"),
    ("4090, Windows, 560 driver", "Windows", "x86_64", [RTX4090], "560.94", "cu126"),
    ("4090, Windows, 552 driver", "Windows", "x86_64", [RTX4090], "552.22", "cu124"),
    ("4090, Windows, current driver", "Windows", "x86_64", [RTX4090], "591.44", "cu130"),
    ("3060, Windows, 531 driver", "Windows", "x86_64", [RTX3060], "531.79", "cu118"),
    ("3060, Linux, 535 LTS driver", "Linux", "x86_64", [RTX3060], "535.247.01", "cu118"),
    ("3060, Linux, 550 driver", "Linux", "x86_64", [RTX3060], "550.144.03", "cu124"),
    ("2060, Windows, 576 driver", "Windows", "x86_64", [RTX2060], "576.02", "cu128"),
    ("Titan V: sm_70 is not in the cu128/cu130 wheels", "Windows", "x86_64", [TITANV], "580.88", "cu126"),
    ("1080 Ti on a new driver still gets cu126", "Linux", "x86_64", [GTX1080TI], "580.95.05", "cu126"),
    ("980 on a 535 driver", "Linux", "x86_64", [GTX980], "535.183.01", "cu118"),
    ("H100 (real nvidia-smi facts)", "Linux", "x86_64", [H100], "580.159.04", "cu130"),
    ("A100 on a 550 driver", "Linux", "x86_64", [A100], "550.54.15", "cu124"),
    ("GH200 (arm64) on 570", "Linux", "arm64", [GH200], "570.124.06", "cu128"),
    ("4090 + 3090 share cu126", "Windows", "x86_64", [RTX4090, RTX3090], "561.09", "cu126"),
    ("5090 + 3090: cu128 covers both", "Linux", "x86_64", [RTX5090, RTX3090], "575.64.03", "cu128"),
    ("capability unknown (old nvidia-smi, no NVML)", "Linux", "x86_64", [("NVIDIA GeForce RTX 3080", None, 10240)],
     "575.64", "cu128"),
    # Late-2026 drivers: the 595 branch (CUDA 13.2) and newer get cu132, which PyTorch 2.12+ publishes.
    ("5090, Windows, 595 driver", "Windows", "x86_64", [RTX5090], "595.97", "cu132"),
    ("5090, Linux, exactly the cu132 minimum", "Linux", "x86_64", [RTX5090], "595.45.04", "cu132"),
    ("5090, Linux, 590 driver: below cu132", "Linux", "x86_64", [RTX5090], "590.48.01", "cu130"),
    ("5070, Windows, 591 driver", "Windows", "x86_64", [RTX5070], "591.86", "cu130"),
    ("4090, Linux, 610 driver", "Linux", "x86_64", [RTX4090], "610.43.02", "cu132"),
    ("H200, Linux, 595.58", "Linux", "x86_64", [H200], "595.58.03", "cu132"),
    ("B200 (sm_100), Linux, 575 driver", "Linux", "x86_64", [B200], "575.57.08", "cu128"),
    ("RTX PRO 6000 Blackwell, Linux, 580 LTS", "Linux", "x86_64", [RTXPRO6000], "580.95.05", "cu130"),
    ("DGX Spark GB10 (arm64, sm_121)", "Linux", "arm64", [GB10], "580.95.05", "cu130"),
    ("2080 Ti, Windows, 566 driver", "Windows", "x86_64", [RTX2080TI], "566.36", "cu126"),
    ("1660 SUPER, Windows, 537 driver", "Windows", "x86_64", [GTX1660], "537.58", "cu118"),
    ("4060 Laptop, Windows, 546 OEM driver", "Windows", "x86_64", [RTX4060LAPTOP], "546.33", "cu118"),
    ("Quadro M4000 (Maxwell), Windows, 552 driver", "Windows", "x86_64", [M4000], "552.44", "cu124"),
    ("1080 Ti on a 600 driver: only cu126 has Pascal", "Windows", "x86_64", [GTX1080TI], "600.10", "cu126"),
    ("Titan V on a 610 driver", "Linux", "x86_64", [TITANV], "610.43.02", "cu126"),
    ("3090 + 1080 Ti on 610 share cu126", "Linux", "x86_64", [RTX3090, GTX1080TI], "610.43.02", "cu126"),
    ("a GPU newer than the table", "Linux", "x86_64", [FUTURE], "610.10", "cu132"),
]


def hw_of(bs, system, machine, gpus, driver, **kw):
    return bs.Hardware(system, machine, tuple(bs.Gpu(*g) for g in gpus), driver, bool(gpus), **kw)


@pytest.mark.parametrize("case,system,machine,gpus,driver,expected", CHOICES, ids=[c[0] for c in CHOICES])
def test_choice_table(bs, case, system, machine, gpus, driver, expected) -> None:
    choice = bs.choose_torch(hw_of(bs, system, machine, gpus, driver))
    assert choice.build == expected
    assert choice.index_url == f"https://download.pytorch.org/whl/{expected}"
    assert choice.torch_spec.startswith("torch>=")
    assert choice.gpu is not None and choice.gpu.name in choice.label
    # The chosen build really carries code for every GPU it claims, under this OS's driver minimum.
    build = next(b for b in bs.CUDA_BUILDS if b.tag == expected)
    assert build.driver_ok(system, bs.parse_version(driver))
    for g in gpus:
        if g[1] is not None and g[1] <= (12, 0):
            assert build.supports(g[1])


def test_choice_prefers_the_newest_fitting_build(bs) -> None:
    """Every build newer than the choice is ruled out by the driver or the architecture."""
    for case, system, machine, gpus, driver, expected in CHOICES:
        hw = hw_of(bs, system, machine, gpus, driver)
        tags = [b.tag for b in bs.CUDA_BUILDS]
        for newer in bs.CUDA_BUILDS[: tags.index(expected)]:
            ruled_out = (
                not newer.driver_ok(system, bs.parse_version(driver))
                or machine not in newer.machines
                or any(g[1] is not None and g[1] <= (12, 0) and not newer.supports(g[1]) for g in gpus)
            )
            assert ruled_out, (case, newer.tag, hw)


def test_blackwell_never_gets_a_build_without_sm_120(bs) -> None:
    for build in bs.CUDA_BUILDS:
        assert build.supports((12, 0)) == (build.tag in ("cu128", "cu130", "cu132"))
    # Whatever the driver: cu126 wheels have no sm_120 code, so they are never chosen for an RTX 50.
    for driver in ("570.65", "576.88", "581.57", "591.86", "595.97", "600.10"):
        choice = bs.choose_torch(hw_of(bs, "Windows", "x86_64", [RTX5070], driver))
        assert choice.build in ("cu128", "cu130", "cu132"), driver


def test_blackwell_on_an_old_driver_asks_for_570(bs) -> None:
    with pytest.raises(bs.InstallError) as err:
        bs.choose_torch(hw_of(bs, "Windows", "x86_64", [RTX5090], "566.36"))
    assert err.value.kind == "driver_too_old"
    assert "566.36" in err.value.message and "570.65" in err.value.message
    assert "run the installer again" in err.value.hint and "Setup with /ALLOWCPU" in err.value.hint
    assert "595.xx or newer for CUDA 13.2" in err.value.hint  # the best build, as a Windows driver branch


def test_linux_boundary_just_below_the_minimum(bs) -> None:
    with pytest.raises(bs.InstallError) as err:
        bs.choose_torch(hw_of(bs, "Linux", "x86_64", [RTX5070], "570.25"))
    assert err.value.kind == "driver_too_old" and "570.26" in err.value.message


def test_driver_too_old_for_any_cuda_build(bs) -> None:
    hw = hw_of(bs, "Windows", "x86_64", [RTX3060], "516.94")
    with pytest.raises(bs.InstallError) as err:
        bs.choose_torch(hw)
    assert err.value.kind == "driver_too_old"
    assert "520.06" in err.value.message  # the oldest build that still supports an RTX 3060
    assert "nvidia.com" in err.value.hint
    cpu = bs.choose_torch(hw, allow_cpu=True)
    assert cpu.build == "cpu" and cpu.index_url.endswith("/cpu")
    assert "NOT used" in cpu.notes[0] and "run the installer again" in cpu.notes[0]  # a clear warning


def test_arm64_linux_has_only_the_modern_builds(bs) -> None:
    with pytest.raises(bs.InstallError) as err:
        bs.choose_torch(hw_of(bs, "Linux", "arm64", [GH200], "560.35.03"))
    assert err.value.kind == "driver_too_old" and "570.26" in err.value.message


def test_kepler_is_too_old(bs) -> None:
    hw = hw_of(bs, "Linux", "x86_64", [GTX780], "470.256.02")
    with pytest.raises(bs.InstallError) as err:
        bs.choose_torch(hw)
    assert err.value.kind == "gpu_too_old" and "3.5" in err.value.message
    assert "--allow-cpu" in err.value.hint
    assert bs.choose_torch(hw, allow_cpu=True).build == "cpu"


def test_mixed_generations_use_the_biggest_gpu(bs) -> None:
    choice = bs.choose_torch(hw_of(bs, "Linux", "x86_64", [RTX5090, GTX1080TI], "575.64.03"))
    assert choice.build == "cu128" and choice.gpu.name == RTX5090[0]
    assert any("GTX 1080 Ti" in n for n in choice.notes)


def test_pre_turing_gpu_gets_a_triton_note(bs) -> None:
    choice = bs.choose_torch(hw_of(bs, "Linux", "x86_64", [GTX1080TI], "580.95.05"))
    assert any("Triton" in n for n in choice.notes)
    assert not bs.choose_torch(hw_of(bs, "Linux", "x86_64", [RTX2060], "580.95.05")).notes


def test_future_gpu_gets_the_newest_build_with_a_note(bs) -> None:
    choice = bs.choose_torch(hw_of(bs, "Linux", "x86_64", [FUTURE], "610.10"))
    assert choice.build == "cu132" and any("newer than" in n for n in choice.notes)


def test_table_matches_pytorch_late_2026_builds(bs) -> None:
    """The facts the table encodes, per PyTorch's RELEASE.md matrix and NVIDIA's toolkit release notes."""
    builds = {b.tag: b for b in bs.CUDA_BUILDS}
    assert list(builds) == ["cu132", "cu130", "cu128", "cu126", "cu124", "cu118"]  # newest first
    assert builds["cu132"].min_driver["Linux"] == (595, 45, 4) and builds["cu132"].torch == ">=2.12"
    assert builds["cu130"].min_driver["Linux"] == (580, 65, 6) and builds["cu130"].torch == ">=2.9"
    assert builds["cu128"].min_driver["Linux"] == (570, 26) and builds["cu128"].torch == ">=2.7"
    # CUDA 13 wheels dropped Maxwell, Pascal and Volta; cu128 dropped Volta in 2.11. Only cu126 keeps them.
    for old in ((5, 0), (6, 1), (7, 0)):
        assert [t for t, b in builds.items() if b.supports(old)] == ["cu126", "cu124", "cu118"]
    for tag in ("cu132", "cu130", "cu128"):
        assert builds[tag].supports((12, 0)) and builds[tag].supports((10, 0)) and "arm64" in builds[tag].machines


def test_no_nvidia_gpu_installs_for_the_cpu(bs) -> None:
    choice = bs.choose_torch(bs.Hardware("Linux", "x86_64"))
    assert choice.build == "cpu" and choice.index_url == "https://download.pytorch.org/whl/cpu"
    assert "CPU" in choice.notes[0]


def test_nvidia_card_without_driver_is_an_error_not_a_silent_cpu_install(bs) -> None:
    hw = bs.Hardware("Windows", "x86_64", nvidia_device=True, detail="nvidia-smi not found")
    with pytest.raises(bs.InstallError) as err:
        bs.choose_torch(hw)
    assert err.value.kind == "no_driver"
    assert "driver" in err.value.message and "nvidia.com" in err.value.hint and "restart" in err.value.hint
    assert bs.choose_torch(hw, allow_cpu=True).build == "cpu"


def test_macs(bs) -> None:
    choice = bs.choose_torch(bs.Hardware("Darwin", "arm64", apple_silicon=True))
    assert choice.build == "default" and choice.index_url is None and "Apple" in choice.label
    with pytest.raises(bs.InstallError) as err:
        bs.choose_torch(bs.Hardware("Darwin", "x86_64"))
    assert err.value.kind == "unsupported_platform" and "Intel" in err.value.message
    with pytest.raises(bs.InstallError) as err:
        bs.choose_torch(bs.Hardware("Darwin", "x86_64", apple_silicon=True))
    assert "Rosetta" in err.value.message


def test_requested_builds(bs) -> None:
    hw = hw_of(bs, "Linux", "x86_64", [RTX4090], "591.44")
    assert bs.choose_torch(hw, "cpu").build == "cpu"
    assert bs.choose_torch(hw, "cu126").index_url.endswith("/cu126")
    with pytest.raises(bs.InstallError) as err:
        bs.choose_torch(hw, "cu999")
    assert err.value.kind == "bad_input" and "cu128" in err.value.hint


@pytest.mark.parametrize(
    "torch_version,spec",
    [("2.9.1+cu128", "triton-windows>=3.5,<3.6"), ("2.7.0", "triton-windows>=3.3,<3.4"),
     ("2.6.0+cu126", "triton-windows>=3.2,<3.3"), ("2.10.0+cu130", "triton-windows>=3.6,<3.7"),
     # From 2.11 the pairing is no longer torch 2.N <-> Triton 3.(N-4):
     ("2.11.0+cu130", "triton-windows>=3.6,<3.7"), ("2.12.1+cu132", "triton-windows>=3.7,<3.8"),
     ("2.13.0+cu130", "triton-windows>=3.7,<3.8"), ("2.14.1+cu130", "triton-windows>=3.8,<3.9"),
     ("2.5.1+cu124", "triton-windows<3.2")],
)
def test_triton_windows_matches_torch(bs, torch_version, spec) -> None:
    assert bs.triton_windows_spec(torch_version) == spec


def test_a_torch_newer_than_the_triton_table_is_never_installed_on_windows(bs) -> None:
    """torch 2.15 came out before a triton-windows for it: the torch step stays below it, the triton step refuses."""
    assert bs.WINDOWS_TORCH_BELOW == "2.15"
    with pytest.raises(bs.InstallError) as err:
        bs.triton_windows_spec("2.15.0+cu132")
    assert "2.15.0" in err.value.message and "below 2.15" in err.value.hint


@pytest.mark.parametrize(
    "cc,archs,ok",
    [((9, 0), CU130_ARCHS, True), ((12, 0), CU130_ARCHS, True), ((8, 9), CU130_ARCHS, True),
     ((12, 1), CU130_ARCHS, True), ((6, 1), CU130_ARCHS, False), ((7, 0), CU130_ARCHS, False),
     ((12, 0), ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"], False),
     ((9, 0), ["sm_80", "sm_90a"], True), ((9, 1), ["sm_80", "sm_90a"], False),
     ((12, 1), ["sm_90", "compute_120"], True), ((10, 3), ["sm_100"], True), ((10, 0), ["sm_103"], False)],
)
def test_arch_supported(bs, cc, archs, ok) -> None:
    assert bs.arch_supported(cc, archs) is ok


def test_table_agrees_with_a_real_wheel(bs) -> None:
    """cu130's architectures are exactly those torch 2.11.0+cu130 reports (H100 machine)."""
    cu130 = next(b for b in bs.CUDA_BUILDS if b.tag == "cu130")
    assert [f"sm_{a}{b}" for a, b in cu130.archs] == CU130_ARCHS


def test_versions(bs) -> None:
    assert bs.parse_version("570.86.16") == (570, 86, 16)
    assert bs.parse_version("2.9.1+cu128") == (2, 9, 1)
    assert bs.parse_version("") == ()
    assert bs.parse_cc(" 12.0") == (12, 0) and bs.parse_cc("[N/A]") is None
    assert bs.normalize_machine("AMD64") == "x86_64" and bs.normalize_machine("aarch64") == "arm64"
