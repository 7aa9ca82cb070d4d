"""Conversations in SQLite: a schema version with migrations, streaming writes, safe for two app instances.

No Qt and no torch here. The database sits in the user's data folder (`<data dir>/chats.sqlite3`,
BITSMITH_HOME for tests). WAL mode with a busy timeout lets two windows share it; every write commits at
once (WAL + synchronous=NORMAL survives an application crash), and an answer is appended to its row as its
tokens arrive, so a crash loses at most the token being written. A message left "streaming" by a crash is
marked "interrupted" the next time the store opens; its text is kept.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bitsmith.engine import paths
from bitsmith.engine.errors import BitsmithError

SCHEMA_VERSION = 2
DB_FILE = "chats.sqlite3"
BUSY_TIMEOUT_MS = 10_000
ROLES = ("system", "user", "assistant")
# complete: finished normally; streaming: being written; stopped: the user pressed Stop;
# interrupted: the app or worker died mid-answer; error: the turn failed (meta holds why).
STATUSES = ("complete", "streaming", "stopped", "interrupted", "error")
DEFAULT_TITLE = "New chat"


class StoreError(BitsmithError):
    """The conversation database cannot be used (newer format, corrupt, unwritable)."""

    kind = "bad_input"


@dataclass
class Conversation:
    """One conversation's settings (its messages are read separately)."""

    id: int
    title: str
    created_at: float
    updated_at: float
    system: str = ""
    model: str = ""
    backend: str = "auto"
    sampling: dict[str, Any] = field(default_factory=dict)


@dataclass
class Message:
    """One message; `meta` holds facts about an answer (tokens, tokens/s, stop reason, error)."""

    id: int
    conversation_id: int
    position: int
    role: str
    content: str
    created_at: float
    status: str = "complete"
    meta: dict[str, Any] = field(default_factory=dict)


def default_path() -> Path:
    """Where the app keeps its conversations: <data dir>/chats.sqlite3."""
    return paths.data_dir() / DB_FILE


# ---- schema ---------------------------------------------------------------------------------------

_SCHEMA_V1 = """
CREATE TABLE conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    system TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT ''
);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX messages_by_conversation ON messages(conversation_id, position);
"""


def _migrate_1_to_2(db: sqlite3.Connection) -> None:
    """v2: per-conversation backend and sampling; per-message status and meta (tokens/s, errors)."""
    db.execute("ALTER TABLE conversations ADD COLUMN backend TEXT NOT NULL DEFAULT 'auto'")
    db.execute("ALTER TABLE conversations ADD COLUMN sampling TEXT NOT NULL DEFAULT '{}'")
    db.execute("ALTER TABLE messages ADD COLUMN status TEXT NOT NULL DEFAULT 'complete'")
    db.execute("ALTER TABLE messages ADD COLUMN meta TEXT NOT NULL DEFAULT '{}'")
    db.execute("CREATE INDEX IF NOT EXISTS conversations_by_update ON conversations(updated_at)")


# version n → the function that turns a version-n database into version n+1.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _migrate_1_to_2}


def create_v1(db: sqlite3.Connection) -> None:
    """The first schema, as version 1 wrote it (new databases start here and migrate up)."""
    for statement in _SCHEMA_V1.split(";"):  # not executescript: it would commit the caller's transaction
        if statement.strip():
            db.execute(statement)
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    db.execute("INSERT INTO schema_version (version) VALUES (1)")


def schema_version(db: sqlite3.Connection) -> int:
    """The database's schema version; 0 for an empty database."""
    row = db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'").fetchone()
    if row is None:
        return 0
    got = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(got[0] or 0)


