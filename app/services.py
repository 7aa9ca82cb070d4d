"""What every page shares: settings, the job manager (worker processes) and the hardware monitor.

Pages get one `Services` object. Nothing here imports torch: heavy work and even hardware detection run
in worker processes (`python -m bitsmith.engine.worker`) through QtJob; only RAM is read in-process
(psutil) because the status bar refreshes it every few seconds.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from bitsmith.engine import paths
from bitsmith.engine.jobclient import JobClient
from bitsmith.engine.jobfiles import read_json, write_json_atomic

from .qtjob import QtJob

SETTINGS_FILE = "settings.json"
DEFAULT_BPW_KEY = "quantize/default_bpw"
DEFAULT_BPW, MIN_DEFAULT_BPW, MAX_DEFAULT_BPW = 2.5, 2.2, 4.25  # the Settings page's range
HARDWARE_REFRESH_MS = 60_000  # free VRAM changes as other programs run; a detection costs ~0.2 s of CPU
RAM_REFRESH_MS = 5_000


class Settings(QObject):
    """Small app settings as one JSON file in the data folder, written atomically on every change."""

    changed = Signal(str)
    write_failed = Signal(str)  # what could not be saved and why (a full or read-only disk)

    def __init__(self, path: str | Path | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.path = Path(path) if path is not None else paths.data_dir() / SETTINGS_FILE
        self._data: dict[str, Any] = read_json(self.path) or {}
        self.write_error: str | None = None

    def get(self, key: str, default: Any = None) -> Any:
        """The stored value for `key`, or `default`."""
        return self._data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        """Store a JSON-friendly value (None removes the key) and save at once."""
        json.dumps(value)  # refuse what cannot be saved before changing anything
        if value is None:
            self._data.pop(key, None)
        else:
            self._data[key] = value
        try:
            write_json_atomic(self.path, self._data)
            self.write_error = None
        except OSError as exc:  # a read-only or full disk must not break the window
            self.write_error = f"could not save settings to {self.path}: {exc}"
            self.write_failed.emit(self.write_error)
        self.changed.emit(key)

    def all(self) -> dict[str, Any]:
        """A copy of every setting."""
        return dict(self._data)


def default_budget(settings: Settings) -> float:
    """The Settings page's default budget in bits per weight: 2.5 when unset or unreadable (a hand-edited file),
    kept within the range the Settings page offers."""
    value = settings.get(DEFAULT_BPW_KEY, DEFAULT_BPW)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        value = DEFAULT_BPW
    return round(min(max(float(value), MIN_DEFAULT_BPW), MAX_DEFAULT_BPW), 2)


class JobManager(QObject):
    """Starts worker jobs for the pages and keeps the list of jobs this window started."""

    jobs_changed = Signal(int)  # number of running jobs
    job_started = Signal(object)  # QtJob
    job_finished = Signal(object)

    def __init__(self, env: Mapping[str, str] | None = None, client: JobClient | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.env = dict(env or {})
        self.client = client or JobClient()
        self.jobs: list[QtJob] = []  # tracked: shown in the running count and the Jobs page
        self._all: list[QtJob] = []  # every worker this window started, closed on shutdown

    def start(self, kind: str, params: Mapping[str, Any] | None = None, *, job_id: str | None = None,
              track: bool = True, env: Mapping[str, str] | None = None) -> QtJob:
        """Start a job in a worker process; `track` False keeps it out of the running count (e.g. probes);
        `env` adds variables for this job only (a secret such as HF_TOKEN, kept out of request.json)."""
        job = QtJob(kind, params, client=self.client, env={**self.env, **(env or {})}, job_id=job_id, parent=self)
        self._all = [j for j in self._all if j.running or j.handle is None]
        self._all.append(job)
        if track:
            self.jobs.append(job)
            job.finished.connect(lambda _ev, j=job: self._on_finished(j))
        job.start()
        if track:
            self.job_started.emit(job)
            self.jobs_changed.emit(self.running_count())
        return job

    def _on_finished(self, job: QtJob) -> None:
        self.job_finished.emit(job)
        self.jobs_changed.emit(self.running_count())

    def running_count(self) -> int:
        """How many tracked jobs are still running."""
        return sum(1 for j in self.jobs if j.running)

    def shutdown(self, grace_s: float = 3.0) -> None:
        """Stop every running worker (window closing): cancel all, then wait for each."""
        for job in self._all:
            if job.running:
                job.cancel()
        for job in self._all:
            job.close(grace_s)


class HardwareMonitor(QObject):
    """The machine's profile from the `hardware` job (run in a worker), plus RAM refreshed in-process."""

    profile_changed = Signal(dict)
    failed = Signal(str)
    ram_changed = Signal(object, object)  # available, total bytes (Python ints: beyond 32 bits)

    def __init__(self, jobs: JobManager, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.jobs = jobs
        self.profile: dict[str, Any] | None = None
        self.error: str | None = None
        self._job: QtJob | None = None
        self.detected_at: float | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(HARDWARE_REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        self._ram_timer = QTimer(self)
        self._ram_timer.setInterval(RAM_REFRESH_MS)
        self._ram_timer.timeout.connect(self._read_ram)

    def start(self) -> None:
        """Detect now and then every minute; read RAM every few seconds."""
        self.refresh()
        self._timer.start()
        self._read_ram()
        self._ram_timer.start()

    def stop(self) -> None:
        """Stop the timers (the window is closing)."""
        self._timer.stop()
        self._ram_timer.stop()

    def refresh(self) -> None:
        """Run the hardware job unless one is already running."""
        if self._job is not None and self._job.running:
            return
        job = self.jobs.start("hardware", {}, track=False)
        job.event.connect(self._on_event)
        job.finished.connect(self._on_finished)
        self._job = job

    def _on_event(self, ev: dict) -> None:
        if ev.get("event") == "artifact" and ev.get("kind") == "hardware_profile":
            profile = ev.get("profile")
            if isinstance(profile, dict):
                self.profile, self.error, self.detected_at = profile, None, time.time()
                self.profile_changed.emit(profile)
        elif ev.get("event") == "error":
            self.error = f"{ev.get('message', 'hardware detection failed')}. {ev.get('hint', '')}".strip()

    def _on_finished(self, done: dict) -> None:
        if done.get("status") != "ok" and self.profile is None:
            self.failed.emit(self.error or "hardware detection failed")

    def _read_ram(self) -> None:
        try:
            import psutil

            mem = psutil.virtual_memory()
        except Exception:  # noqa: BLE001 - the status bar just keeps its last figure
            return
        self.ram_changed.emit(int(mem.available), int(mem.total))


class Services:
    """The shared objects handed to every page."""

    def __init__(self, env: Mapping[str, str] | None = None, settings: Settings | None = None) -> None:
        self.env = dict(env or {})
        self.settings = settings or Settings(self.data_dir / SETTINGS_FILE)
        self.jobs = JobManager(self.env)
        chosen = self.settings.get("models_dir")
        if isinstance(chosen, str) and chosen:  # the Settings page's models folder, for the workers too
            self.jobs.env[paths.MODELS_ENV] = chosen
        self.hardware = HardwareMonitor(self.jobs)
        self._chat_store: Any = None
        self._downloads: Any = None
        # Set by the main window: show page `name` and return it (how "Chat with it" reaches the chat page).
        self.open_page: Callable[[str], Any] | None = None

    def models_dir(self) -> Path:
        """Where models live: the Settings page's choice, else BITSMITH_MODELS_DIR or <data dir>/models."""
        chosen = self.settings.get("models_dir")
        if isinstance(chosen, str) and chosen:
            return Path(chosen).expanduser()
        return paths.models_dir({**os.environ, **self.env})

    def jobs_dir(self) -> Path:
        """The folder with one sub-folder per job."""
        return paths.jobs_dir({**os.environ, **self.env})

    @property
    def data_dir(self) -> Path:
        """Bitsmith's data folder (BITSMITH_HOME when set)."""
        return paths.data_dir({**os.environ, **self.env})

    def chat_store(self) -> Any:
        """The conversation database, opened on first use (app.chat.store.ChatStore)."""
        if self._chat_store is None:
            from .chat.store import ChatStore

            self._chat_store = ChatStore(self.data_dir / "chats.sqlite3")
        return self._chat_store

    def download_manager(self) -> Any:
        """The app's one list of downloads (app.downloads.DownloadManager), made on first use: the Models page runs
        the downloads, and the Settings page moves their partial files with the models folder."""
        if self._downloads is None:
            from .downloads import DownloadManager

            self._downloads = DownloadManager(self)
        return self._downloads

    def shutdown(self) -> None:
        """Stop timers and workers, close the database."""
        if self._downloads is not None:
            self._downloads.shutdown()  # how far each download got, for the next start
        self.hardware.stop()
        self.jobs.shutdown()
        if self._chat_store is not None:
            self._chat_store.close()
            self._chat_store = None
