"""Compile each Triton kernel for a Hopper GPU (sm_90) on a machine without one, and report on it.

Run as a script without TRITON_INTERPRET; prints one JSON object: for each kernel, whether it compiled,
its registers, spills (local memory), shared memory, and which matrix instructions its SASS uses
(HGMMA = Hopper wgmma; HMMA = the older mma.sync). Uses the ptxas and cuobjdump that ship with triton.
tests/kernels/test_hopper_compile.py runs it; `python tests/kernels/hopper_compile.py` prints it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile


def _targets():
    from bitsmith.kernels import backward, dequant, gemm_dequant, gemm_splitk, gemv, jit_helpers

    def pick(cands):
        return {k: v for k, v in cands[0].items() if k.isupper()}, cands[0]["num_warps"], cands[0]["num_stages"]

    ints = {"M": "i32", "N": "i32", "K": "i32", "stride_xm": "i32", "stride_om": "i32", "stride_os": "i32",
            "chunks_per_split": "i32", "code_mask": "i32", "stride_dym": "i32", "stride_dxm": "i32",
            "MN": "i32", "SPLIT": "i32"}
    n, k = 4096, 14336
    out = []
    cfg, w, s = pick(gemv.candidates(1, n, k, 4))
    out.append(("gemv int4 M=1", gemv._gemv_kernel, dict(cfg, BITS=4, GROUP=128, BLOCK_M=1), w, s))
    cfg, w, s = pick(gemm_splitk.candidates(16, n, k, 2))
    out.append(("splitk int2 M=16", gemm_splitk._gemm_splitk_kernel,
                dict(cfg, BITS=2, GROUP=64, DOT_PRECISION="tf32"), w, s))
    cfg, w, s = pick(gemm_dequant.candidates(256, n, k, 4, 128))
    out.append(("gemm int4 M=256", gemm_dequant._gemm_dequant_kernel,
                dict(cfg, BITS=4, GROUP=128, DOT_PRECISION="tf32"), w, s))
    cfg, w, s = pick(backward.candidates(256, n, k, 2, 64))
    out.append(("dx int2 M=256", backward._dx_kernel, dict(cfg, BITS=2, GROUP=64, DOT_PRECISION="tf32"), w, s))
    out.append(("dequant int4", dequant._dequant_kernel, dict(BITS=4, GROUP=128, BLOCK_N=64, BLOCK_KW=16), 4, 2))
    out.append(("splitk reduce", jit_helpers._splitk_reduce_kernel, dict(BLOCK=1024), 4, 2))
    return ints, out


def compile_all(dtype: str = "bf16") -> dict:
    """Compile every target for sm_90 with activations of `dtype`; returns a report per kernel."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    ints, targets = _targets()
    report = {}
    for name, fn, consts, warps, stages in targets:
        sig, attrs = {}, {}
        for i, arg in enumerate(fn.arg_names):
            if arg in consts:
                sig[arg] = "constexpr"
            elif arg.endswith("_ptr"):
                sig[arg] = {"qw_ptr": "*i32", "s_ptr": "*fp16", "z_ptr": "*fp16", "part_ptr": "*fp32"}.get(
                    arg, f"*{dtype}")
                attrs[(i,)] = [["tt.divisibility", 16]]
            else:
                sig[arg] = ints[arg]
                if arg not in ("M", "chunks_per_split", "code_mask", "SPLIT"):
                    attrs[(i,)] = [["tt.divisibility", 16]]
        entry = {}
        try:
            src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
            kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                                    options={"num_warps": warps, "num_stages": stages})
            entry["compiled"] = True
            with tempfile.TemporaryDirectory() as tmp:
                cubin = os.path.join(tmp, "k.cubin")
                with open(cubin, "wb") as f:
                    f.write(kernel.asm["cubin"])
                res = subprocess.run([os.path.join(tools, "cuobjdump"), "-res-usage", cubin],
                                     capture_output=True, text=True).stdout
                sass = subprocess.run([os.path.join(tools, "cuobjdump"), "-sass", cubin],
                                      capture_output=True, text=True).stdout
            for key in ("REG", "STACK", "LOCAL", "SHARED"):
                m = re.search(rf"\b{key}:(\d+)", res)
                entry[key.lower()] = int(m.group(1)) if m else None
            entry["mma"] = sorted(set(re.findall(r"\b(HGMMA|HMMA)\.", sass)))
        except Exception as exc:  # report, do not hide: the test prints it
            entry = {"compiled": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
        report[name] = entry
    return report


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("run without TRITON_INTERPRET=1: this compiles for a real GPU target")
    print(json.dumps(compile_all(sys.argv[1] if len(sys.argv) > 1 else "bf16")))
