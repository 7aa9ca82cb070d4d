"""Named presets for `bitsmith quantize`: how much data and effort each stage gets.

`demo` is sized to finish the bundled 135M model in about three minutes on a 2-core CPU, `default`
in about fifteen at 3.0 bpw, `best` takes what quality asks for. On a GPU the calibration stage
uses the GPU presets of engine/calibrate (AutoRound's defaults), the rest scales the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from bitsmith.engine.errors import BadInputError


@dataclass(frozen=True)
class Preset:
    """Data and effort per stage."""

    name: str
    measure_samples: int
    measure_seq_len: int
    measure_method: str
    calib_preset: str
    eval_tokens: int
    eval_window: int
    formats: tuple[str, ...] = ("int4_g128", "int2_g64")
    cpu_calib_overrides: tuple[tuple[str, int], ...] = ()
    distill_epochs: int = 0  # end-to-end distillation after calibration (engine/calibrate/e2e.py); 0: none
    distill_samples: int = 32  # its training windows (plus DistillConfig.val_samples held out)
    distill_seq_len: int = 512

    def to_dict(self) -> dict:
        """JSON-ready (recorded in bitsmith.json's recipe)."""
        return asdict(self)


QUALITY_FORMATS = ("int4_g128_dq8", "int3_g128_dq8", "int2_g64_dq8")

PRESETS = {
    # on a CPU the demo calibrates lighter than engine/calibrate's "demo" (20 iters × 16 samples, ~155 s of
    # one core for SmolLM2 in tests/benchmarks/bench_calibrate.py) so the whole demo stays near 3 minutes
    "demo": Preset(
        "demo", 4, 256, "rtn", "demo", eval_tokens=8192, eval_window=512,
        cpu_calib_overrides=(("iters", 12), ("samples", 8)),
    ),
    # default and best search three widths with double-quantized statistics: on SmolLM2 (docs/benchmarks/quality.md)
    # they took 4.0 bpw from 1.24x to 1.08x the full-precision perplexity; the demo keeps the faster pair. Both end
    # with end-to-end distillation (docs/benchmarks/distill.md: 4.0 bpw 1.083x -> 1.058x)
    "default": Preset("default", 16, 512, "rtn", "default", eval_tokens=32768, eval_window=512,
                      formats=QUALITY_FORMATS, distill_epochs=2),
    "best": Preset("best", 32, 1024, "rtn", "best", eval_tokens=0, eval_window=1024, formats=QUALITY_FORMATS,
                   distill_epochs=2),
}


def get_preset(name: str) -> Preset:
    """The preset called `name`, or a BadInputError listing the choices."""
    try:
        return PRESETS[name]
    except KeyError:
        raise BadInputError(f"unknown preset {name!r}", f"choose one of: {', '.join(PRESETS)}") from None
