"""Calibration checkpoints: one safetensors file per finished block plus `progress.json`, written atomically.

Layout of a checkpoint folder::

    progress.json            {"version", "fingerprint", "blocks_done", "reports": [...]}
    block_0000.safetensors   the block's QuantLinear state dicts, keys "<name in block>.<key>";
                             metadata "formats" = JSON {name in block: format name}

A block file is complete before `progress.json` names it, and both are written to a temporary name
then renamed, so a crash at any point leaves either the old or the new state. Activation streams
are not stored: resuming recomputes them by running the finished blocks (full-precision and
quantized) over the calibration inputs, so the disk cost is only the quantized blocks themselves
(about the size of the final model) instead of two [samples, tokens, hidden] streams (e.g. 2 × 4 GiB
in bf16 for 128 × 2048 tokens of an 8B model).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from bitsmith.engine.errors import BadInputError, DiskFullError, ForeignCheckpointError

VERSION = 1
PROGRESS = "progress.json"


def block_file(folder: Path, index: int) -> Path:
    """Path of one block's checkpoint file."""
    return folder / f"block_{index:04d}.safetensors"


def _atomic_write(path: Path, write) -> None:  # noqa: ANN001 - a callable taking the temporary path
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(
                f"no space left to write the calibration checkpoint {path}",
                hint="free some disk space and run again: calibration resumes from the last finished block",
            ) from exc
        raise


def fingerprint(parts: Mapping[str, Any]) -> str:
    """A short stable hash of the JSON of `parts`."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def read_progress(folder: Path, expected: str) -> dict[str, Any]:
    """The saved progress (blocks_done 0 when the folder is new); ForeignCheckpointError if it is another run's."""
    path = folder / PROGRESS
    if not path.is_file():
        return {"version": VERSION, "fingerprint": expected, "blocks_done": 0, "reports": []}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInputError(f"cannot read calibration checkpoint {path}: {exc}", hint="delete the folder") from exc
    if data.get("version") != VERSION or data.get("fingerprint") != expected:
        raise ForeignCheckpointError(
            f"the calibration checkpoint in {folder} belongs to a different run "
            "(another model, layout, calibration data or settings)",
            hint="use a new checkpoint folder, or delete this one to start over",
            folder=folder,
        )
    return data


def write_progress(folder: Path, data: dict[str, Any]) -> None:
    """Write progress.json atomically."""
    text = json.dumps(data, indent=1)
    _atomic_write(folder / PROGRESS, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_block(folder: Path, index: int, modules: Mapping[str, torch.nn.Module], formats: Mapping[str, str]) -> None:
    """Write one block's quantized linears (state dicts) atomically."""
    from safetensors.torch import save_file

    tensors = {
        f"{name}.{key}": t.detach().to("cpu").contiguous()
        for name, mod in modules.items()
        for key, t in mod.state_dict().items()
    }
    meta = {"formats": json.dumps(dict(formats), sort_keys=True)}
    _atomic_write(block_file(folder, index), lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_block(folder: Path, index: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """One block's saved tensors and its {name in block: format name}."""
    from safetensors import safe_open

    path = block_file(folder, index)
    if not path.is_file():
        raise BadInputError(f"calibration checkpoint {path} is missing", hint="delete the folder to start over")
    with safe_open(str(path), framework="pt") as fh:
        formats = json.loads((fh.metadata() or {}).get("formats", "{}"))
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__
    return tensors, formats
