"""Moving the models folder's contents to a new folder without ever losing a file (Qt-free, so it is unit-tested
without a window; the Settings page runs it on a pool thread).

Each top-level entry moves on its own: a rename when both folders share a filesystem, otherwise a copy to a hidden
temporary name inside the destination, an os.replace to the final name, then the source is deleted. The first
error or a cancel stops the move; the item in flight keeps its source and loses its partial copy. A name that
already exists in the destination is never overwritten: it is skipped and reported. Our own lock and temporary
files, and unfinished work (hidden `.partial` folders, whose jobs resume at the path they were started with) stay,
except what the caller names: the partial files of paused downloads, which the app resumes in the new folder.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from bitsmith.engine.errors import BadInputError, DiskFullError

from .pages.model_format import human_bytes

MOVE_TMP_PREFIX = ".bitsmith-moving-"
WRITE_PROBE = ".bitsmith-write-test"
COPY_CHUNK = 8 * 2**20
_TMP_NAME_MAX = 180  # keeps the temporary name under the usual 255-byte limit


def stays_behind(name: str) -> bool:
    """Whether a top-level entry is ours and must not move: lock and temporary files, unfinished work."""
    if name == WRITE_PROBE or name.startswith(MOVE_TMP_PREFIX):
        return True
    return name.startswith(".") and (name.endswith((".lock", ".partial", ".tmp")) or ".tmp-" in name)


def _key(path: Path) -> tuple[str, ...]:
    return Path(os.path.normcase(str(path.expanduser().resolve()))).parts


def _inside(child: Path, parent: Path) -> bool:
    c, p = _key(child), _key(parent)
    return len(c) > len(p) and c[:len(p)] == p


def same_folder(a: Path, b: Path) -> bool:
    """Whether two paths name the same folder (after resolving links and, where the OS does, case)."""
    return _key(a) == _key(b)


def check_destination(source: Path, dest: Path) -> None:
    """Refuse a destination inside the current folder, or one that contains it (BadInputError)."""
    if _inside(dest, source):
        raise BadInputError(f"{dest} is inside the current models folder {source}",
                            "Choose a folder outside it, for example next to it or on another disk")
    if _inside(source, dest):
        raise BadInputError(f"the current models folder {source} is inside {dest}",
                            "Choose a folder that is not a parent of the current one, for example a new, empty "
                            "folder")


def _tree_size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (links count as themselves, never followed)."""
    st = path.lstat()
    if not path.is_dir() or path.is_symlink():
        return st.st_size
    total = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(root, name)
            if name in files or os.path.islink(p):
                try:
                    total += os.lstat(p).st_size
                except OSError:
                    pass
    return total


def _device(path: Path) -> int | None:
    """The filesystem id of `path` or of its nearest existing parent."""
    for p in (path, *path.parents):
        try:
            return p.stat().st_dev
        except OSError:
            continue
    return None


@dataclass
class MoveItem:
    """One top-level entry of the old folder."""

    name: str
    size: int


@dataclass
class MovePlan:
    """What a move will do: the entries that move and those that stay."""

    source: Path
    dest: Path
    items: list[MoveItem]
    staying: list[str]
    same_device: bool

    @property
    def total_bytes(self) -> int:
        return sum(i.size for i in self.items)


def plan_move(source: Path, dest: Path, include: Iterable[str] = ()) -> MovePlan:
    """List what moving `source`'s contents into `dest` involves; refuses nested folders (BadInputError).
    `include` names entries that move although they would stay behind (a paused download's partial files)."""
    source, dest = Path(source).expanduser().resolve(), Path(dest).expanduser().resolve()
    check_destination(source, dest)
    carried = set(include)
    items: list[MoveItem] = []
    staying: list[str] = []
    if source.is_dir() and not same_folder(source, dest):
        for entry in sorted(source.iterdir(), key=lambda p: p.name.lower()):
            if stays_behind(entry.name) and entry.name not in carried:
                staying.append(entry.name)
            else:
                items.append(MoveItem(entry.name, _tree_size(entry)))
    src_dev = _device(source)
    return MovePlan(source, dest, items, staying, src_dev is not None and src_dev == _device(dest))


