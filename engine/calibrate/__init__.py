"""Block-wise calibration: capture block inputs, tune each block's rounding and clipping (SignRound), resume.

Modules: `config` (`CalibConfig` and the presets), `capture` (inputs and call arguments of the decoder
blocks), `runner` (a block over a stream of activations, OOM retries), `loss` (the reconstruction loss),
`signround` (tune one block), `checkpoint` (per-block files, resume) and `pipeline` (the whole model:
`calibrate_model`, `quantize_model_rtn`, `calibration_windows`).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "CalibConfig": ".config",
    "PRESETS": ".config",
    "capture_block_inputs": ".capture",
    "CapturedInputs": ".capture",
    "tune_block": ".signround",
    "BlockResult": ".signround",
    "calibrate_model": ".pipeline",
    "quantize_model_rtn": ".pipeline",
    "calibration_windows": ".pipeline",
    "CalibrationSummary": ".pipeline",
    "BlockReport": ".pipeline",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
