"""Importing a .gguf file from anywhere into the models folder (Qt-free; the Models page runs it on a pool thread).

The file lands in a folder of its own, `<models>/<name>/<file>.gguf`, next to `bitsmith-import.json` (where it came
from, when, how), so the library can say "imported" and Delete removes exactly what the import made. It is hard
linked when the file is on the models folder's disk (instant, no second copy of several GB) and copied otherwise,
with progress and cancel. Either way the library owns its entry: moving or deleting the original later does not
break it, deleting the entry leaves the original alone, and moving the models folder takes it along, none of which
a mere reference to the original path would give. Everything is written under a hidden `.partial` name first and
appears with one os.replace, so a crash or cancel never leaves half a model in the library.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bitsmith.engine.errors import BadInputError, BitsmithError, DiskFullError

from .move_models import copy_file, same_folder
from .pages.model_format import human_bytes

IMPORT_FILE = "bitsmith-import.json"
GGUF_MAGIC = b"GGUF"


class ImportCancelled(Exception):
    """The user cancelled the import; nothing was added."""


@dataclass
class ImportPlan:
    """One import: the file, the library folder it will get, and the hidden folder it is built in."""

    source: Path
    folder: Path
    staging: Path
    size: int

    @property
    def target(self) -> Path:
        """Where the .gguf file will be."""
        return self.folder / self.source.name


def check_gguf(path: Path) -> int:
    """The size of a readable GGUF file; BadInputError in plain words otherwise."""
    if not path.is_file():
        raise BadInputError(f"{path} is not a file", "Choose a .gguf model file")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
        size = path.stat().st_size
    except OSError as exc:
        raise BadInputError(f"{path} cannot be read: {exc.strerror or exc}", "Check that you may read it") from exc
    if magic != GGUF_MAGIC:
        raise BadInputError(f"{path.name} is not a GGUF model (its first bytes are not 'GGUF')",
                            "Choose a .gguf file as llama.cpp, LM Studio or Bitsmith's Export GGUF write them")
    return size


def _folder_name(stem: str) -> str:
    name = re.sub(r"[^\w.\-+]+", "-", stem).strip(".-") or "imported"
    return name[:120]


def plan_import(models_dir: Path, source: Path) -> ImportPlan:
    """Check the file and choose a free folder for it in `models_dir` (name, name-2, name-3…)."""
    source = Path(source).expanduser()
    size = check_gguf(source)
    models_dir = Path(models_dir)
    if models_dir.is_dir() and any(same_folder(p, models_dir) for p in source.resolve().parents):
        raise BadInputError(f"{source.name} is in the models folder already, so it is in your library",
                            "Pick it in the library list instead")
    base = _folder_name(source.stem)
    name, n = base, 1
    while os.path.lexists(models_dir / name) or os.path.lexists(models_dir / f".{name}.import.partial"):
        n += 1
        name = f"{base}-{n}"
    return ImportPlan(source, models_dir / name, models_dir / f".{name}.import.partial", size)


def source_stamp(path: Path) -> list[int] | None:
    """Size and modification time of a file: the same path with the same stamp is the same file, imported already."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def read_import(folder: Path) -> dict | None:
    """The import record of a library folder, or None when it is not an imported GGUF."""
    try:
        data = json.loads((folder / IMPORT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_import(plan: ImportPlan, on_progress: Callable[[int, int], None] | None = None,
               cancelled: Callable[[], bool] | None = None) -> Path:
    """Link or copy the file into its folder (see the module docstring); the new .gguf path.

    Raises ImportCancelled, DiskFullError or BitsmithError; nothing is left behind when it does."""
    notify = on_progress or (lambda _done, _total: None)
    is_cancelled = cancelled or (lambda: False)
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        notify(done, plan.size)
        if is_cancelled():
            raise ImportCancelled

    if plan.staging.exists():  # left by an import that was killed: ours, never a finished model
        shutil.rmtree(plan.staging, ignore_errors=True)
    staged = plan.staging / plan.source.name
    try:
        plan.staging.mkdir(parents=True)
        try:
            os.link(plan.source, staged)
            method = "hard link"
            notify(plan.size, plan.size)
        except OSError:  # another disk, or a filesystem without hard links: copy it
            free = shutil.disk_usage(plan.staging).free
            if free < plan.size:
                raise DiskFullError(f"the models folder's disk has {human_bytes(free)} free and {plan.source.name} "
                                    f"needs {human_bytes(plan.size)}", "Free some space there, or choose another "
                                    "models folder on the Settings page") from None
            copy_file(plan.source, staged, tick)
            method = "copy"
        record = {"source": str(plan.source.resolve()), "file": plan.source.name, "size_bytes": plan.size,
                  "source_stamp": source_stamp(plan.source), "method": method,
                  "imported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (plan.staging / IMPORT_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")
        if os.path.lexists(plan.folder):
            raise BadInputError(f"{plan.folder.name} appeared in the models folder during the import",
                                "Import the file again; it will get another name")
        os.replace(plan.staging, plan.folder)
    except BaseException as exc:
        shutil.rmtree(plan.staging, ignore_errors=True)
        if isinstance(exc, BitsmithError):  # DiskFullError is an OSError too: said already
            raise
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
            raise DiskFullError("the models folder's disk is full", "Free some space there and import again") from exc
        if isinstance(exc, OSError):
            raise BitsmithError(f"{plan.source.name} could not be imported: {exc.strerror or exc}",
                                "Check that the models folder is writable and try again") from exc
        raise
    return plan.target
