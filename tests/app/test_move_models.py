"""Moving the models folder (app.move_models, no Qt): rename on one filesystem, copy + replace + delete across
filesystems, a failure mid-copy that keeps the source whole and leaves no partial copy, names that already exist
skipped, nested folders refused, cancel between items, and a copy that would not fit refused up front."""

import errno
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from bitsmith.app import move_models as mm
from bitsmith.engine.errors import BadInputError, DiskFullError


def _tree(root: Path) -> dict[str, bytes | str]:
    """Every file (its bytes) and link (its target) under `root`, by relative path."""
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = p.read_bytes()
    return out


def _library(root: Path) -> Path:
    """An old models folder: a Bitsmith folder, an HF folder with a link, a .gguf file, and our own leftovers."""
    q = root / "smol-2.50bpw"
    q.mkdir(parents=True)
    (q / "bitsmith.json").write_text('{"format_version": 1}')
    (q / "model.safetensors").write_bytes(os.urandom(300_000))
    hf = root / "acme--tiny"
    (hf / "sub").mkdir(parents=True)
    (hf / "config.json").write_text("{}")
    (hf / "sub" / "weights.bin").write_bytes(os.urandom(200_000))
    (hf / "weights-link.bin").symlink_to("sub/weights.bin")
    (root / "solo.Q4_1.gguf").write_bytes(b"GGUF" + os.urandom(100_000))
    (root / ".acme--big.partial").mkdir()  # an unfinished download: resumes where it started
    (root / ".acme--big.partial" / "part").write_bytes(b"x" * 10)
    (root / ".acme--big.lock").write_text("")
    return root


NAMES = ["acme--tiny", "smol-2.50bpw", "solo.Q4_1.gguf"]


