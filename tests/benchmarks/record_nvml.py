"""Record what NVML answers on this machine, in the shape tests/engine/fixtures/fake_nvml.py replays.

Run by hand on a machine with an NVIDIA driver (never by CI):

    python tests/benchmarks/record_nvml.py --out tests/engine/fixtures/nvml_h100.json

The file holds the raw answers (driver version, CUDA driver version, and per GPU: name, memory,
compute capability, PCIe link, power limit; an optional query that fails is recorded as its NVML
error) and, beside them, `bitsmith hw --json`'s profile of the same machine taken in the same run,
so a test can check that detect() over the recorded answers gives what it gave on the real board.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
from typing import Any


def _call(fn: Any, *args: Any) -> Any:
    """NVML's answer, or {"error": code, "message": text} when the query fails."""
    import pynvml

    try:
        return fn(*args)
    except pynvml.NVMLError as exc:
        return {"error": int(getattr(exc, "value", 999)), "message": str(exc)}


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def record() -> dict[str, Any]:
    """The raw NVML answers for every GPU on this machine."""
    import pynvml

    pynvml.nvmlInit()
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            gpus.append({
                "name": _text(pynvml.nvmlDeviceGetName(h)), "total": int(mem.total), "free": int(mem.free),
                "cc": list(pynvml.nvmlDeviceGetCudaComputeCapability(h)),
                "pcie_gen": _call(pynvml.nvmlDeviceGetCurrPcieLinkGeneration, h),
                "pcie_width": _call(pynvml.nvmlDeviceGetCurrPcieLinkWidth, h),
                "power_mw": _call(pynvml.nvmlDeviceGetPowerManagementLimit, h),
            })
        return {"driver": _text(pynvml.nvmlSystemGetDriverVersion()),
                "cuda_version": int(pynvml.nvmlSystemGetCudaDriverVersion()), "gpus": gpus}
    finally:
        pynvml.nvmlShutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    from bitsmith.engine.hardware import detect

    data = {"recorded": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "nvml": record(), "profile": detect().to_dict()}
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
