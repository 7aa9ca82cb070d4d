"""Download the files a model needs from the Hub: resumable, hash-verified, disk-checked and cancellable.

Why not `snapshot_download`: huggingface_hub 2.4 downloads each file into a process-unique `*.incomplete`
file that it deletes when the download fails, so an interrupted download (cancel, crash, network loss
beyond its retries) starts over; it checks only the size of what it received, never the content hash; and
a snapshot folder in its cache fills file by file, so a half-downloaded model looks like a model. Here:

* the file list, sizes and hashes come from one model-info call (`blobs=true`), pinned to a commit;
* files are fetched over huggingface_hub's own HTTP session (its auth headers, offline switch and user
  agent) with Range requests into `<name>.part` files kept in a staging folder next to the destination,
  so a later run resumes where the last one stopped;
* every file is checked against the Hub's sha256 (LFS files) or git blob id (small files) once complete;
  a corrupted file is deleted and fetched again once, then reported;
* free disk space is checked before a byte is written;
* the staging folder is renamed to the destination only when every file is verified, so the model
  folder never exists half-done. A `.bitsmith-download.json` manifest in it records model, commit and hashes.

Offline (HF_HUB_OFFLINE=1, or the Hub unreachable) the function serves a complete local copy — a previous
Bitsmith download or a complete snapshot in the huggingface_hub cache — or says exactly what is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bitsmith.engine.errors import (
    BadInputError,
    BitsmithError,
    CancelledError,
    DiskFullError,
    NetworkError,
    UnsupportedModelError,
)
from bitsmith.engine.hub_common import (
    check_model_id,
    endpoint,
    hub_errors,
    is_connection_error,
    is_offline,
    models_dir,
    token_was_sent,
    translate,
)

MANIFEST = ".bitsmith-download.json"
STATE = ".bitsmith-state.json"
PARTS = ".parts"
CHUNK_SIZE = 1 << 20
RETRY_WAIT_S = 1.0
PROGRESS_EVERY_S = 0.1
DISK_MARGIN_BYTES = 64 << 20
DISK_MARGIN_FRACTION = 0.01

SMALL_FILES = frozenset({
    "config.json", "generation_config.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "tokenizer.model", "vocab.json", "merges.txt", "vocab.txt",
    "chat_template.jinja", "chat_template.json",
    "quant_strategy.json", "bitsmith.json",
    "README.md", "LICENSE", "LICENSE.txt", "LICENSE.md", "USE_POLICY.md",
})
SMALL_SUFFIXES = (".tiktoken",)
SMALL_FOLDERS = ("additional_chat_templates/",)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
NOT_WEIGHTS = ("training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state")
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_INDEX = "pytorch_model.bin.index.json"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a repo at a commit, with what the Hub says its content is."""

    name: str
    size: int | None
    sha256: str | None = None  # LFS files
    git_sha1: str | None = None  # small files: git blob id

    @property
    def is_pickle(self) -> bool:
        return self.name.endswith(PICKLE_SUFFIXES)


@dataclass
class DownloadPlan:
    """What a download of a model will fetch: resolved commit and the files with their sizes."""

    model_id: str
    revision: str | None
    commit: str
    files: list[RemoteFile]

    @property
    def total_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files)


@dataclass
class DownloadProgress:
    """A progress report: the current file and the whole download, in bytes, plus this session's speed."""

    file: str
    file_done: int
    file_total: int | None
    done: int
    total: int
    speed_bps: float
    files_done: int
    files_total: int


@dataclass
class DownloadResult:
    """Where a model's files are, which commit they are, and how they got there."""

    model_id: str
    path: Path
    commit: str | None
    files: list[str]
    total_bytes: int
    downloaded_bytes: int
    source: str  # "hub" (downloaded now), "local" (already here), "hf-cache" (huggingface_hub's cache)
    revision: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        out = asdict(self)
        out["path"] = str(self.path)
        return out


