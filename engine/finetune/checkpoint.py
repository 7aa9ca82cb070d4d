"""Trainer checkpoints: every tensor in one safetensors file plus a JSON of the rest, replaced atomically.

The new checkpoint is written under a temporary name and renamed into place; the previous one is removed
only after that, so a crash at any moment leaves one complete checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from bitsmith.engine.errors import DiskFullError

TENSORS = "state.safetensors"
META = "trainer.json"


def save_checkpoint(folder: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write (tensors, meta) to `folder` atomically."""
    from safetensors.torch import save_file

    folder = Path(folder)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    old = folder.with_name(f"{folder.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        plain = {k: t.detach().contiguous().cpu().clone() for k, t in tensors.items()}
        save_file(plain, str(tmp / TENSORS))
        (tmp / META).write_text(json.dumps(meta, indent=1))
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno == 28:
            raise DiskFullError(f"the disk is full while writing a checkpoint to {folder}",
                                "free some space; training resumes from the previous checkpoint") from exc
        raise
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """(tensors, meta) of a complete checkpoint in `folder`, or None if there is none."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / META).is_file() or not (folder / TENSORS).is_file():
        return None
    return load_file(str(folder / TENSORS)), json.loads((folder / META).read_text())
