"""`bitsmith plan`: will a model fit this machine at a bit budget? Disk, GPU and RAM for every stage."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the `plan` subcommand."""
    p = subparsers.add_parser(
        "plan",
        help="estimate disk, GPU and RAM per stage for a model at a bit budget on this machine",
        description="Estimate what downloading, measuring, calibrating (and, when the quantize job distils, "
        "the teacher and distill stages), fine-tuning (Q-SFT) and chatting with MODEL at a bit budget need on "
        "this machine, with a verdict per stage: gpu, offload (part in RAM), cpu or no_fit. Only config.json "
        "and tensor headers are read, never the weights.",
    )
    p.add_argument("model", help="a model folder (config.json + *.safetensors), a config.json or a .gguf")
    p.add_argument("--bpw", type=float, default=2.5,
                   help="bits per weight of the quantized linears, codes+scales+zeros (2-16, default 2.5)")
    p.add_argument("--seq-len", type=int, default=2048, help="calibration / fine-tuning sequence length")
    p.add_argument("--batch", type=int, default=1, help="fine-tuning batch size and chat batch")
    p.add_argument("--context", type=int, default=4096, help="chat context length (KV cache size)")
    p.add_argument("--calib-samples", type=int, default=128, help="calibration samples")
    p.add_argument("--preset", choices=("demo", "default", "best"),
                   help="plan the quantize stages with this `bitsmith quantize --preset` (its windows, formats and "
                        "distillation) instead of --calib-samples windows of --seq-len tokens")
    p.add_argument("--distill-epochs", type=int, default=None,
                   help="end-to-end distillation epochs of the quantize job (above 0 adds the teacher and distill "
                        "stages; default: the preset's, else 0)")
    p.add_argument("--hardware", help="plan for a saved hardware profile (`bitsmith hw --json` output)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=run)


def load_model_info(spec: str) -> Any:
    """ModelInfo for a local folder, config.json or .gguf; a clear error for anything else."""
    from bitsmith.engine.errors import BadInputError
    from bitsmith.engine.modelinfo import ModelInfo

    path = Path(spec).expanduser()
    if not path.exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", spec):
        name = spec.split("/")[-1]
        raise BadInputError(f"{spec} is not a local path, and planning from a Hub id is not supported yet",
                            hint=f"Run `bitsmith search {name}` for a fit verdict from the Hub, "
                                 f"or `bitsmith download {spec}` and plan the folder.")
    return ModelInfo.from_path(path)


def _hardware(path: str | None) -> Any:
    from bitsmith.engine import hardware
    from bitsmith.engine.errors import BadInputError

    if not path:
        return hardware.detect()
    try:
        return hardware.HardwareProfile.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInputError(f"cannot read the hardware profile {path}: {exc}",
                            hint="Give the output of `bitsmith hw --json`.") from exc


def _quantize_settings(args: argparse.Namespace, hw: Any) -> Any:
    """The quantize job's settings to plan: the preset's on this machine's calibration device, or the --seq-len /
    --calib-samples windows; with --distill-epochs when given. None: the planner's defaults."""
    from bitsmith.engine.plan import calibration_device
    from bitsmith.engine.plan_quantize import QuantizeSettings

    epochs = args.distill_epochs
    if args.preset:
        return QuantizeSettings.from_preset(args.preset, calibration_device(hw), distill_epochs=epochs)
    if epochs is None:
        return None
    return QuantizeSettings(measure_samples=args.calib_samples, measure_seq_len=args.seq_len,
                            calib_samples=args.calib_samples, calib_seq_len=args.seq_len, distill_epochs=epochs)


def run(args: argparse.Namespace) -> int:
    """Read the model's shapes, detect the machine, print the plan."""
    from bitsmith.engine import plan as planner

    planner.check_bpw(args.bpw)
    info = load_model_info(args.model)
    hw = _hardware(args.hardware)
    result = planner.plan_model(info, args.bpw, hw, seq_len=args.seq_len, batch=args.batch, context=args.context,
                                calib_samples=args.calib_samples, source_on_disk=True,
                                quantize=_quantize_settings(args, hw))
    if args.json:
        print(json.dumps({"model": info.to_dict() | {"linears": len(info.linears)}, "plan": result.to_dict()},
                         indent=2))
    else:
        from bitsmith.engine.modelinfo import describe

        print(describe(info))
        print(planner.describe(result))
    return 0
