"""Training records from a file, a folder or a Hub dataset: instruction pairs, chats, or plain text.

Formats (one record per JSONL line, or a JSON array of records):

* Alpaca: ``{"instruction": ..., "input": ..., "output": ...}`` (``input`` and ``system`` optional);
* chat: ``{"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}``, or ShareGPT's
  ``{"conversations": [{"from": "human"|"gpt"|"system", "value": ...}]}``;
* prompt / completion: ``{"prompt": ..., "completion": ...}``;
* plain text: ``{"text": ...}`` lines, a ``.txt`` / ``.md`` file, or a folder of such files (one document per
  file). In one text file, documents are separated by two or more blank lines (or form feeds); a file
  without such separators is split into paragraphs.

Every record is one *document*: the held-out split never cuts one in two. A malformed record is reported
with its line number and what is wrong; ``on_error="skip"`` skips it (and counts it) instead of stopping.
``hub:owner/name`` (or an ``owner/name`` that is not a local path) downloads a dataset's JSON / JSONL /
parquet files from the Hugging Face Hub when online; tatsu-lab/alpaca is the reference.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bitsmith.engine.errors import BadInputError, NetworkError

TEXT_SUFFIXES = (".txt", ".md", ".text", ".rst")
ROLES = ("system", "user", "assistant")
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "system": "system", "model": "assistant"}
_HUB_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_MAX_LISTED = 5


@dataclass(frozen=True)
class Record:
    """One training document: a chat (`messages`, loss on the assistant turns) or plain `text` (loss on all)."""

    kind: str  # "chat" or "text"
    messages: tuple[tuple[str, str], ...] = ()
    text: str = ""
    where: str = ""  # "file:line" for messages about this record


@dataclass
class Dataset:
    """The records of one source and what was skipped on the way."""

    records: list[Record]
    source: str
    skipped: list[str] = field(default_factory=list)  # "file:line: what is wrong", one per skipped record

    @property
    def kinds(self) -> set[str]:
        """The record kinds present ("chat", "text")."""
        return {r.kind for r in self.records}


class _Bad(Exception):
    """A malformed record (internal: turned into BadInputError or a skip)."""


def _text(value: Any, name: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise _Bad(f"{name!r} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise _Bad(f"{name!r} is empty")
    return value


def _chat(messages: Any, key: str = "messages") -> tuple[tuple[str, str], ...]:
    if not isinstance(messages, list) or not messages:
        raise _Bad(f"{key!r} must be a non-empty list of messages")
    out = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise _Bad(f"{key}[{i}] must be an object with 'role' and 'content'")
        if key == "conversations":
            role = _SHAREGPT_ROLES.get(str(msg.get("from", "")).lower())
            content = msg.get("value")
            if role is None:
                raise _Bad(f"{key}[{i}] has 'from' {msg.get('from')!r}; expected human, gpt or system")
        else:
            role, content = msg.get("role"), msg.get("content")
            if role not in ROLES:
                raise _Bad(f"{key}[{i}] has role {role!r}; expected one of {', '.join(ROLES)}")
        out.append((role, _text(content, f"{key}[{i}].content", allow_empty=role != "assistant")))
    if not any(role == "assistant" for role, _ in out):
        raise _Bad(f"{key!r} has no assistant message, so there is nothing to learn")
    return tuple(out)


def parse_record(row: Any, where: str = "") -> Record:
    """One JSON value -> Record; BadInputError naming `where` and what is wrong."""
    try:
        return _parse(row, where)
    except _Bad as exc:
        raise BadInputError(f"{where}: {exc}" if where else str(exc), _HINT_FORMATS) from None


def _parse(row: Any, where: str) -> Record:
    if not isinstance(row, dict):
        raise _Bad(f"expected a JSON object, got {type(row).__name__}")
    if "messages" in row:
        return Record("chat", messages=_chat(row["messages"]), where=where)
    if "conversations" in row:
        return Record("chat", messages=_chat(row["conversations"], "conversations"), where=where)
    if "instruction" in row:
        instruction = _text(row["instruction"], "instruction")
        extra = _text(row.get("input") or "", "input", allow_empty=True)
        output = _text(row.get("output"), "output")
        user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        msgs = (("user", user), ("assistant", output))
        if row.get("system"):
            msgs = (("system", _text(row["system"], "system")), *msgs)
        return Record("chat", messages=msgs, where=where)
    if "prompt" in row and ("completion" in row or "response" in row):
        answer = row.get("completion", row.get("response"))
        return Record("chat", messages=(("user", _text(row["prompt"], "prompt")),
                                        ("assistant", _text(answer, "completion"))), where=where)
    if "text" in row:
        return Record("text", text=_text(row["text"], "text"), where=where)
    keys = ", ".join(sorted(map(str, row))[:8]) or "none"
    raise _Bad(f"unknown record format (keys: {keys})")


_HINT_FORMATS = ('each record needs one of: {"instruction", "input", "output"} (Alpaca), {"messages": [{"role", '
                 '"content"}...]} (chat), {"prompt", "completion"}, or {"text"}')


def _collect(rows: Iterable[tuple[str, Any]], source: str, on_error: str) -> Dataset:
    """Parse (where, value) pairs; value may be an exception raised while reading that line."""
    records: list[Record] = []
    skipped: list[str] = []
    for where, row in rows:
        try:
            if isinstance(row, _Bad):
                raise row
            records.append(_parse(row, where))
        except _Bad as exc:
            if on_error != "skip":
                raise BadInputError(
                    f"{where}: {exc}",
                    f"fix or remove that record, or skip malformed records (--on-bad-line skip). {_HINT_FORMATS}",
                ) from None
            skipped.append(f"{where}: {exc}")
    if not records:
        why = f" ({len(skipped)} malformed, skipped)" if skipped else ""
        raise BadInputError(f"{source} holds no training examples{why}", "give a file with at least a few examples")
    return Dataset(records, source, skipped)


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            where = f"{path.name}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield where, _Bad(f"not UTF-8 text ({exc.reason})")
                continue
            if not line.strip():
                continue
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as exc:
                yield where, _Bad(f"not valid JSON ({exc.msg} at column {exc.colno})")


def _json_rows(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{path.name}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})",
                            "fix the file; a .json file must hold one array of records (or use .jsonl)") from None
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{path.name} is not UTF-8 text ({exc.reason})", "save it as UTF-8") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise BadInputError(f"{path.name} holds a JSON {type(data).__name__}, not a list of records", _HINT_FORMATS)
    # Report a record by its index and, where cheap to find, by nothing more: JSON arrays have no line numbers.
    for i, row in enumerate(data):
        yield f"{path.name}: record {i}", row


def _text_docs(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{path} is not UTF-8 text ({exc.reason})", "save it as UTF-8") from None
    docs = [d.strip() for d in re.split(r"\f|\n[ \t]*\n[ \t]*\n", text) if d.strip()]
    if len(docs) < 2:  # no explicit separators: paragraphs are the documents
        docs = [d.strip() for d in re.split(r"\n[ \t]*\n", text) if d.strip()]
    return docs


def _parquet_rows(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise BadInputError(f"reading {path.name} (parquet) needs the pyarrow package",
                            "pip install pyarrow, or convert the data to JSONL") from exc
    for i, row in enumerate(pq.read_table(path).to_pylist()):
        yield f"{path.name}: row {i}", row


def _file_rows(path: Path) -> Iterator[tuple[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _jsonl_rows(path)
    elif suffix == ".json":
        yield from _json_rows(path)
    elif suffix == ".parquet":
        yield from _parquet_rows(path)
    elif suffix in TEXT_SUFFIXES or suffix == "":
        for i, doc in enumerate(_text_docs(path)):
            yield f"{path.name}: document {i}", {"text": doc}
    else:
        raise BadInputError(f"cannot read training data from {path.name}: unknown file type {suffix!r}",
                            "use .jsonl, .json, .parquet, .txt or .md")


def _folder_rows(folder: Path) -> Iterator[tuple[str, Any]]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in (*TEXT_SUFFIXES, ".jsonl",
                                                                                          ".json", ".parquet"))
    if not files:
        raise BadInputError(f"{folder} holds no .txt, .md, .jsonl, .json or .parquet files", "point --data at a file")
    for path in files:
        if path.suffix.lower() in TEXT_SUFFIXES:
            text = path.read_text(encoding="utf-8", errors="replace").strip()
            if text:
                yield str(path.relative_to(folder)), {"text": text}
        else:
            yield from _file_rows(path)


def hub_files(repo_id: str) -> list[Path]:
    """Download a Hub dataset's JSON / JSONL / parquet files (cached); NetworkError when offline."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, repo_type="dataset",
                                        allow_patterns=["*.json", "*.jsonl", "*.parquet", "**/*.json",
                                                        "**/*.jsonl", "**/*.parquet"]))
    except RepositoryNotFoundError as exc:
        raise BadInputError(f"there is no dataset {repo_id!r} on the Hugging Face Hub",
                            "check the name, e.g. tatsu-lab/alpaca") from exc
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise NetworkError(f"cannot download the dataset {repo_id} from the Hugging Face Hub: {exc}",
                           "connect to the internet, or download the data file and pass it with --data FILE") from exc
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".json", ".jsonl", ".parquet")
                   and "test" not in p.name.lower())
    if not files:
        raise BadInputError(f"the dataset {repo_id} has no JSON, JSONL or parquet files", "use another dataset")
    return files