ProgressCallback = Callable[[DownloadProgress], None]


# -- choosing files -------------------------------------------------------------------------------------------


def _is_small_wanted(name: str) -> bool:
    if name.startswith(SMALL_FOLDERS):
        return name.endswith((".jinja", ".json"))
    return "/" not in name and (name in SMALL_FILES or name.endswith(SMALL_SUFFIXES))


def select_files(
    files: Iterable[RemoteFile], index: dict | None, allow_pickle: bool, model_id: str
) -> list[RemoteFile]:
    """The files a model needs: config, tokenizer, chat template, card, and one copy of the weights.

    Weights are safetensors whenever the repo has them (the shards named by model.safetensors.index.json,
    else model.safetensors, else the top-level *.safetensors). Pickle weights (*.bin, *.pt, *.pth) are taken
    only when there are no safetensors and `allow_pickle` is set: loading a pickle can run arbitrary code.
    `index` is the parsed weight index (safetensors or, with allow_pickle, the pickle one), if the repo has one.
    """
    by_name = {f.name: f for f in files}
    chosen = [f for name, f in by_name.items() if _is_small_wanted(name)]
    top = [n for n in by_name if "/" not in n]
    if index is not None:
        shards = sorted(set(index.get("weight_map", {}).values()))
        missing = [s for s in shards if s not in by_name]
        if missing:
            raise UnsupportedModelError(
                f"{model_id}'s weight index names files the repo does not have: {', '.join(missing[:3])}",
                hint="the repo looks broken; pick another revision or model",
            )
        index_name = SAFETENSORS_INDEX if SAFETENSORS_INDEX in by_name else PICKLE_INDEX
        weights = [index_name, *shards]
    elif "model.safetensors" in by_name:
        weights = ["model.safetensors"]
    elif any(n.endswith(".safetensors") for n in top):
        weights = [n for n in top if n.endswith(".safetensors")]
    else:
        pickles = [n for n in top if n.endswith(PICKLE_SUFFIXES) and not n.startswith(NOT_WEIGHTS)]
        if not pickles:
            ggufs = [n for n in by_name if n.endswith(".gguf")]
            what = f"only GGUF files ({ggufs[0]}, …)" if ggufs else "no weight files Bitsmith can read"
            raise UnsupportedModelError(
                f"{model_id} has {what}",
                hint="pick a model with safetensors weights (most transformers models on the Hub have them)",
            )
        if not allow_pickle:
            raise UnsupportedModelError(
                f"{model_id} has no safetensors weights, only pickle files ({', '.join(pickles[:3])})",
                hint="loading a pickle can run code hidden in it: if you trust the authors, pass --allow-pickle "
                "(allow_pickle=True); otherwise look for a safetensors conversion of this model",
            )
        weights = [PICKLE_INDEX] if PICKLE_INDEX in by_name else []
        weights += [n for n in pickles if n != PICKLE_INDEX]
    chosen += [by_name[n] for n in weights if n not in {f.name for f in chosen}]
    if "config.json" not in by_name:
        raise UnsupportedModelError(
            f"{model_id} has no config.json", hint="Bitsmith needs a transformers-style model repo"
        )
    return sorted(chosen, key=lambda f: (f.size or 0, f.name))


def _api(token: str | bool | None) -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint(), token=token)


def _resolve_url(model_id: str, commit: str, name: str) -> str:
    from huggingface_hub import hf_hub_url

    return hf_hub_url(model_id, name, revision=commit, endpoint=endpoint())


def _headers(token: str | bool | None) -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers

    headers = build_hf_headers(token=token, library_name="bitsmith")
    headers["Accept-Encoding"] = "identity"  # sizes and Range offsets must be those of the stored bytes
    return headers


def _get_json(url: str, token: str | bool | None) -> dict:
    from huggingface_hub.utils import get_session, hf_raise_for_status

    response = get_session().get(url, headers=_headers(token), follow_redirects=True, timeout=30)
    hf_raise_for_status(response)
    return json.loads(response.content)