def _no_rename(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every rename look like a move to another disk (EXDEV), as across two filesystems."""
    def cross_device(src, dst):  # noqa: ANN001, ANN202
        raise OSError(errno.EXDEV, "Invalid cross-device link", str(src))

    monkeypatch.setattr(mm.os, "rename", cross_device)


def test_a_plan_lists_what_moves_and_leaves_our_lock_and_partial_files(tmp_path: Path) -> None:
    old = _library(tmp_path / "old")
    plan = mm.plan_move(old, tmp_path / "new")
    assert [i.name for i in plan.items] == NAMES
    assert sorted(plan.staying) == [".acme--big.lock", ".acme--big.partial"]
    sizes = {i.name: i.size for i in plan.items}
    assert sizes["solo.Q4_1.gguf"] == 100_004
    assert 600_000 < plan.total_bytes < 600_100 and plan.same_device
    assert mm.stays_behind(".x.tmp") and mm.stays_behind(".x.tmp-123") and mm.stays_behind(".bitsmith-write-test")
    assert not mm.stays_behind(".DS_Store") and not mm.stays_behind("notes.partial")


def test_on_one_filesystem_each_item_is_renamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = _library(tmp_path / "old")
    before = {n: _tree(old / n) if (old / n).is_dir() else (old / n).read_bytes() for n in NAMES}
    renames = []
    real_rename = os.rename
    monkeypatch.setattr(mm.os, "rename", lambda s, d: (renames.append(Path(d).name), real_rename(s, d)))
    copies = []
    monkeypatch.setattr(mm, "copy_file", lambda *a: copies.append(a))
    seen: list[mm.MoveProgress] = []
    plan = mm.plan_move(old, tmp_path / "new")
    report = mm.move_models(plan, lambda p: seen.append(mm.MoveProgress(**vars(p))))
    new = tmp_path / "new"
    assert report.complete and report.moved == NAMES and renames == NAMES and copies == []
    assert {n: _tree(new / n) if (new / n).is_dir() else (new / n).read_bytes() for n in NAMES} == before
    assert sorted(p.name for p in old.iterdir()) == [".acme--big.lock", ".acme--big.partial"]
    assert seen[-1].done_bytes == plan.total_bytes and seen[-1].done_items == 3
    assert "Moved to" in report.summary() and "smol-2.50bpw" in report.summary()


def test_across_filesystems_items_are_copied_replaced_and_the_source_deleted(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    old = _library(tmp_path / "old")
    before = {n: _tree(old / n) if (old / n).is_dir() else (old / n).read_bytes() for n in NAMES}
    _no_rename(monkeypatch)
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(mm.os, "replace", lambda s, d: (replaced.append((Path(s).name, Path(d).name)),
                                                        real_replace(s, d)))
    seen: list[int] = []
    new = tmp_path / "new"
    plan = mm.plan_move(old, new)
    report = mm.move_models(plan, lambda p: seen.append(p.done_bytes))
    assert report.complete and report.moved == NAMES and report.moved_bytes == plan.total_bytes
    assert replaced == [(mm.MOVE_TMP_PREFIX + n, n) for n in NAMES]  # every copy lands under its final name at once
    assert {n: _tree(new / n) if (new / n).is_dir() else (new / n).read_bytes() for n in NAMES} == before
    assert (new / "acme--tiny" / "weights-link.bin").is_symlink()  # a link stays a link, still pointing inside
    assert sorted(p.name for p in old.iterdir()) == [".acme--big.lock", ".acme--big.partial"]
    assert sorted(p.name for p in new.iterdir()) == NAMES  # no temporary names left
    assert seen == sorted(seen) and seen[-1] == plan.total_bytes


def test_a_failure_mid_copy_keeps_the_source_whole_and_removes_the_partial_copy(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    old = _library(tmp_path / "old")
    smol = _tree(old / "smol-2.50bpw")
    _no_rename(monkeypatch)
    calls = []
    real_copy = shutil.copyfileobj

    def full_disk(fsrc, fdst, length=0):  # noqa: ANN001, ANN202
        calls.append(Path(fsrc.name).name)
        if Path(fsrc.name).name == "model.safetensors":  # smol's second file: its first one is already copied
            fdst.write(fsrc.read(1000))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(fsrc, fdst, length)

    monkeypatch.setattr(mm.shutil, "copyfileobj", full_disk)
    new = tmp_path / "new"
    report = mm.move_models(mm.plan_move(old, new))
    assert "bitsmith.json" in calls and "model.safetensors" in calls
    assert report.moved == ["acme--tiny"] and report.failed == "smol-2.50bpw"
    assert report.not_moved == ["smol-2.50bpw", "solo.Q4_1.gguf"] and not report.complete
    assert _tree(old / "smol-2.50bpw") == smol and (old / "solo.Q4_1.gguf").is_file()
    assert sorted(p.name for p in new.iterdir()) == ["acme--tiny"]  # no partial copy, no temporary name
    text = report.summary()
    assert "disk of the new folder is full" in text and "still complete in" in text
    assert "solo.Q4_1.gguf" in text and f"choose {new} again" in text

    monkeypatch.setattr(mm.shutil, "copyfileobj", real_copy)  # space freed: choosing the folder again finishes
    again = mm.move_models(mm.plan_move(old, new))
    assert again.complete and again.moved == ["smol-2.50bpw", "solo.Q4_1.gguf"]
    assert _tree(new / "smol-2.50bpw") == smol


def test_a_name_already_in_the_destination_is_skipped_not_overwritten(tmp_path: Path) -> None:
    old = _library(tmp_path / "old")
    new = tmp_path / "new"
    new.mkdir()
    (new / "solo.Q4_1.gguf").write_bytes(b"theirs")
    mine = (old / "solo.Q4_1.gguf").read_bytes()
    report = mm.move_models(mm.plan_move(old, new))
    assert report.moved == ["acme--tiny", "smol-2.50bpw"] and report.skipped == ["solo.Q4_1.gguf"]
    assert (new / "solo.Q4_1.gguf").read_bytes() == b"theirs" and (old / "solo.Q4_1.gguf").read_bytes() == mine
    assert not report.complete and "already exists" in report.summary()


def test_a_destination_inside_the_folder_or_around_it_is_refused(tmp_path: Path) -> None:
    old = _library(tmp_path / "old")
    with pytest.raises(BadInputError, match="inside the current models folder") as err:
        mm.plan_move(old, old / "sub" / "models")
    assert "outside" in err.value.hint
    with pytest.raises(BadInputError, match="is inside"):
        mm.plan_move(old, tmp_path)
    assert not (old / "sub").exists() and sorted(p.name for p in old.iterdir() if p.name[0] != ".") == NAMES
    mm.check_destination(old, tmp_path / "old-models")  # a sibling whose name starts the same is fine


def test_cancel_between_items_stops_before_the_next_one(tmp_path: Path) -> None:
    old = _library(tmp_path / "old")
    new = tmp_path / "new"
    done = []
    report = mm.move_models(mm.plan_move(old, new), lambda p: done.append(p.done_items),
                            lambda: max(done, default=0) >= 1)
    assert report.cancelled and report.moved == ["acme--tiny"]
    assert report.not_moved == ["smol-2.50bpw", "solo.Q4_1.gguf"]
    assert (old / "smol-2.50bpw").is_dir() and (old / "solo.Q4_1.gguf").is_file()
    assert sorted(p.name for p in new.iterdir()) == ["acme--tiny"]
    assert "You cancelled" in report.summary()


def test_cancel_during_a_copy_removes_the_partial_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = _library(tmp_path / "old")
    _no_rename(monkeypatch)
    monkeypatch.setattr(mm, "COPY_CHUNK", 4096)
    chunks = []
    report = mm.move_models(mm.plan_move(old, tmp_path / "new"), lambda p: chunks.append(p.done_bytes),
                            lambda: len(chunks) > 20)
    assert report.cancelled and report.moved == [] and report.not_moved == NAMES
    assert list((tmp_path / "new").iterdir()) == [] and sorted(p.name for p in old.iterdir())[2:] == NAMES


def test_a_copy_that_cannot_fit_is_refused_before_anything_moves(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    old = _library(tmp_path / "old")
    plan = mm.plan_move(old, tmp_path / "new")
    mm.check_space(plan)  # same disk: a rename needs no space
    plan.same_device = False
    monkeypatch.setattr(mm.shutil, "disk_usage", lambda p: SimpleNamespace(free=1000))
    with pytest.raises(DiskFullError, match="1 KB free") as err:
        mm.check_space(plan)
    assert "nothing was moved" in err.value.hint


def test_an_old_copy_that_cannot_be_deleted_is_reported_not_lost(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    old = _library(tmp_path / "old")
    _no_rename(monkeypatch)

    def refuse(path, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(mm.shutil, "rmtree", refuse)
    report = mm.move_models(mm.plan_move(old, tmp_path / "new"))
    assert report.complete and report.moved == NAMES
    assert any("smol-2.50bpw was copied" in w and "delete it by hand" in w for w in report.warnings)
    assert (tmp_path / "new" / "smol-2.50bpw" / "model.safetensors").is_file()
