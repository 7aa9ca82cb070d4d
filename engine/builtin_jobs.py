"""Built-in job kinds that need no model: "hardware" (what this machine has) and "selftest" (does torch work)."""

from __future__ import annotations

import platform
import sys
from typing import Any

from bitsmith.engine import paths
from bitsmith.engine.errors import BitsmithError
from bitsmith.engine.jobfiles import write_json_atomic
from bitsmith.engine.jobs import JobContext, job


@job("hardware")
def hardware_job(ctx: JobContext, params: dict[str, Any]) -> None:
    """Detect the machine's accelerators and memory; save the profile as hardware.json and report it."""
    ctx.stage("hardware", total=1)
    from bitsmith.engine import hardware  # lazy: may load NVML

    found = hardware.detect(models_dir=paths.models_dir())
    profile = found.to_dict()
    path = ctx.job_dir / "hardware.json"
    write_json_atomic(path, profile)
    for line in hardware.describe(found).splitlines():
        ctx.log(line)
    for warning in profile.get("warnings") or []:
        ctx.log(str(warning), level="warning")
    for name, value in profile.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            ctx.metric(name, value)
    ctx.artifact("hardware_profile", path, profile=profile)
    ctx.progress(1, 1)


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


@job("selftest")
def selftest_job(ctx: JobContext, params: dict[str, Any]) -> None:
    """A quick check that the install works: torch imports and a small matmul matches a float64 reference."""
    ctx.stage("selftest", total=3)
    ctx.log(f"python {platform.python_version()} ({sys.executable}) on {platform.platform()}")
    import torch

    ctx.log(f"torch {torch.__version__}")
    for name in ("bitsmith", "transformers", "triton", "safetensors"):
        ctx.log(f"{name} {_version(name) or 'not installed'}")
    ctx.progress(1)
    ctx.check_cancel()

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
        ctx.log(f"cuda {torch.version.cuda}: {torch.cuda.get_device_name(0)}")
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
        ctx.log("mps (Apple GPU) available")
    else:
        ctx.log("no GPU found: Bitsmith will run on the CPU (slowly)", level="warning")
    ctx.progress(2)

    gen = torch.Generator().manual_seed(int(params.get("seed", 0)))
    a = torch.randn(64, 96, generator=gen)
    b = torch.randn(96, 48, generator=gen)
    ref = a.double() @ b.double()
    for device in devices:
        ctx.check_cancel()
        got = (a.to(device) @ b.to(device)).double().cpu()
        err = float((got - ref).abs().max())
        ctx.metric("matmul_max_abs_err", err, device=device)
        # fp32 with (possibly TF32) accumulation over 96 terms of unit-variance products.
        if not err < 5e-2:
            raise BitsmithError(
                f"a 64x96 @ 96x48 matmul on {device} is wrong (max abs error {err:.3g})",
                hint="the torch install or the GPU driver is broken; reinstall Bitsmith or update the driver",
            )
    ctx.progress(3)
    ctx.log("selftest passed")


@job("download")
def download_job(ctx: JobContext, params: dict[str, Any]) -> None:
    """Download a model from the Hub with byte progress; cancel keeps partial files for the next run."""
    from bitsmith.engine.errors import BadInputError
    from bitsmith.engine.hub_download import download_model

    model_id = params.get("model")
    if not isinstance(model_id, str) or not model_id:
        raise BadInputError("the download request lacks 'model'", "pass a Hub id such as owner/name")

    def on_progress(p: Any) -> None:
        if ctx.cancelled:
            ctx.check_cancel()
        ctx.progress(p.done, p.total, stage="download")

    result = download_model(
        model_id,
        revision=params.get("revision"),
        dest=params.get("dest"),
        allow_pickle=bool(params.get("allow_pickle")),
        progress=on_progress,
        cancel=ctx.cancel_event,
    )
    for note in result.notes:
        ctx.log(note)
    ctx.artifact("model", result.path, source=result.source, commit=result.commit)
    ctx.emit({"event": "result", "path": str(result.path), "source": result.source,
              "bytes": result.total_bytes, "downloaded_bytes": result.downloaded_bytes})
