"""Install, repair and update with fake commands at the boundary: the plan, the faults, re-running after them."""

from __future__ import annotations

import errno
import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest

H100_PROBE = {  # real probe facts from an H100 machine (torch 2.11.0+cu130), plus a Bitsmith version
    "python": "3.12.3", "bitsmith": "0.1.0", "torch": "2.11.0+cu130", "torch_cuda": "13.0", "cuda_available": True,
    "device": "NVIDIA H100 80GB HBM3", "capability": [9, 0],
    "arch_list": ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"], "triton": "ok", "mps_available": False,
    "llama_cpp": "0.3.36",
}
RTX5090_PROBE = {**H100_PROBE, "torch": "2.9.1+cu128", "torch_cuda": "12.8", "device": "NVIDIA GeForce RTX 5090",
                 "capability": [12, 0]}
DNS_FAILURE = """error: Failed to fetch: `https://download.pytorch.org/whl/cu128/torch/`
  Caused by: Request failed after 3 retries
  Caused by: error sending request for url (https://download.pytorch.org/whl/cu128/torch/)
  Caused by: client error (Connect)
  Caused by: dns error: failed to lookup address information: Temporary failure in name resolution"""
DISK_FULL = "error: Failed to install: torch-2.9.1+cu128-cp312-cp312-win_amd64.whl\n  Caused by: " \
            "There is not enough space on the disk. (os error 112)"


class World:
    """A fake machine: hardware, network, disk, and uv/python commands that succeed unless told to fail."""

    def __init__(self, bs, tmp_path: Path, system: str = "Windows", hw=None, probe=None,
                 torch_version: str = "2.9.1+cu128") -> None:
        self.bs = bs
        self.layout = bs.Layout(tmp_path / "Jürgen Groß" / "Bitsmith", system)
        self.hw = hw or bs.Hardware(system, "x86_64", (bs.Gpu("NVIDIA GeForce RTX 5090", (12, 0), 32607),),
                                    "576.88", True)
        self.probe = dict(probe or RTX5090_PROBE)
        self.torch_version = torch_version
        self.fail: dict[str, object] = {}
        self.steps: list[tuple[str, list[str]]] = []
        self.online = True
        self.free = 100 * 10**9
        self.out = io.StringIO()

    @staticmethod
    def key(argv) -> str:
        if argv[1] == "venv":
            return "venv"
        if any("triton-windows" in a for a in argv):
            return "triton"
        return "torch" if argv[-1].startswith("torch") else "bitsmith"

    def run_step(self, argv, env, console):
        key = self.key(argv)
        self.steps.append((key, list(argv)))
        assert env["UV_CACHE_DIR"] == str(self.layout.uv_cache)
        if key in self.fail:
            failure = self.fail.pop(key)
            if isinstance(failure, BaseException):
                raise failure
            return failure
        if key == "venv":
            self.layout.env_python.parent.mkdir(parents=True, exist_ok=True)
            self.layout.env_python.write_text("python")
        return 0, "Installed 1 package"

    def run(self, argv, timeout):
        if argv[-1] == "_probe":
            return 0, "some warning\n" + json.dumps(self.probe)
        if "import torch, bitsmith.engine" in argv[-1]:
            return (0, "") if Path(argv[0]).exists() else (127, "not found")
        if "importlib.metadata" in argv[-1]:
            return 0, self.torch_version + "\n"
        raise AssertionError(f"unexpected command {argv}")

    def deps(self):
        return self.bs.Deps(run_step=self.run_step, run=self.run, detect=lambda: self.hw,
                            can_reach=lambda host: self.online, disk_free=lambda path: self.free,
                            now=lambda: 1_700_000_000.0, remove_tree=shutil.rmtree)

    def options(self, **opts):
        opts.setdefault("wheel", Path("/dl/bitsmith-0.2.0-py3-none-any.whl"))
        return self.bs.Options(root=self.layout.root, uv="uv.exe", **opts)

    def install(self, mode: str = "install", **opts) -> int:
        options = self.options(**opts)
        console = self.bs.Console(None, self.out)
        return self.bs.install(options, mode, self.deps(), console, system=self.layout.system)

    @property
    def text(self) -> str:
        return self.out.getvalue()

    def message(self) -> str:
        return self.layout.message_file.read_text(encoding="utf-16")

    def state(self) -> dict:
        return json.loads(self.layout.state_file.read_text(encoding="utf-8"))