def hub_repo(source: str | Path) -> str | None:
    """The Hub dataset id `source` names (`hub:owner/name`, or an `owner/name` that is no local path), else None."""
    src = str(source)
    if src.startswith("hub:"):
        return src.removeprefix("hub:")
    if _HUB_RE.match(src) and not src.startswith(".") and not Path(src).expanduser().exists():
        return src
    return None


def load_dataset(source: str | Path, on_error: str = "stop") -> Dataset:
    """Records from a file, a folder, or `hub:owner/name`; `on_error` is "stop" or "skip" (malformed records)."""
    if on_error not in ("stop", "skip"):
        raise BadInputError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
    src = str(source)
    path = Path(src).expanduser()
    repo = hub_repo(src)
    if repo is not None:
        rows = (row for f in hub_files(repo) for row in _file_rows(f))
        return _collect(rows, f"hub:{repo}", on_error)
    if path.is_dir():
        return _collect(_folder_rows(path), str(path), on_error)
    if not path.is_file():
        raise BadInputError(f"training data {src!r} does not exist",
                            "give a .jsonl/.json/.txt file, a folder of text files, or hub:owner/name")
    return _collect(_file_rows(path), str(path), on_error)


def describe_skipped(skipped: list[str]) -> str:
    """One log line about skipped records, listing the first few."""
    shown = "; ".join(skipped[:_MAX_LISTED])
    more = f" (and {len(skipped) - _MAX_LISTED} more)" if len(skipped) > _MAX_LISTED else ""
    return f"skipped {len(skipped)} malformed record(s): {shown}{more}"
