"""The first-start self-test: the probe's kernel really runs, and its facts turn into plain words with a fix."""

from __future__ import annotations

from pathlib import Path

import pytest

H100 = {"bitsmith": "0.1.0", "torch": "2.11.0+cu130", "torch_cuda": "13.0", "cuda_available": True,
        "device": "NVIDIA H100 80GB HBM3", "capability": [9, 0],
        "arch_list": ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"], "triton": "ok", "llama_cpp": "0.3.36"}


def by_name(checks):
    return {c.name: c for c in checks}


def test_probe_kernel_runs_in_triton_interpreter(bs) -> None:
    """The self-test's Triton kernel, run on the CPU by Triton's interpreter (conftest sets TRITON_INTERPRET=1)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    bs.run_triton_kernel(torch, "cpu")


def test_probe_in_this_environment(bs) -> None:
    facts = bs.probe()
    assert facts["bitsmith"] and facts["torch"].startswith("2.")
    checks = by_name(bs.interpret_probe(facts, "cpu", "Linux"))
    assert checks["Bitsmith"].status == "ok" and checks["GPU"].status == "note"


def test_all_good_on_an_h100(bs) -> None:
    checks = bs.interpret_probe(H100, "cu130", "Linux")
    assert [c.status for c in checks] == ["ok"] * 4
    assert "NVIDIA H100 80GB HBM3" in by_name(checks)["GPU"].message


def test_blackwell_with_a_build_lacking_sm_120(bs) -> None:
    facts = {**H100, "capability": [12, 0], "device": "NVIDIA GeForce RTX 5090",
             "arch_list": ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]}
    gpu = by_name(bs.interpret_probe(facts, "cu126", "Windows"))["GPU"]
    assert gpu.status == "problem" and "sm_120" in gpu.message and "driver" in gpu.fix


def test_cuda_not_available_asks_for_a_driver_update(bs) -> None:
    facts = {**H100, "cuda_available": False, "cuda_error": "CUDA driver version is insufficient"}
    gpu = by_name(bs.interpret_probe(facts, "cu128", "Windows"))["GPU"]
    assert gpu.status == "problem" and "insufficient" in gpu.message and "nvidia.com" in gpu.fix


def test_windows_dll_error_points_to_the_vc_redist(bs) -> None:
    checks = bs.interpret_probe({"bitsmith": "0.1.0", "torch_error": "OSError: [WinError 126] ... c10.dll"},
                                "cu128", "Windows")
    torch = by_name(checks)["PyTorch"]
    assert torch.status == "problem" and "vc_redist" in torch.fix


def test_triton_failure_on_windows_with_a_non_ascii_user(bs) -> None:
    facts = {**H100, "triton": "error", "triton_error": "CalledProcessError: tcc failed"}
    root = Path("C:/Users/Jürgen/AppData/Local/Bitsmith")
    triton = by_name(bs.interpret_probe(facts, "cu128", "Windows", root))["Triton"]
    assert triton.status == "problem" and "TRITON_CACHE_DIR" in triton.fix and "Redistributable" in triton.fix
    plain = by_name(bs.interpret_probe(facts, "cu128", "Windows", Path("C:/Users/Joe")))["Triton"]
    assert "TRITON_CACHE_DIR" not in plain.fix


def test_mac_and_broken_llama(bs) -> None:
    facts = {"bitsmith": "0.1.0", "torch": "2.9.1", "torch_cuda": None, "cuda_available": False,
             "mps_available": True, "triton": "skipped", "llama_cpp": "error", "llama_cpp_error": "OSError: dylib"}
    checks = by_name(bs.interpret_probe(facts, "default", "Darwin"))
    assert checks["GPU"].status == "ok" and "Metal" in checks["GPU"].message
    assert checks["llama.cpp"].status == "problem" and "open Bitsmith again" in checks["llama.cpp"].fix


def test_repair_hint_names_the_way_each_platform_repairs(bs) -> None:
    root = Path("/home/zoë/.local/share/Bitsmith")
    facts = {**H100, "triton": "error", "triton_error": "boom"}
    linux = by_name(bs.interpret_probe(facts, "cu130", "Linux", root))["Triton"]
    assert f"Run {root}/app/install.sh --repair" in linux.fix  # install.sh keeps a copy of itself there
    windows = by_name(bs.interpret_probe(facts, "cu130", "Windows", root))["Triton"]
    assert "Repair Bitsmith" in windows.fix
    mac = bs.repair_hint("Darwin", Path("/Users/z/Library/Application Support/Bitsmith"))
    assert "delete the folder /Users/z/Library/Application Support/Bitsmith/app" in mac and "models" in mac


def test_render_reads_plainly(bs) -> None:
    text = bs.render_checks(bs.interpret_probe({**H100, "torch_cuda": None}, "cu128", "Windows"))
    assert "PROBLEM GPU: A CPU-only PyTorch" in text and "What to do: Run Repair" in text


def test_unstartable_env(bs, tmp_path) -> None:
    deps = bs.Deps(run=lambda argv, timeout: (127, "No such file"))
    facts, checks = bs.run_selftest(bs.Layout(tmp_path, "Linux"), "cpu", deps)
    assert facts == {} and checks[0].status == "problem" and "does not start" in checks[0].message