def test_fresh_windows_install_with_a_blackwell_gpu(bs, tmp_path) -> None:
    w = World(bs, tmp_path)
    assert w.install() == bs.EXIT_OK
    assert [k for k, _ in w.steps] == ["venv", "torch", "triton", "bitsmith"]
    venv, torch, triton, bitsmith = (argv for _, argv in w.steps)
    assert venv[:5] == ["uv.exe", "venv", "--python", "3.12", "--managed-python"] and venv[-1] == str(w.layout.env)
    assert "--index-url" in torch and torch[torch.index("--index-url") + 1].endswith("/whl/cu128")
    assert torch[-1] == "torch>=2.7,<2.15" and str(w.layout.env_bin("python")) in torch  # below triton-windows' table
    assert triton[-1] == "triton-windows>=3.5,<3.6"
    assert bitsmith[-1].endswith("bitsmith-0.2.0-py3-none-any.whl")
    assert bitsmith[bitsmith.index("--extra-index-url") + 1].endswith("llama-cpp-python/whl/cpu")
    assert w.layout.constraints.read_text() == "torch==2.9.1+cu128\n"
    state = w.state()
    assert state["build"] == "cu128" and state["torch"] == "2.9.1+cu128" and state["selftest"]["ok"]
    assert state["launch"][0].endswith("pythonw.exe")
    assert not w.layout.marker.exists()
    assert "[1/5] Setting up Python 3.12" in w.text and "RTX 5090" in w.text
    assert "works" in w.message() and "GPU: PyTorch 2.9.1+cu128 uses NVIDIA GeForce RTX 5090" in w.message()


def test_linux_install_needs_no_triton_step(bs, tmp_path) -> None:
    hw = bs.Hardware("Linux", "x86_64", (bs.Gpu("NVIDIA H100 80GB HBM3", (9, 0), 81559),), "580.159.04", True)
    w = World(bs, tmp_path, system="Linux", hw=hw, probe=H100_PROBE, torch_version="2.11.0+cu130")
    assert w.install() == bs.EXIT_OK
    assert [k for k, _ in w.steps] == ["venv", "torch", "bitsmith"]
    assert w.steps[1][1][w.steps[1][1].index("--index-url") + 1].endswith("/cu130")
    assert w.steps[1][1][-1] == "torch>=2.9"  # Linux torch wheels bring their own Triton: no cap


def test_no_network_before_downloading(bs, tmp_path) -> None:
    w = World(bs, tmp_path)
    w.online = False
    assert w.install() == bs.EXIT_ERROR
    assert not w.steps and not w.layout.marker.exists()
    assert "No internet connection" in w.message() and "run the installer again" in w.message()
    w.online = True
    assert w.install() == bs.EXIT_OK


def test_network_lost_mid_download_then_rerun_resumes(bs, tmp_path) -> None:
    w = World(bs, tmp_path)
    w.fail["torch"] = (2, DNS_FAILURE)
    assert w.install() == bs.EXIT_ERROR
    marker = json.loads(w.layout.marker.read_text())
    assert marker["step"] == "torch"
    msg = w.message()
    assert "A download failed during this step: Downloading and installing PyTorch" in msg
    assert "continues where it stopped" in msg
    w.steps.clear()
    assert w.install() == bs.EXIT_OK
    assert "stopped before it finished (during: torch)" in w.text
    assert [k for k, _ in w.steps] == ["venv", "torch", "triton", "bitsmith"]
    assert not w.layout.marker.exists()


def test_disk_full_before_and_during(bs, tmp_path) -> None:
    w = World(bs, tmp_path)
    w.free = 3 * 10**9
    assert w.install() == bs.EXIT_ERROR
    assert "Not enough free disk space" in w.message() and "3.0 GB free, about 8 GB needed" in w.message()
    assert not w.steps
    w.free = 100 * 10**9
    w.fail["torch"] = (2, DISK_FULL)
    assert w.install() == bs.EXIT_ERROR
    assert "is full" in w.message() and w.layout.marker.exists()
    assert w.install() == bs.EXIT_OK