def migrate(db: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Bring the database to `target`, one step per transaction; returns the version it started at."""
    with _immediate(db):  # one writer decides; a second instance waits, then sees the new version
        start = schema_version(db)
        if start == 0:
            create_v1(db)
    version = start or 1
    if start > target:
        raise StoreError(
            f"the conversation database was written by a newer Bitsmith (schema {start}, this one knows {target})",
            "update Bitsmith, or move the file away to start with an empty history",
        )
    while version < target:
        with _immediate(db):
            current = schema_version(db)  # another instance may have migrated meanwhile
            if current == version:
                MIGRATIONS[version](db)
                db.execute("UPDATE schema_version SET version = ?", (version + 1,))
        version += 1
    return start


@contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[None]:
    """A write transaction taken at once (BEGIN IMMEDIATE), committed or rolled back as a whole."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


# ---- the store ------------------------------------------------------------------------------------

_CONV_COLS = "id, title, created_at, updated_at, system, model, backend, sampling"
_MSG_COLS = "id, conversation_id, position, role, content, created_at, status, meta"


def _loads(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _conv(row: tuple) -> Conversation:
    return Conversation(row[0], row[1], row[2], row[3], row[4], row[5], row[6], _loads(row[7]))


def _msg(row: tuple) -> Message:
    return Message(row[0], row[1], row[2], row[3], row[4], row[5], row[6], _loads(row[7]))


class ChatStore:
    """The conversation database (see the module docstring). One connection, used from one thread at a time."""

    def __init__(self, path: str | Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path) if path is not None else default_path()
        self._clock = clock
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                      check_same_thread=False)
            self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = NORMAL")
            self.db.execute("PRAGMA foreign_keys = ON")
            self.migrated_from = migrate(self.db)
            self.recovered = self._recover_interrupted()
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"cannot open the conversation database {self.path}: {exc}",
                "check that the folder is writable and the disk is not full; if the file is damaged, "
                "move it away (Bitsmith starts a new one) and keep it for recovery",
            ) from exc

    def close(self) -> None:
        """Close the connection (everything is already committed)."""
        with self._lock:
            self.db.close()

    # -- writing ----------------------------------------------------------------------------------
    def _write(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            try:
                return self.db.execute(sql, args)
            except sqlite3.OperationalError as exc:
                raise StoreError(
                    f"could not save to the conversation database: {exc}",
                    "free some disk space or close the other Bitsmith window, then try again",
                ) from exc

    def _recover_interrupted(self) -> int:
        """Mark answers that were still streaming when the last app died; their text stays."""
        cur = self._write("UPDATE messages SET status = 'interrupted' WHERE status = 'streaming'")
        return cur.rowcount

    def create(self, title: str = DEFAULT_TITLE, *, system: str = "", model: str = "", backend: str = "auto",
               sampling: dict[str, Any] | None = None) -> Conversation:
        """A new, empty conversation."""
        now = self._clock()
        cur = self._write(
            "INSERT INTO conversations (title, created_at, updated_at, system, model, backend, sampling) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (title, now, now, system, model, backend, json.dumps(sampling or {})),
        )
        return self.conversation(int(cur.lastrowid))  # type: ignore[arg-type]

    def update(self, conversation_id: int, **fields: Any) -> Conversation:
        """Change a conversation's title, system, model, backend or sampling."""
        allowed = {"title", "system", "model", "backend", "sampling"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown conversation fields: {sorted(unknown)}")
        if fields:
            sets, args = [], []
            for name, value in fields.items():
                sets.append(f"{name} = ?")
                args.append(json.dumps(value) if name == "sampling" else str(value))
            sets.append("updated_at = ?")
            args.append(self._clock())
            self._write(f"UPDATE conversations SET {', '.join(sets)} WHERE id = ?", (*args, conversation_id))
        return self.conversation(conversation_id)

    def rename(self, conversation_id: int, title: str) -> Conversation:
        """Give a conversation a new title (blank titles become the default)."""
        return self.update(conversation_id, title=title.strip() or DEFAULT_TITLE)

    def delete(self, conversation_id: int) -> None:
        """Delete a conversation and its messages."""
        self._write("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    def add_message(self, conversation_id: int, role: str, content: str, *, status: str = "complete",
                    meta: dict[str, Any] | None = None) -> Message:
        """Append a message at the end of a conversation."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
        now = self._clock()
        with self._lock, _immediate(self.db):
            pos = self.db.execute(
                "SELECT COALESCE(MAX(position), -1) + 1 FROM messages WHERE conversation_id = ?", (conversation_id,)
            ).fetchone()[0]
            cur = self.db.execute(
                f"INSERT INTO messages ({_MSG_COLS.replace('id, ', '', 1)}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, pos, role, content, now, status, json.dumps(meta or {})),
            )
            self.db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id))
        return self.message(int(cur.lastrowid))  # type: ignore[arg-type]

    def append_text(self, message_id: int, text: str) -> None:
        """Add streamed text to a message, committed at once (called for every token)."""
        if text:
            self._write("UPDATE messages SET content = content || ? WHERE id = ?", (text, message_id))

    def finish_message(self, message_id: int, status: str, meta: dict[str, Any] | None = None,
                       content: str | None = None) -> Message:
        """Close a streamed answer: its final status, facts (merged into meta) and optionally its exact text."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
        old = self.message(message_id)
        merged = {**old.meta, **(meta or {})}
        if content is None:
            self._write("UPDATE messages SET status = ?, meta = ? WHERE id = ?",
                        (status, json.dumps(merged), message_id))
        else:
            self._write("UPDATE messages SET status = ?, meta = ?, content = ? WHERE id = ?",
                        (status, json.dumps(merged), content, message_id))
        self._write("UPDATE conversations SET updated_at = ? WHERE id = ?", (self._clock(), old.conversation_id))
        return self.message(message_id)

    def set_content(self, message_id: int, content: str) -> None:
        """Replace a message's text."""
        self._write("UPDATE messages SET content = ? WHERE id = ?", (content, message_id))

    def truncate_from(self, message_id: int) -> int:
        """Delete this message and every later one in its conversation (edit-and-resend, regenerate)."""
        msg = self.message(message_id)
        cur = self._write("DELETE FROM messages WHERE conversation_id = ? AND position >= ?",
                          (msg.conversation_id, msg.position))
        return cur.rowcount

    # -- reading ----------------------------------------------------------------------------------
    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self.db.execute(sql, args).fetchall()

    def data_version(self) -> int:
        """A number that changes when another connection (another app window) commits a change."""
        return int(self._read("PRAGMA data_version")[0][0])

    def conversation(self, conversation_id: int) -> Conversation:
        """One conversation; KeyError if it does not exist (any more)."""
        rows = self._read(f"SELECT {_CONV_COLS} FROM conversations WHERE id = ?", (conversation_id,))
        if not rows:
            raise KeyError(conversation_id)
        return _conv(rows[0])

    def conversations(self, search: str = "") -> list[Conversation]:
        """Conversations, newest first; `search` keeps those whose title or messages contain it."""
        if not search.strip():
            rows = self._read(f"SELECT {_CONV_COLS} FROM conversations ORDER BY updated_at DESC, id DESC")
        else:
            like = "%" + search.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            rows = self._read(
                f"SELECT {_CONV_COLS} FROM conversations c WHERE c.title LIKE ? ESCAPE '\\' OR EXISTS "
                "(SELECT 1 FROM messages m WHERE m.conversation_id = c.id AND m.content LIKE ? ESCAPE '\\') "
                "ORDER BY updated_at DESC, id DESC",
                (like, like),
            )
        return [_conv(r) for r in rows]

    def message(self, message_id: int) -> Message:
        """One message; KeyError if it does not exist."""
        rows = self._read(f"SELECT {_MSG_COLS} FROM messages WHERE id = ?", (message_id,))
        if not rows:
            raise KeyError(message_id)
        return _msg(rows[0])

    def messages(self, conversation_id: int) -> list[Message]:
        """A conversation's messages in order."""
        rows = self._read(f"SELECT {_MSG_COLS} FROM messages WHERE conversation_id = ? ORDER BY position",
                          (conversation_id,))
        return [_msg(r) for r in rows]

    def history(self, conversation_id: int, upto_position: int | None = None) -> list[dict[str, str]]:
        """The turns a model should see: user/assistant pairs whose answer has text (failed turns left out)."""
        out: list[dict[str, str]] = []
        pending_user: Message | None = None
        for m in self.messages(conversation_id):
            if upto_position is not None and m.position >= upto_position:
                break
            if m.role == "user":
                pending_user = m
            elif m.role == "assistant" and pending_user is not None:
                if m.content.strip() and m.status != "error":
                    out.append({"role": "user", "content": pending_user.content})
                    out.append({"role": "assistant", "content": m.content})
                pending_user = None
        return out