def plan_download(
    model_id: str, revision: str | None = None, token: str | bool | None = None, allow_pickle: bool = False,
    local: Path | None = None,
) -> DownloadPlan:
    """Ask the Hub which files `model_id` at `revision` needs, with sizes and hashes (no weights fetched).

    `local`: a previous download of the model; its weight index is reused when it is of the same commit.
    """
    model_id = check_model_id(model_id)
    with hub_errors(model_id, token=token):
        info = _api(token).model_info(model_id, revision=revision, files_metadata=True)
        remote = [
            RemoteFile(
                s.rfilename,
                s.lfs.size if s.lfs else s.size,
                sha256=s.lfs.sha256 if s.lfs else None,
                git_sha1=None if s.lfs else s.blob_id,
            )
            for s in info.siblings or []
        ]
        names = {f.name for f in remote}
        index = None
        has_st = any(n.endswith(".safetensors") for n in names)
        index_name = SAFETENSORS_INDEX if SAFETENSORS_INDEX in names else (
            PICKLE_INDEX if PICKLE_INDEX in names and allow_pickle and not has_st else None
        )
        if index_name:
            manifest = read_manifest(local) if local is not None else None
            if manifest and manifest.get("commit") == info.sha and (local / index_name).is_file():
                index = json.loads((local / index_name).read_text())
            else:
                index = _get_json(_resolve_url(model_id, info.sha, index_name), token)
    if not info.sha:
        raise NetworkError(f"the Hub did not say which commit {model_id} is at", hint="try again later")
    return DownloadPlan(model_id, revision, info.sha, select_files(remote, index, allow_pickle, model_id))


# -- local copies ---------------------------------------------------------------------------------------------


def default_dest(model_id: str) -> Path:
    """The folder a model downloads to by default: <models dir>/<owner>--<name>."""
    return models_dir() / model_id.replace("/", "--")


def staging_dir(dest: Path) -> Path:
    """Where a download into `dest` keeps its partial files (public: the app deletes them on cancel)."""
    return dest.parent / f".{dest.name}.partial"


def read_manifest(folder: Path) -> dict | None:
    """The download manifest of a Bitsmith model folder, or None."""
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _manifest_matches(manifest: dict | None, model_id: str, revision: str | None, folder: Path) -> bool:
    if not manifest or manifest.get("model_id") != model_id:
        return False
    if revision and revision not in (manifest.get("revision"), manifest.get("commit")) and not (
        len(revision) >= 7 and str(manifest.get("commit", "")).startswith(revision)
    ):
        return False
    return all(
        (folder / name).is_file() and (meta.get("size") is None or (folder / name).stat().st_size == meta["size"])
        for name, meta in manifest.get("files", {}).items()
    )