def test_interrupted_install_leaves_a_marker_and_reruns(bs, tmp_path) -> None:
    w = World(bs, tmp_path)
    w.fail["bitsmith"] = KeyboardInterrupt()
    assert w.install() == bs.EXIT_INTERRUPTED
    assert json.loads(w.layout.marker.read_text())["step"] == "bitsmith"
    assert "interrupted" in w.message()
    (w.layout.env / "half-written").write_text("x")
    w.steps.clear()
    assert w.install() == bs.EXIT_OK
    assert w.steps[0][0] == "venv" and not (w.layout.env / "half-written").exists()


def test_no_driver_is_reported_and_nothing_is_touched(bs, tmp_path) -> None:
    w = World(bs, tmp_path, hw=bs.Hardware("Windows", "x86_64", nvidia_device=True))
    assert w.install() == bs.EXIT_CPU_OFFER  # the platform installer may now offer the CPU build
    assert not w.steps and not w.layout.marker.exists()
    assert "driver is missing" in w.message() and "/ALLOWCPU" in w.message()
    w.probe = {**RTX5090_PROBE, "torch": "2.9.1+cpu", "torch_cuda": None, "cuda_available": False,
               "triton": "skipped"}
    assert w.install(allow_cpu=True) == bs.EXIT_OK
    assert "installing for the CPU" in w.text
    torch = next(argv for k, argv in w.steps if k == "torch")
    assert torch[torch.index("--index-url") + 1].endswith("/whl/cpu")


def test_driver_too_old_message(bs, tmp_path) -> None:
    hw = bs.Hardware("Windows", "x86_64", (bs.Gpu("NVIDIA GeForce RTX 5090", (12, 0), 32607),), "566.36", True)
    w = World(bs, tmp_path, hw=hw)
    assert w.install() == bs.EXIT_CPU_OFFER
    assert "566.36" in w.message() and "570.65" in w.message() and not w.steps
    assert not w.layout.marker.exists() and not w.layout.env.exists()


def test_older_install_is_updated_in_place_keeping_data(bs, tmp_path) -> None:
    w = World(bs, tmp_path)
    assert w.install() == bs.EXIT_OK
    state = w.state()
    state["bitsmith"] = "0.1.0"
    bs.write_json(w.layout.state_file, state)
    models = w.layout.root / "models" / "my-model"
    models.mkdir(parents=True)
    (models / "model.safetensors").write_text("weights")
    (w.layout.root / "chats.sqlite").write_text("chats")
    w.steps.clear()
    assert w.install() == bs.EXIT_OK
    assert "Found Bitsmith 0.1.0; installing 0.2.0" in w.text
    assert [k for k, _ in w.steps] == ["torch", "triton", "bitsmith"]  # the environment is reused
    assert (models / "model.safetensors").read_text() == "weights" and (w.layout.root / "chats.sqlite").exists()


def test_new_gpu_rebuilds_the_environment(bs, tmp_path) -> None:
    w = World(bs, tmp_path)
    w.hw = bs.Hardware("Windows", "x86_64", (bs.Gpu("NVIDIA GeForce RTX 4090", (8, 9), 24564),), "560.94", True)
    w.probe = {**RTX5090_PROBE, "torch": "2.8.0+cu126", "torch_cuda": "12.6", "capability": [8, 9],
               "arch_list": ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]}
    w.torch_version = "2.8.0+cu126"
    assert w.install() == bs.EXIT_OK and w.state()["build"] == "cu126"
    w.hw = bs.Hardware("Windows", "x86_64", (bs.Gpu("NVIDIA GeForce RTX 5090", (12, 0), 32607),), "576.88", True)
    w.probe, w.torch_version = dict(RTX5090_PROBE), "2.9.1+cu128"
    w.steps.clear()
    assert w.install() == bs.EXIT_OK
    assert "changes from cu126 to cu128" in w.text and w.steps[0][0] == "venv"
    assert w.state()["build"] == "cu128"


def test_repair_recreates_the_env_and_keeps_models_and_chats(bs, tmp_path) -> None:
    w = World(bs, tmp_path)
    assert w.install() == bs.EXIT_OK
    (w.layout.root / "models").mkdir()
    (w.layout.root / "models" / "m.gguf").write_text("gguf")
    (w.layout.root / "chats.sqlite").write_text("chats")
    (w.layout.env / "broken").write_text("x")
    w.steps.clear()
    assert w.install("repair") == bs.EXIT_OK
    assert w.steps[0][0] == "venv" and not (w.layout.env / "broken").exists()
    assert (w.layout.root / "models" / "m.gguf").exists() and (w.layout.root / "chats.sqlite").exists()
    assert not list(w.layout.app.glob("env.old-*"))


