"""Model downloads from the Hub as worker jobs: start, pause, resume, cancel, and a list that survives a restart.

Each download is the engine's `download` job (bitsmith.engine.builtin_jobs) run through the JobManager, so it
shows on the Jobs page too. The engine keeps partial files in a hidden staging folder next to the destination
and resumes from them, so Pause is a clean cancel of the job and Resume starts the same job id again; Cancel
also deletes the staging folder. The unfinished downloads are listed in <data dir>/downloads.json (written
atomically); one that was running when the app stopped comes back as "interrupted", ready to resume.

A download always finishes in the current models folder. When that folder changed while a download was stopped,
its partial files have either moved with the models (the Settings page carries them; follow_move updates the
list) or are still in the old folder: Resume then moves them over first (app.move_models, on a pool thread: a
rename on one disk, a copy to another) and continues from where it stopped.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from bitsmith.engine.jobfiles import read_json, write_json_atomic

from . import move_models as mm
from .background import error_text, run_in_background
from .qtjob import QtJob

DOWNLOADS_FILE = "downloads.json"
SPEED_WINDOW_S = 5.0
# Statuses: downloading (a job runs), paused (stopped by the user, partial files kept), interrupted (the app
# stopped while it ran), failed (the job reported an error; Resume retries). Finished downloads leave the list.
STATUSES = ("downloading", "paused", "interrupted", "failed")


def stored_token() -> str | None:
    """The Hugging Face token saved on the Settings page (system keyring), if any; never logged."""
    from .pages.settings import KEYRING_SERVICE, KEYRING_USER, keyring_backend

    keyring = keyring_backend()
    if keyring is None:
        return None
    try:
        return keyring.get_password(KEYRING_SERVICE, KEYRING_USER) or None
    except Exception:  # noqa: BLE001 - a locked or broken keyring: download without a token
        return None


def staging_paths(dest: Path) -> list[Path]:
    """The hidden staging folder and lock file the engine keeps next to `dest` while downloading."""
    from bitsmith.engine.hub_download import staging_dir

    return [staging_dir(dest), dest.parent / f".{dest.name}.lock"]


class RateMeter:
    """Bytes per second over the last few seconds (a whole-job average would hide a stall or a resume)."""

    def __init__(self, window_s: float = SPEED_WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s, self.clock = window_s, clock
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, done: int) -> float | None:
        """Record `done` bytes now; the current speed, or None until two samples exist."""
        now = self.clock()
        if self.samples and done < self.samples[-1][1]:  # the job started over: forget the old rate
            self.samples.clear()
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window_s:
            self.samples.popleft()
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else None


@dataclass
class Download:
    """One download in the list: what, where, how far, and the job running it."""

    model_id: str
    dest: str
    status: str = "downloading"
    done_bytes: int = 0
    total_bytes: int | None = None
    job_id: str | None = None
    error: str | None = None
    speed_bps: float | None = None
    eta_s: float | None = None
    job: QtJob | None = field(default=None, repr=False)
    stop_reason: str | None = None  # "pause" or "cancel" while the job is being stopped
    meter: RateMeter = field(default_factory=RateMeter, repr=False)
    relocating: bool = False  # its partial files are moving to the current models folder before the job starts

    @property
    def running(self) -> bool:
        return self.relocating or (self.job is not None and self.job.running)

    @property
    def fraction(self) -> float | None:
        return self.done_bytes / self.total_bytes if self.total_bytes else None

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model_id, "dest": self.dest, "status": self.status, "done_bytes": self.done_bytes,
                "total_bytes": self.total_bytes, "job_id": self.job_id, "error": self.error}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Download | None:
        if not isinstance(d.get("model"), str) or not isinstance(d.get("dest"), str):
            return None
        status = d.get("status") if d.get("status") in STATUSES else "interrupted"
        if status == "downloading":  # no job of ours runs it now: the app stopped while it ran
            status = "interrupted"
        done = d.get("done_bytes")
        total = d.get("total_bytes")
        return cls(d["model"], d["dest"], status=status, done_bytes=done if isinstance(done, int) else 0,
                   total_bytes=total if isinstance(total, int) else None,
                   job_id=d.get("job_id") if isinstance(d.get("job_id"), str) else None,
                   error=d.get("error") if isinstance(d.get("error"), str) else None)


def read_downloads(data_dir: Path) -> list[Download]:
    """The unfinished downloads listed in <data_dir>/downloads.json (running ones read as interrupted)."""
    data = read_json(Path(data_dir) / DOWNLOADS_FILE) or {}
    items = data.get("downloads", []) if isinstance(data, dict) else []
    found = (Download.from_json(item) for item in items if isinstance(item, dict))
    return [d for d in found if d is not None]


class DownloadManager(QObject):
    """The app's downloads (see the module docstring)."""

    changed = Signal(str)  # model id whose entry changed (or left the list)
    completed = Signal(str, str)  # model id, folder: the model is in the library now
    write_failed = Signal(str)  # the list could not be saved (a full or read-only disk)

    def __init__(self, services: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.services = services
        self.path = Path(services.data_dir) / DOWNLOADS_FILE
        self.downloads: dict[str, Download] = {d.model_id: d for d in read_downloads(services.data_dir)}
        self.write_error: str | None = None

    # -- queries ----------------------------------------------------------------------------------
    def get(self, model_id: str) -> Download | None:
        """The list's entry for `model_id`, if it has one."""
        return self.downloads.get(model_id)

    def interrupted(self) -> list[Download]:
        """Downloads the app was running when it last stopped."""
        return [d for d in self.downloads.values() if d.status == "interrupted"]

    def dest_for(self, model_id: str) -> Path:
        """Where `model_id` downloads to: <models folder>/<owner>--<name>."""
        return self.services.models_dir() / model_id.replace("/", "--")

    # -- actions ----------------------------------------------------------------------------------
    def start(self, model_id: str, total_bytes: int | None = None) -> Download:
        """Start (or resume) downloading `model_id`; a download already running is left alone."""
        d = self.downloads.get(model_id)
        if d is not None and d.running:
            return d
        if d is None:
            d = Download(model_id, str(self.dest_for(model_id)), total_bytes=total_bytes)
            self.downloads[model_id] = d
        d.status, d.error, d.stop_reason, d.speed_bps, d.eta_s = "downloading", None, None, None, None
        d.meter = RateMeter()
        if total_bytes and not d.total_bytes:
            d.total_bytes = total_bytes
        if self._follow_models_folder(d):
            self._save()
            self.changed.emit(model_id)
            return d  # the job starts once the partial files are in the new folder
        self._start_job(d)
        return d

    def _start_job(self, d: Download) -> None:
        model_id = d.model_id
        token = stored_token()
        job = self.services.jobs.start("download", {"model": model_id, "dest": d.dest}, job_id=d.job_id,
                                       env={"HF_TOKEN": token} if token else None)
        d.job, d.job_id = job, job.job_id
        job.event.connect(lambda ev, d=d, job=job: self._on_event(d, job, ev))
        job.finished.connect(lambda ev, d=d, job=job: self._on_finished(d, job, ev))
        self._save()
        self.changed.emit(model_id)

    # -- the models folder moved ------------------------------------------------------------------
    def _follow_models_folder(self, d: Download) -> bool:
        """Point a stopped download at the current models folder; True when its partial files must move there
        first (they do, on a pool thread, and the job starts afterwards)."""
        old, new = Path(d.dest), self.dest_for(d.model_id)
        if mm.same_folder(old, new):
            return False
        old_staging, new_staging = staging_paths(old)[0], staging_paths(new)[0]
        if not old_staging.is_dir() or os.path.lexists(new_staging):
            d.dest = str(new)  # nothing to bring (or it is there already): continue in the new folder
            return False
        plan = mm.plan_entries(old.parent, new.parent, [old_staging.name])
        d.relocating = True

        def done(report: mm.MoveReport) -> None:
            d.relocating = False
            if old_staging.name in report.moved:
                d.dest = str(new)
            reason, d.stop_reason = d.stop_reason, None
            if reason == "cancel":
                self._discard(d)
                return
            if reason == "pause" or not report.complete:
                d.status = "paused" if reason == "pause" else "failed"
                if not report.complete and not report.cancelled:
                    d.error = (f"Its partial files could not move to the new models folder {new.parent}: "
                               f"{report.error or 'see the log'}. Resume tries again; nothing was lost.")
                self._save()
                self.changed.emit(d.model_id)
                return
            self._start_job(d)

        def failed(exc: BaseException) -> None:
            d.relocating, d.stop_reason, d.status = False, None, "failed"
            d.error = f"Its partial files could not move to the new models folder: {error_text(exc)}"
            self._save()
            self.changed.emit(d.model_id)

        run_in_background(lambda: mm.move_models(plan, cancelled=lambda: d.stop_reason is not None), done, failed)
        return True

    def carried_entries(self, folder: Path) -> list[str]:
        """The partial-file folders in `folder` of downloads that are stopped: a move of the models folder takes
        them along (follow_move then points the downloads there)."""
        names = []
        for d in self.downloads.values():
            staging = staging_paths(Path(d.dest))[0]
            if not d.running and mm.same_folder(staging.parent, folder) and staging.is_dir():
                names.append(staging.name)
        return names

    def follow_move(self, report: mm.MoveReport) -> None:
        """The models folder's entries moved (Settings page): stopped downloads whose partial files went along
        now continue in the new folder."""
        changed = []
        for d in self.downloads.values():
            old = Path(d.dest)
            if not d.running and mm.same_folder(old.parent, report.source) and \
                    staging_paths(old)[0].name in report.moved:
                d.dest = str(Path(report.dest) / old.name)
                changed.append(d.model_id)
        if changed:
            self._save()
            for model_id in changed:
                self.changed.emit(model_id)

    def pause(self, model_id: str) -> None:
        """Stop the download cleanly, keeping what has arrived so Resume continues from there."""
        d = self.downloads.get(model_id)
        if d is not None and d.running:
            d.stop_reason = "pause"
            if d.job is not None and d.job.running:
                d.job.cancel()  # else its files are moving: it stops when they are in place
            self.changed.emit(model_id)

    def resume(self, model_id: str) -> Download | None:
        """Continue a paused, interrupted or failed download."""
        return self.start(model_id) if model_id in self.downloads else None

    def resume_all(self) -> None:
        """Resume every interrupted download."""
        for d in self.interrupted():
            self.start(d.model_id)

    def cancel(self, model_id: str) -> None:
        """Stop the download and delete its partial files (the caller has asked the user)."""
        d = self.downloads.get(model_id)
        if d is None:
            return
        if d.running:
            d.stop_reason = "cancel"
            if d.job is not None and d.job.running:
                d.job.cancel()  # the files go once the job has let go of them (_on_finished)
            self.changed.emit(model_id)
            return
        self._discard(d)

    def shutdown(self) -> None:
        """The window is closing: save how far each download got. The JobManager stops the jobs; a running one
        stays listed as downloading, which the next start reads as interrupted and offers to resume."""
        self._save()

    # -- job events -------------------------------------------------------------------------------
    def _on_event(self, d: Download, job: QtJob, ev: dict[str, Any]) -> None:
        if d.job is not job:
            return
        kind = ev.get("event")
        if kind == "progress" and isinstance(ev.get("done"), int):
            d.done_bytes = ev["done"]
            if isinstance(ev.get("total"), int):
                d.total_bytes = ev["total"]
            d.speed_bps = d.meter.add(d.done_bytes)
            left = (d.total_bytes or 0) - d.done_bytes
            if d.speed_bps:
                d.eta_s = max(left, 0) / d.speed_bps
            elif isinstance(ev.get("eta_s"), (int, float)):
                d.eta_s = float(ev["eta_s"])
            self.changed.emit(d.model_id)
        elif kind == "error":
            message, hint = str(ev.get("message") or "the download failed"), ev.get("hint")
            d.error = f"{message}. {hint}" if hint else message

    def _on_finished(self, d: Download, job: QtJob, done: dict[str, Any]) -> None:
        if d.job is not job:
            return
        d.job = None
        d.speed_bps = d.eta_s = None
        status = str(done.get("status", "ok"))
        if status == "ok":  # even when a cancel came too late: the model is complete, so keep it
            self.downloads.pop(d.model_id, None)
            self._save()
            self.changed.emit(d.model_id)
            self.completed.emit(d.model_id, d.dest)
            return
        if d.stop_reason == "cancel":
            if job.handle is not None:
                job.handle.wait(5.0)  # the worker lets go of the files as it exits (Windows cannot delete them before)
            self._discard(d)
            return
        if status == "cancelled":
            d.status = "paused" if d.stop_reason == "pause" else "interrupted"
        else:
            d.status = "failed"
            d.error = d.error or "The download stopped unexpectedly; the job's log on the Jobs page has details."
        d.stop_reason = None
        self._save()
        self.changed.emit(d.model_id)

    # -- files ------------------------------------------------------------------------------------
    def _discard(self, d: Download) -> None:
        for p in staging_paths(Path(d.dest)):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        self.downloads.pop(d.model_id, None)
        self._save()
        self.changed.emit(d.model_id)

    def _save(self) -> None:
        try:
            write_json_atomic(self.path, {"downloads": [d.to_json() for d in self.downloads.values()]})
            self.write_error = None
        except OSError as exc:  # a full or read-only disk must not stop the download itself
            self.write_error = f"could not save the download list to {self.path}: {exc}"
            self.write_failed.emit(self.write_error)