def plan_entries(source: Path, dest: Path, names: Iterable[str]) -> MovePlan:
    """A plan that moves only the named entries of `source` that exist (e.g. one download's partial files)."""
    source, dest = Path(source).expanduser().resolve(), Path(dest).expanduser().resolve()
    items = [MoveItem(n, _tree_size(source / n)) for n in names if os.path.lexists(source / n)]
    src_dev = _device(source)
    return MovePlan(source, dest, items, [], src_dev is not None and src_dev == _device(dest))


def check_space(plan: MovePlan) -> None:
    """Refuse a copy to another disk that cannot hold it (DiskFullError); a rename needs no space."""
    if plan.same_device or not plan.items:
        return
    probe = next((p for p in (plan.dest, *plan.dest.parents) if p.exists()), plan.dest)
    free = shutil.disk_usage(probe).free
    if free < plan.total_bytes:
        raise DiskFullError(f"the disk of {plan.dest} has {human_bytes(free)} free and the models need "
                            f"{human_bytes(plan.total_bytes)}",
                            "Free some space there or choose a folder on another disk; nothing was moved")


@dataclass
class MoveProgress:
    """How far a move has got (sent to the progress callback)."""

    done_bytes: int
    total_bytes: int
    done_items: int
    total_items: int
    current: str = ""