def test_damaged_env_is_rebuilt(bs, tmp_path) -> None:
    w = World(bs, tmp_path)
    assert w.install() == bs.EXIT_OK
    w.layout.env_python.unlink()
    w.steps.clear()
    assert w.install() == bs.EXIT_OK
    assert w.steps[0][0] == "venv"


def test_update_upgrades(bs, tmp_path) -> None:
    w = World(bs, tmp_path)
    assert w.install() == bs.EXIT_OK
    w.steps.clear()
    assert w.install("update") == bs.EXIT_OK
    torch, bitsmith = w.steps[0][1], w.steps[-1][1]
    assert torch[torch.index("--upgrade-package") + 1] == "torch" and w.steps[0][0] == "torch"
    assert bitsmith[bitsmith.index("--upgrade-package") + 1] == "bitsmith" and "--upgrade" not in bitsmith


def test_env_in_use_is_a_clear_message(bs, tmp_path) -> None:
    w = World(bs, tmp_path)
    assert w.install() == bs.EXIT_OK
    blocker = w.layout.app / "env.old-1700000000"  # where the old env would be moved: a non-empty folder
    blocker.mkdir()
    (blocker / "x").write_text("x")
    original = w.deps

    def deps():
        d = original()
        d.remove_tree = lambda path: (_ for _ in ()).throw(OSError("in use"))
        return d

    w.deps = deps
    assert w.install("repair") == bs.EXIT_ERROR
    assert "Close Bitsmith" in w.message()


def test_cpu_only_torch_on_a_gpu_machine_is_caught_by_the_selftest(bs, tmp_path) -> None:
    w = World(bs, tmp_path, probe={**RTX5090_PROBE, "torch": "2.9.1+cpu", "torch_cuda": None,
                                   "cuda_available": False})
    assert w.install() == bs.EXIT_SELFTEST
    assert "CPU-only PyTorch" in w.message() and "Repair" in w.message()
    assert not w.state()["selftest"]["ok"] and not w.layout.marker.exists()


def test_offline_plan_uses_only_local_wheels(bs, tmp_path) -> None:
    w = World(bs, tmp_path, system="Linux", hw=bs.Hardware("Linux", "x86_64"),
              probe={**H100_PROBE, "torch": "2.13.0+cpu", "torch_cuda": None, "cuda_available": False,
                     "triton": "skipped", "llama_cpp": "missing"}, torch_version="2.13.0+cpu")
    w.online = False  # never asked when offline
    code = w.install(offline=True, find_links=(Path("/wh"),), python="/usr/bin/python3.11",
                     without_llama_cpp=True, torch="torch==2.13.0")
    assert code == bs.EXIT_OK
    venv, torch, bitsmith = (argv for _, argv in w.steps)
    assert "--managed-python" not in venv and "--offline" in venv
    for argv in (torch, bitsmith):
        assert argv[argv.index("--offline"):argv.index("--offline") + 4] == ["--offline", "--no-index",
                                                                            "--find-links", "/wh"]
        assert "--index-url" not in argv and "--extra-index-url" not in argv
    assert torch[-1] == "torch==2.13.0"
    assert bitsmith[bitsmith.index("--excludes") + 1] == str(w.layout.excludes)
    assert w.layout.excludes.read_text() == "llama-cpp-python\n"
    assert "llama.cpp is not installed" in w.message()


def test_unknown_failure_points_to_the_log(bs, tmp_path) -> None:
    w = World(bs, tmp_path)
    w.fail["bitsmith"] = (1, "error: Because bitsmith==0.2.0 depends on torch>=9 ... unsatisfiable")
    assert w.install() == bs.EXIT_ERROR
    msg = w.message()
    assert "This step failed: Installing Bitsmith" in msg and "unsatisfiable" in msg


