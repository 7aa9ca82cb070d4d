"""Errors a user can act on: each has a kind (for the job protocol) and a hint (what to do)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class BitsmithError(Exception):
    """Base of every error shown to a user; `kind` is one of the job protocol's error kinds."""

    kind = "internal"

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint

    def details(self) -> dict[str, Any]:
        """Machine-readable fields the error event carries besides kind, message and hint (none by default)."""
        return {}


class BadInputError(BitsmithError, ValueError):
    """The user's input (a file, a model, an argument) is wrong; the hint says how to fix it."""

    kind = "bad_input"


class ForeignCheckpointError(BadInputError):
    """A checkpoint folder holds another run's progress; `folder` lets a front end offer to start over (delete
    it) or to choose another output, instead of a dead end."""

    kind = "foreign_checkpoint"

    def __init__(self, message: str, hint: str = "", *, folder: str | Path) -> None:
        super().__init__(message, hint)
        self.folder = str(folder)

    def details(self) -> dict[str, Any]:
        """The checkpoint folder, for the error event."""
        return {"folder": self.folder}


class UnsupportedModelError(BitsmithError, ValueError):
    """The model's architecture or format is not one Bitsmith can handle."""

    kind = "unsupported_model"


class OutOfMemoryError(BitsmithError):
    """The accelerator or host ran out of memory."""

    kind = "out_of_memory"


class DiskFullError(BitsmithError, OSError):
    """Not enough free disk for what was asked."""

    kind = "disk_full"


class NetworkError(BitsmithError):
    """The Hub or another remote could not be reached or refused the request."""

    kind = "network"


class CancelledError(BitsmithError):
    """The user cancelled; resumable state was kept."""

    kind = "cancelled"