def _missing_in_snapshot(folder: Path) -> list[str]:
    """What a transformers model folder lacks: config, weights (per its index), tokenizer."""
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        except (OSError, ValueError):
            shards = [SAFETENSORS_INDEX]
        missing += [s for s in shards if not (folder / s).is_file()]
    elif not (folder / "model.safetensors").is_file() and not any(folder.glob("*.safetensors")):
        missing.append("model.safetensors")
    has_tokenizer = (folder / "tokenizer.json").is_file() or (folder / "tokenizer.model").is_file() or (
        (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    )
    if not has_tokenizer:
        missing.append("tokenizer.json")
    return missing


def _hf_cache_snapshot(model_id: str, revision: str | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        hit = try_to_load_from_cache(model_id, "config.json", revision=revision or "main")
    except Exception:  # a malformed cache must not break the offline path
        return None
    return Path(hit).parent if isinstance(hit, str) else None


def _fmt(n: float | None) -> str:
    if n is None:
        return "? B"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def find_local(model_id: str, revision: str | None = None, dest: str | Path | None = None) -> DownloadResult | None:
    """A complete local copy of `model_id` (Bitsmith download or huggingface_hub cache), without the network."""
    model_id = check_model_id(model_id)
    folder = Path(dest).expanduser() if dest else default_dest(model_id)
    manifest = read_manifest(folder)
    if _manifest_matches(manifest, model_id, revision, folder):
        assert manifest is not None
        files = sorted(manifest.get("files", {}))
        total = sum(m.get("size") or 0 for m in manifest["files"].values())
        return DownloadResult(model_id, folder, manifest.get("commit"), files, total, 0, "local",
                              manifest.get("revision"))
    snapshot = _hf_cache_snapshot(model_id, revision)
    if snapshot is not None and not _missing_in_snapshot(snapshot):
        files = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
        total = sum((snapshot / f).stat().st_size for f in files)
        return DownloadResult(model_id, snapshot, snapshot.name, files, total, 0, "hf-cache", revision)
    return None


def _serve_local(model_id: str, revision: str | None, dest: Path, reason: str) -> DownloadResult:
    """Offline path: the local copy, or a NetworkError that lists what is missing."""
    found = find_local(model_id, revision, dest)
    if found is not None:
        found.notes.append(f"{reason}; using the local copy")
        return found
    hint = f"connect to the internet and run `bitsmith download {model_id}` again (it resumes where it stopped)"
    if is_offline():
        hint += ", with HF_HUB_OFFLINE unset"
    state = _read_state(staging_dir(dest))
    if state and state.get("model_id") == model_id:
        planned = state.get("files", {})
        missing = [n for n in planned if n not in state.get("done", {})]
        shown = ", ".join(f"{n} ({_fmt(planned[n])})" for n in missing[:6]) + (" …" if len(missing) > 6 else "")
        raise NetworkError(
            f"{reason}, and {model_id} is only partly downloaded ({len(planned) - len(missing)} of "
            f"{len(planned)} files; missing: {shown})",
            hint=hint,
        )
    snapshot = _hf_cache_snapshot(model_id, revision)
    if snapshot is not None:
        missing = _missing_in_snapshot(snapshot)
        raise NetworkError(
            f"{reason}, and the huggingface_hub cache has only part of {model_id} (missing: {', '.join(missing)})",
            hint=hint,
        )
    raise NetworkError(f"{reason}, and {model_id} is not downloaded (looked in {dest} and the Hugging Face cache)",
                       hint=hint)


# -- downloading ----------------------------------------------------------------------------------------------


def _read_state(staging: Path) -> dict | None:
    try:
        return json.loads((staging / STATE).read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _part_path(staging: Path, f: RemoteFile) -> Path:
    key = f.sha256 or f.git_sha1 or hashlib.sha1(f.name.encode()).hexdigest()
    return staging / PARTS / f"{key}.part"


def _file_hash(f: RemoteFile) -> str | None:
    return f.sha256 or f.git_sha1


def _new_hasher(f: RemoteFile) -> tuple[Any, str]:
    """(hasher, kind): sha256 of the content for LFS files, git's blob sha1 for small ones."""
    if f.sha256 or not (f.git_sha1 and f.size is not None):
        return hashlib.sha256(), "sha256"
    h = hashlib.sha1()
    h.update(b"blob %d\0" % f.size)
    return h, "git-sha1"


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def check_disk(needed: int, where: Path, model_id: str) -> None:
    """Raise DiskFullError if `where` lacks `needed` bytes plus a safety margin."""
    margin = DISK_MARGIN_BYTES + int(needed * DISK_MARGIN_FRACTION)
    anchor = _existing_ancestor(where)
    free = shutil.disk_usage(anchor).free
    if needed + margin > free:
        raise DiskFullError(
            f"not enough disk space to download {model_id}: it needs {_fmt(needed)} (plus {_fmt(margin)} to spare) "
            f"and {anchor} has {_fmt(free)} free",
            hint="free some space, or download to another drive with --dir (or set BITSMITH_MODELS_DIR)",
        )


class _Corrupted(Exception):
    pass


class _Transfer:
    """Fetches one plan's files into a staging folder, reporting progress and honouring cancel."""

    def __init__(self, plan: DownloadPlan, staging: Path, token: str | bool | None,
                 progress: ProgressCallback | None, cancel: threading.Event | None, retries: int) -> None:
        self.plan, self.staging, self.token = plan, staging, token
        self.progress, self.cancel, self.retries = progress, cancel, retries
        self.done_bytes = 0  # bytes of the plan present on disk (finished files + current part)
        self.session_bytes = 0  # bytes received in this call
        self.t0 = time.monotonic()
        self.last_report = 0.0
        self.files_done = 0

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise CancelledError(
                f"download of {self.plan.model_id} cancelled",
                hint="what was downloaded is kept; run the same download again to resume",
            )

    def report(self, f: RemoteFile, have: int, force: bool = False, finished: bool = False) -> None:
        now = time.monotonic()
        if self.progress is None or (not force and now - self.last_report < PROGRESS_EVERY_S):
            return
        self.last_report = now
        elapsed = max(now - self.t0, 1e-6)
        self.progress(DownloadProgress(
            file=f.name, file_done=have, file_total=f.size, done=self.done_bytes + (0 if finished else have),
            total=self.plan.total_bytes, speed_bps=self.session_bytes / elapsed,
            files_done=self.files_done, files_total=len(self.plan.files),
        ))

    def fetch(self, f: RemoteFile) -> str:
        """Download `f` to its final name in staging (resuming a .part), verify it, return its hash."""
        part = _part_path(self.staging, f)
        part.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(2):
            try:
                digest, kind = self._fetch_part(f, part)
            except _Corrupted as exc:
                part.unlink(missing_ok=True)
                if attempt == 1:
                    raise NetworkError(
                        f"the download of {f.name} from {self.plan.model_id} was corrupted ({exc}); "
                        "the damaged file was deleted",
                        hint="run the download again; if it keeps failing, a proxy or antivirus may be altering "
                        "downloads",
                    ) from None
                continue
            target = self.staging / f.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, target)
            return f"{kind}:{digest}"
        raise AssertionError("unreachable")

    def _fetch_part(self, f: RemoteFile, part: Path) -> tuple[str, str]:
        cur = _Part(f)
        cur.have = part.stat().st_size if part.exists() else 0
        if f.size is not None and cur.have > f.size:
            part.unlink()
            cur.have = 0
        if cur.have:
            with part.open("rb") as fh:
                for block in iter(lambda: fh.read(CHUNK_SIZE), b""):
                    cur.hasher.update(block)
        failures = 0
        while f.size is None or cur.have < f.size:
            self.check_cancel()
            before = cur.have
            try:
                self._stream(f, part, cur)
                if f.size is None:
                    break
                if cur.have < f.size:
                    raise _Incomplete(f"connection closed after {cur.have} of {f.size} bytes")
            except BitsmithError:
                raise
            except Exception as exc:
                if not _transient(exc):
                    raise translate(exc, self.plan.model_id, f.name, token_was_sent(self.token)) from exc
                failures = 1 if cur.have > before else failures + 1  # progress resets the count
                if failures > self.retries:
                    raise NetworkError(
                        f"the download of {f.name} from {self.plan.model_id} kept failing "
                        f"({type(exc).__name__}: {exc})",
                        hint="check your connection; the data received so far is kept, so running the same "
                        "download again resumes it",
                    ) from exc
                time.sleep(RETRY_WAIT_S * failures)
        if f.size is not None and cur.have != f.size:
            raise _Corrupted(f"size {cur.have}, expected {f.size}")
        digest = cur.hasher.hexdigest()
        expected = f.sha256 if cur.kind == "sha256" else f.git_sha1
        if expected and digest != expected:
            raise _Corrupted(f"{cur.kind} {digest[:12]}…, expected {expected[:12]}…")
        return digest, cur.kind

    def _stream(self, f: RemoteFile, part: Path, cur: _Part) -> None:
        """One GET (with Range when resuming) appended to `part`; `cur` tracks bytes and hash as they land."""
        from huggingface_hub import constants
        from huggingface_hub.utils import get_session, hf_raise_for_status

        headers = _headers(self.token)
        if cur.have:
            headers["Range"] = f"bytes={cur.have}-"
        url = _resolve_url(self.plan.model_id, self.plan.commit, f.name)
        timeout = max(constants.HF_HUB_DOWNLOAD_TIMEOUT, 30)
        with get_session().stream("GET", url, headers=headers, follow_redirects=True, timeout=timeout) as response:
            if response.status_code == 416:  # our part does not fit the file: start over (counts as a failure)
                part.unlink(missing_ok=True)
                cur.reset()
                raise _Incomplete("the server refused to resume (416)")
            if response.status_code >= 400:
                response.read()
                hf_raise_for_status(response)
            mode = "ab"
            if cur.have and response.status_code != 206:  # Range ignored: the body is the whole file
                mode = "wb"
                cur.reset()
            self.report(f, cur.have, force=True)
            try:
                with part.open(mode) as out:
                    for chunk in response.iter_bytes():  # as received: a dropped link loses nothing
                        self.check_cancel()
                        out.write(chunk)
                        cur.hasher.update(chunk)
                        cur.have += len(chunk)
                        self.session_bytes += len(chunk)
                        self.report(f, cur.have)
            except OSError as exc:
                if getattr(exc, "errno", None) == 28:  # ENOSPC
                    raise DiskFullError(
                        f"the disk filled up while downloading {f.name}",
                        hint="free some space and run the download again; it resumes where it stopped",
                    ) from exc
                raise


class _Part:
    """Bytes on disk and the running hash of one file being downloaded (kept consistent with each other)."""

    def __init__(self, f: RemoteFile) -> None:
        self.f = f
        self.reset()

    def reset(self) -> None:
        self.have = 0
        self.hasher, self.kind = _new_hasher(self.f)


class _Incomplete(Exception):
    pass


def _transient(exc: BaseException) -> bool:
    import httpx2
    from huggingface_hub import errors as hf

    if isinstance(exc, _Incomplete):
        return True
    if isinstance(exc, hf.OfflineModeIsEnabled):
        return False
    if isinstance(exc, httpx2.TransportError):
        return True
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return isinstance(exc, hf.HfHubHTTPError) and status is not None and (status >= 500 or status in (408, 429))


def _prepare_dest(dest: Path, model_id: str) -> None:
    """Refuse to replace a folder that is not a previous Bitsmith download of a model."""
    if dest.exists() and not dest.is_dir():
        raise BadInputError(f"{dest} exists and is a file", hint="choose a folder path with --dir")
    if dest.is_dir() and any(dest.iterdir()) and read_manifest(dest) is None:
        raise BadInputError(
            f"{dest} already exists and is not a Bitsmith download",
            hint="choose a new or empty folder with --dir; Bitsmith never overwrites other files",
        )


def _publish(staging: Path, dest: Path) -> None:
    """Swap the finished staging folder into place so `dest` only ever appears complete."""
    old = None
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{os.getpid()}-{int(time.time())}"
        os.replace(dest, old)
    os.replace(staging, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def download_model(
    model_id: str,
    *,
    revision: str | None = None,
    dest: str | Path | None = None,
    token: str | bool | None = None,
    allow_pickle: bool = False,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    retries: int = 5,
) -> DownloadResult:
    """Download what `model_id` needs into `dest` (default <models dir>/<owner>--<name>); see module docstring.

    `token`: a Hub token for gated/private models (default: HF_TOKEN or the saved login); never logged.
    `progress` is called with DownloadProgress reports (it may raise CancelledError to stop); `cancel` is an
    Event checked between and within files. Partial data survives cancel, errors and crashes, and the next call
    resumes it.
    """
    model_id = check_model_id(model_id)
    dest = (Path(dest).expanduser() if dest else default_dest(model_id)).absolute()
    if is_offline():
        return _serve_local(model_id, revision, dest, "offline mode is on (HF_HUB_OFFLINE=1)")
    try:
        plan = plan_download(model_id, revision, token, allow_pickle, local=dest)
    except NetworkError as exc:
        if exc.__cause__ is not None and is_connection_error(exc.__cause__):
            return _serve_local(model_id, revision, dest, f"cannot reach the Hub at {endpoint()}")
        raise

    manifest = read_manifest(dest)
    if _manifest_matches(manifest, model_id, None, dest) and manifest and manifest.get("commit") == plan.commit \
            and set(manifest.get("files", {})) >= {f.name for f in plan.files}:
        return DownloadResult(model_id, dest, plan.commit, sorted(manifest["files"]), plan.total_bytes, 0,
                              "local", revision)
    _prepare_dest(dest, model_id)

    staging = staging_dir(dest)
    state = _read_state(staging) or {}
    if state.get("model_id") != model_id:
        state = {}
    done: dict[str, str] = {
        f.name: state["done"][f.name]
        for f in plan.files
        if f.name in state.get("done", {}) and (staging / f.name).is_file()
        and (staging / f.name).stat().st_size == f.size
        and state["done"][f.name].split(":", 1)[-1] == _file_hash(f)
    }
    needed = sum(
        (f.size or 0) - (_part_path(staging, f).stat().st_size if _part_path(staging, f).exists() else 0)
        for f in plan.files if f.name not in done
    )
    check_disk(max(needed, 0), dest.parent, model_id)

    from huggingface_hub.utils import WeakFileLock

    dest.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(dest.parent / f".{dest.name}.lock"):
        manifest = read_manifest(dest)  # another process may have finished it while we waited for the lock
        if manifest and manifest.get("commit") == plan.commit and _manifest_matches(manifest, model_id, None, dest):
            return DownloadResult(model_id, dest, plan.commit, sorted(manifest["files"]), plan.total_bytes, 0,
                                  "local", revision)
        staging.mkdir(parents=True, exist_ok=True)
        state = {"model_id": model_id, "commit": plan.commit, "revision": revision,
                 "files": {f.name: f.size for f in plan.files}, "done": done}
        _write_json(staging / STATE, state)
        transfer = _Transfer(plan, staging, token, progress, cancel, retries)
        for f in plan.files:
            if f.name in done:
                transfer.done_bytes += f.size or 0
                transfer.files_done += 1
                continue
            transfer.check_cancel()
            done[f.name] = transfer.fetch(f)
            _write_json(staging / STATE, state)
            size = (staging / f.name).stat().st_size
            transfer.done_bytes += size
            transfer.files_done += 1
            transfer.report(f, size, force=True, finished=True)

        wanted = {f.name for f in plan.files}
        shutil.rmtree(staging / PARTS, ignore_errors=True)
        (staging / STATE).unlink(missing_ok=True)
        for p in sorted(staging.rglob("*"), reverse=True):  # drop leftovers of an older plan
            rel = p.relative_to(staging).as_posix()
            if p.is_file() and rel not in wanted:
                p.unlink()
            elif p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        _write_json(staging / MANIFEST, {
            "model_id": model_id, "revision": revision, "commit": plan.commit, "endpoint": endpoint(),
            "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": {f.name: {"size": f.size, "hash": done[f.name]} for f in plan.files},
        })
        _publish(staging, dest)
    return DownloadResult(model_id, dest, plan.commit, sorted(wanted), plan.total_bytes, transfer.session_bytes,
                          "hub", revision)