@pytest.mark.parametrize(
    "output,kind",
    [(DNS_FAILURE, "network"), (DISK_FULL, "disk_full"), ("No space left on device (os error 28)", "disk_full"),
     ("The process cannot access the file because it is being used by another process. (os error 32)", "busy"),
     ("Network connectivity is disabled, but the requested data wasn't found in the cache", "network"),
     ("something else", "install_failed")],
)
def test_classify_failure(bs, tmp_path, output, kind) -> None:
    step = bs.Step("torch", "Downloading and installing PyTorch", ("uv",))
    err = bs.classify_failure(step, output, bs.Layout(tmp_path, "Linux"), tmp_path / "log")
    assert err.kind == kind and err.hint and str(tmp_path / "log") in err.hint


def test_uninstall_keeps_or_removes_data(bs, tmp_path) -> None:
    w = World(bs, tmp_path, system="Linux", hw=bs.Hardware("Linux", "x86_64"),
              probe={**H100_PROBE, "torch_cuda": None, "cuda_available": False, "triton": "skipped"})
    assert w.install() == bs.EXIT_OK
    (w.layout.root / "models").mkdir()
    removed = bs.uninstall(w.layout.root, keep_data=True, system="Linux")
    assert removed == [w.layout.app] and (w.layout.root / "models").exists()
    bs.uninstall(w.layout.root, keep_data=False, system="Linux")
    assert not w.layout.root.exists()


def test_uninstall_refuses_to_delete_a_home_folder(bs, tmp_path) -> None:
    home = tmp_path / "home"
    (home / "app").mkdir(parents=True)
    with pytest.raises(bs.InstallError):
        bs.uninstall(home, keep_data=False, system="Linux", home=home)
    assert (home / "app").exists()


def cpu_probe():
    return {**RTX5090_PROBE, "torch": "2.9.1+cpu", "torch_cuda": None, "cuda_available": False, "triton": "skipped"}


@pytest.mark.parametrize("answer,installed", [("y", True), ("yes", True), ("n", False), ("", False), (EOFError, False)])
def test_driver_too_old_offers_the_cpu_and_installs_it_only_on_yes(bs, tmp_path, answer, installed) -> None:
    hw = bs.Hardware("Windows", "x86_64", (bs.Gpu("NVIDIA GeForce RTX 3060", (8, 6), 12288),), "516.94", True)
    w = World(bs, tmp_path, hw=hw, probe=cpu_probe())
    asked = []

    def ask(question):
        asked.append(question)
        if answer is EOFError:
            raise EOFError
        return answer

    run = lambda opts, mode: bs.install(opts, mode, w.deps(), bs.Console(None, w.out), system="Windows")  # noqa: E731
    code = bs.install_asking(w.options(), "install", ask, run)
    assert len(asked) == 1 and "CPU" in asked[0] and "[y/N]" in asked[0]
    if installed:
        assert code == bs.EXIT_OK and w.state()["build"] == "cpu"
        torch = next(argv for k, argv in w.steps if k == "torch")
        assert torch[torch.index("--index-url") + 1].endswith("/whl/cpu")
        assert "NOT used" in w.message() and "run the installer again" in w.message()  # the warning stays visible
    else:
        assert code == bs.EXIT_CPU_OFFER and not w.steps and not w.layout.state_file.exists()
        assert "too old" in w.message()


def test_a_working_gpu_is_never_asked_about_the_cpu(bs, tmp_path) -> None:
    w = World(bs, tmp_path)
    run = lambda opts, mode: bs.install(opts, mode, w.deps(), bs.Console(None, w.out), system="Windows")  # noqa: E731
    assert bs.install_asking(w.options(), "install", lambda q: pytest.fail("asked"), run) == bs.EXIT_OK


def test_disk_filling_up_while_the_installer_writes_its_own_files(bs, tmp_path, monkeypatch) -> None:
    """Not only uv's downloads: the installer's own small files can hit a full disk, with the same message."""
    w = World(bs, tmp_path)
    real = bs.write_json

    def full(path, data):
        if data.get("step") == "bitsmith":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(bs, "write_json", full)
    assert w.install() == bs.EXIT_ERROR
    assert "is full" in w.message() and "continues where it stopped" in w.message()
    assert json.loads(w.layout.marker.read_text())["step"] == "triton"  # the last step that started
    monkeypatch.setattr(bs, "write_json", real)
    w.steps.clear()
    assert w.install() == bs.EXIT_OK
    assert w.steps[0][0] == "venv" and not w.layout.marker.exists()