@dataclass
class MoveReport:
    """What a move did, in names of top-level entries."""

    source: Path
    dest: Path
    moved: list[str] = field(default_factory=list)
    moved_bytes: int = 0
    skipped: list[str] = field(default_factory=list)  # the name already existed in the destination
    not_moved: list[str] = field(default_factory=list)  # left in the source by an error or a cancel
    failed: str | None = None  # the item the error happened on (its source is intact)
    error: str | None = None
    cancelled: bool = False
    warnings: list[str] = field(default_factory=list)  # moved, but something needs the user's hand
    staying: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Everything that was to move has moved."""
        return not (self.skipped or self.not_moved or self.error or self.cancelled)

    def summary(self) -> str:
        """Plain words: what moved, what did not, and what to do."""
        lines = []
        if self.moved:
            lines.append(f"Moved to {self.dest}: {_names(self.moved)} ({human_bytes(self.moved_bytes)}).")
        elif not self.skipped:
            lines.append("Nothing was moved.")
        if self.error:
            lines.append(f"Stopped at {self.failed}: {self.error}. Nothing was lost: {self.failed} is still "
                         f"complete in {self.source}, and its partial copy was removed.")
        elif self.cancelled:
            lines.append("You cancelled the move.")
        if self.not_moved:
            lines.append(f"Not moved, still in {self.source}: {_names(self.not_moved)}.")
        if self.skipped:
            lines.append(f"Skipped because the name already exists in {self.dest} (nothing was overwritten): "
                         f"{_names(self.skipped)}.")
        lines.extend(self.warnings)
        if self.error or self.cancelled or self.not_moved:
            fix = "Fix the problem above, then" if self.error else "To finish,"
            lines.append(f"{fix} choose {self.dest} again: only what is left in {self.source} moves.")
        if self.skipped:
            lines.append("Rename or delete one of the two copies of each skipped item, then choose the folder again.")
        return "\n".join(lines)


def _names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


class _Cancelled(Exception):
    pass


class _Counting:
    """A writable file that reports each chunk written (and stops the copy when cancelled)."""

    def __init__(self, f: BinaryIO, tick: Callable[[int], None]) -> None:
        self.f, self.tick = f, tick

    def write(self, data: Any) -> int:
        n = self.f.write(data)
        self.tick(len(data))
        return n


def copy_file(src: Path, dst: Path, tick: Callable[[int], None]) -> None:
    """Copy one file to a new name (never over an existing one), on disk before returning; `tick(n)` per chunk."""
    expected = src.stat().st_size
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        shutil.copyfileobj(fin, _Counting(fout, tick), COPY_CHUNK)
        fout.flush()
        os.fsync(fout.fileno())  # on disk before the source is deleted
    _copy_times(src, dst)
    if dst.stat().st_size != expected:
        raise OSError(errno.EIO, f"the copy of {src.name} came out incomplete")


def _copy_times(src: Path, dst: Path) -> None:
    try:
        shutil.copystat(src, dst, follow_symlinks=False)
    except OSError:  # some filesystems (exFAT, network shares) refuse modes or times; the bytes are what matter
        pass


def _copy_tree(src: Path, dst: Path, tick: Callable[[int], None]) -> None:
    os.mkdir(dst)
    for entry in sorted(os.scandir(src), key=lambda e: e.name):
        s, d = Path(entry.path), dst / entry.name
        if entry.is_symlink():
            os.symlink(os.readlink(s), d)
        elif entry.is_dir(follow_symlinks=False):
            _copy_tree(s, d, tick)
        elif entry.is_file(follow_symlinks=False):
            copy_file(s, d, tick)
        else:
            raise OSError(errno.EINVAL, f"{s} is not a regular file or folder")
    _copy_times(src, dst)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _plain_error(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return "the disk of the new folder is full"
    if exc.errno in (errno.EACCES, errno.EPERM):
        where = f" for {exc.filename}" if exc.filename else ""
        return f"permission denied{where}"
    return exc.strerror or str(exc)


def move_models(plan: MovePlan, on_progress: Callable[[MoveProgress], None] | None = None,
                cancelled: Callable[[], bool] | None = None) -> MoveReport:
    """Move the plan's items one by one (see the module docstring); never raises for a file problem."""
    report = MoveReport(plan.source, plan.dest, staying=list(plan.staying))
    progress = MoveProgress(0, plan.total_bytes, 0, len(plan.items))
    notify = on_progress or (lambda _p: None)
    is_cancelled = cancelled or (lambda: False)

    def tick(n: int) -> None:
        progress.done_bytes += n
        notify(progress)
        if is_cancelled():
            raise _Cancelled

    try:
        plan.dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        report.not_moved = [i.name for i in plan.items]
        report.failed, report.error = str(plan.dest), f"the new folder cannot be created: {_plain_error(exc)}"
        return report
    for index, item in enumerate(plan.items):
        if is_cancelled():
            report.cancelled = True
            report.not_moved = [i.name for i in plan.items[index:]]
            break
        src, final = plan.source / item.name, plan.dest / item.name
        progress.current = item.name
        notify(progress)
        start_bytes = progress.done_bytes
        if os.path.lexists(final):
            report.skipped.append(item.name)
        elif not os.path.lexists(src):  # gone since the plan (deleted by hand): nothing to move
            pass
        else:
            try:
                _move_one(src, final, plan.dest, tick, report)
            except _Cancelled:
                report.cancelled = True
                report.not_moved = [i.name for i in plan.items[index:]]
                progress.done_bytes = start_bytes
                break
            except OSError as exc:
                report.failed, report.error = item.name, _plain_error(exc)
                report.not_moved = [i.name for i in plan.items[index:]]
                progress.done_bytes = start_bytes
                break
            report.moved.append(item.name)
            report.moved_bytes += item.size
        progress.done_bytes = start_bytes + item.size
        progress.done_items = index + 1
        notify(progress)
    return report


def _move_one(src: Path, final: Path, dest: Path, tick: Callable[[int], None], report: MoveReport) -> None:
    """Rename, or copy to a temporary name + replace + delete the source; raises OSError or _Cancelled."""
    try:
        os.rename(src, final)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    tmp = dest / (MOVE_TMP_PREFIX + src.name[:_TMP_NAME_MAX])
    if os.path.lexists(tmp):  # left by an earlier move that was killed: ours, and never a finished copy
        _remove(tmp)
    try:
        if src.is_symlink():
            os.symlink(os.readlink(src), tmp)
        elif src.is_dir():
            _copy_tree(src, tmp, tick)
        else:
            copy_file(src, tmp, tick)
        if os.path.lexists(final):  # appeared while copying: keep theirs
            raise OSError(errno.EEXIST, f"{final.name} appeared in the new folder while copying")
        os.replace(tmp, final)
    except BaseException:
        if os.path.lexists(tmp):
            try:
                _remove(tmp)
            except OSError:
                pass
        raise
    try:
        _remove(src)
    except OSError as exc:
        report.warnings.append(f"{src.name} was copied, but its old copy in {src.parent} could not be deleted "
                               f"({_plain_error(exc)}): delete it by hand to free the space.")
