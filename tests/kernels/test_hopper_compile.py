"""Every kernel compiles for a Hopper GPU (sm_90) with bfloat16 activations, without spilling, and the
tensor-core kernels use wgmma (HGMMA): what the CPU interpreter cannot show. Needs no GPU: Triton's own
ptxas builds the binaries (see hopper_compile.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = None
try:
    import triton

    TOOLS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
except Exception:  # no triton on this platform
    pass


@pytest.mark.slow
@pytest.mark.skipif(TOOLS is None or not (TOOLS / "cuobjdump").exists(), reason="triton's NVIDIA tools are absent")
def test_kernels_compile_for_hopper() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, str(Path(__file__).with_name("hopper_compile.py")), "bf16"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    failed = {name: entry.get("error") for name, entry in report.items() if not entry["compiled"]}
    assert not failed, failed
    for name, entry in report.items():
        assert entry["local"] == 0 and entry["stack"] == 0, f"{name} spills registers: {entry}"
        tensor_core = name.split()[0] in ("splitk", "gemm", "dx") and "reduce" not in name
        if tensor_core:
            assert "HGMMA" in entry["mma"], f"{name} does not use wgmma: {entry}"