def test_no_permission_on_a_file_is_a_plain_message(bs, tmp_path, monkeypatch) -> None:
    w = World(bs, tmp_path)
    monkeypatch.setattr(bs, "installed_torch_version", lambda layout, deps: (_ for _ in ()).throw(
        PermissionError(errno.EACCES, "Permission denied", "python.exe")))
    assert w.install() == bs.EXIT_ERROR
    assert "Close Bitsmith" in w.message() and "Traceback" not in w.text


def test_update_checks_room_for_a_new_pytorch(bs, tmp_path) -> None:
    w = World(bs, tmp_path)
    assert w.install() == bs.EXIT_OK
    w.free = 3 * 10**9
    w.steps.clear()
    assert w.install("update") == bs.EXIT_ERROR
    assert "about 8 GB needed" in w.message() and not w.steps
    assert w.install() == bs.EXIT_OK  # a plain re-install over a working environment needs little


def make_wheel(folder: Path, version: str, requires: list[str]) -> Path:
    """A minimal Bitsmith wheel whose METADATA lists `requires`."""
    wheel = folder / f"bitsmith-{version}-py3-none-any.whl"
    meta = f"Metadata-Version: 2.4\nName: bitsmith\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"bitsmith-{version}.dist-info/METADATA", meta)
    return wheel


def test_update_to_a_bitsmith_that_needs_a_newer_torch(bs, tmp_path) -> None:
    """The Bitsmith step pins torch, so the torch step must already ask for the new wheel's floor."""
    hw = bs.Hardware("Windows", "x86_64", (bs.Gpu("NVIDIA GeForce RTX 5090", (12, 0), 32607),), "581.57", True)
    w = World(bs, tmp_path, hw=hw, torch_version="2.11.0+cu130")
    assert w.install(wheel=make_wheel(tmp_path, "0.1.0", ["torch>=2.4", "numpy>=1.24"])) == bs.EXIT_OK
    assert w.steps[1][1][-1] == "torch>=2.9,>=2.4,<2.15"
    w.steps.clear()
    w.torch_version = "2.14.1+cu130"
    newer = make_wheel(tmp_path, "0.2.0", ["torch>=2.12", "triton-windows>=3.0; platform_system == 'Windows'"])
    assert w.install(wheel=newer) == bs.EXIT_OK
    torch = next(argv for k, argv in w.steps if k == "torch")
    assert torch[-1] == "torch>=2.9,>=2.12,<2.15" and torch[torch.index("--index-url") + 1].endswith("/cu130")
    assert next(argv for k, argv in w.steps if k == "triton")[-1] == "triton-windows>=3.8,<3.9"
    assert w.layout.constraints.read_text() == "torch==2.14.1+cu130\n"


@pytest.mark.parametrize(
    "requires,floor",
    [(["torch>=2.4"], ">=2.4"), (["torch (>=2.6,<3)"], ">=2.6,<3"), (["Torch >= 2.9"], ">=2.9"),
     (["torchvision>=0.20"], None), (["torch>=2.4; extra == 'dev'"], None), (["torch"], None), ([], None)],
)
def test_wheel_requirement(bs, tmp_path, requires, floor) -> None:
    assert bs.wheel_requirement(make_wheel(tmp_path, "0.1.0", requires), "torch") == floor
    assert bs.wheel_requirement(tmp_path / "missing.whl", "torch") is None


def test_uninstall_keeps_a_custom_folder_that_is_not_named_bitsmith(bs, tmp_path) -> None:
    """--prefix ~/Documents once: removing 'models and chats' must not delete the rest of Documents."""
    docs = tmp_path / "Documents"
    (docs / "app").mkdir(parents=True)
    (docs / "app" / "install.json").write_text("{}")
    (docs / "thesis.odt").write_text("years of work")
    with pytest.raises(bs.InstallError) as err:
        bs.uninstall(docs, keep_data=False, system="Linux", home=tmp_path)
    assert "Nothing was removed" in err.value.hint and (docs / "thesis.odt").exists()
    assert bs.uninstall(docs, keep_data=True, system="Linux", home=tmp_path) == [docs / "app"]
    assert (docs / "thesis.odt").read_text() == "years of work"
