"""The conversation store: schema and migration, streaming writes that survive a crash, two instances, export."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bitsmith.app.chat import export
from bitsmith.app.chat.store import (
    DEFAULT_TITLE,
    SCHEMA_VERSION,
    ChatStore,
    StoreError,
    create_v1,
    default_path,
    schema_version,
)


def test_a_new_database_has_the_current_schema_in_wal_mode(tmp_path: Path) -> None:
    store = ChatStore(tmp_path / "c.db")
    assert store.migrated_from == 0
    assert schema_version(store.db) == SCHEMA_VERSION == 2
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    conv = store.create(model="bundled", sampling={"temperature": 0.2})
    assert conv.title == DEFAULT_TITLE and conv.backend == "auto" and conv.sampling == {"temperature": 0.2}
    store.close()


def test_the_default_path_follows_bitsmith_home(home: Path) -> None:
    assert default_path() == home.resolve() / "chats.sqlite3"


def test_a_version_1_database_migrates_and_keeps_its_conversations(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    create_v1(db)
    db.execute("INSERT INTO conversations (title, created_at, updated_at, system, model) "
               "VALUES ('Old chat', 1.0, 2.0, 'Be brief.', '/models/a.gguf')")
    db.execute("INSERT INTO messages (conversation_id, position, role, content, created_at) "
               "VALUES (1, 0, 'user', 'Hi', 1.0)")
    db.execute("INSERT INTO messages (conversation_id, position, role, content, created_at) "
               "VALUES (1, 1, 'assistant', 'Hello!', 1.5)")
    db.close()

    store = ChatStore(path)
    assert store.migrated_from == 1 and schema_version(store.db) == 2
    [conv] = store.conversations()
    assert (conv.title, conv.system, conv.model, conv.backend, conv.sampling) == (
        "Old chat", "Be brief.", "/models/a.gguf", "auto", {})
    msgs = store.messages(conv.id)
    assert [(m.role, m.content, m.status, m.meta) for m in msgs] == [
        ("user", "Hi", "complete", {}), ("assistant", "Hello!", "complete", {})]
    store.finish_message(msgs[1].id, "complete", {"decode_tok_s": 12.5})  # the new columns work
    assert store.message(msgs[1].id).meta == {"decode_tok_s": 12.5}
    store.close()
    assert ChatStore(path).migrated_from == 2  # opening again migrates nothing


def test_a_database_from_a_newer_version_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    ChatStore(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("UPDATE schema_version SET version = 99")
    db.close()
    with pytest.raises(StoreError, match="newer Bitsmith") as info:
        ChatStore(path)
    assert "update Bitsmith" in info.value.hint


def test_a_corrupt_file_is_a_store_error_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open the conversation database") as info:
        ChatStore(path)
    assert "move it away" in info.value.hint


def test_conversations_messages_search_rename_delete(tmp_path: Path) -> None:
    clock = iter(range(100, 200))
    store = ChatStore(tmp_path / "c.db", clock=lambda: float(next(clock)))
    a = store.create("About cats")
    b = store.create()
    store.add_message(b.id, "user", "Tell me about 100% lighthouses_now")
    assert [c.id for c in store.conversations()] == [b.id, a.id]  # newest activity first
    assert [c.id for c in store.conversations("cats")] == [a.id]
    assert [c.id for c in store.conversations("100%")] == [b.id]  # LIKE wildcards are taken literally
    assert [c.id for c in store.conversations("s_n")] == [b.id]
    assert store.conversations("0_l") == []
    assert store.rename(a.id, "  ").title == DEFAULT_TITLE
    store.delete(b.id)
    assert [c.id for c in store.conversations()] == [a.id]
    assert store.messages(b.id) == []  # cascade
    with pytest.raises(KeyError):
        store.conversation(b.id)


def test_history_leaves_out_failed_turns_and_truncate_removes_what_follows(tmp_path: Path) -> None:
    store = ChatStore(tmp_path / "c.db")
    c = store.create()
    u1 = store.add_message(c.id, "user", "one")
    store.add_message(c.id, "assistant", "ONE")
    store.add_message(c.id, "user", "two")
    store.add_message(c.id, "assistant", "", status="error", meta={"error": "out of memory"})
    u3 = store.add_message(c.id, "user", "three")
    store.add_message(c.id, "assistant", "THR", status="stopped")
    assert store.history(c.id) == [
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "ONE"},
        {"role": "user", "content": "three"}, {"role": "assistant", "content": "THR"},
    ]
    assert store.history(c.id, upto_position=u3.position) == store.history(c.id)[:2]
    assert store.truncate_from(u3.id) == 2
    assert [m.content for m in store.messages(c.id)] == ["one", "ONE", "two", ""]
    store.truncate_from(u1.id)
    assert store.messages(c.id) == []


def test_streamed_tokens_are_visible_to_another_connection_at_once(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    store = ChatStore(path)
    c = store.create()
    m = store.add_message(c.id, "assistant", "", status="streaming")
    reader = sqlite3.connect(path)
    for i, piece in enumerate(["Par", "is", " is", " the"]):
        store.append_text(m.id, piece)
        got = reader.execute("SELECT content FROM messages WHERE id = ?", (m.id,)).fetchone()[0]
        assert got == "".join(["Par", "is", " is", " the"][: i + 1])
    reader.close()


_WRITER = """
import sys
from bitsmith.app.chat.store import ChatStore
store = ChatStore(sys.argv[1])
c = store.create()
m = store.add_message(c.id, "user", "count")
a = store.add_message(c.id, "assistant", "", status="streaming")
i = 0
while True:
    store.append_text(a.id, f"t{i} ")
    print(i, flush=True)
    i += 1
"""


def test_a_killed_writer_loses_at_most_the_token_in_flight(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    confirmed = -1
    assert proc.stdout is not None
    for line in proc.stdout:
        confirmed = int(line)
        if confirmed >= 200:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    for line in proc.stdout.read().split():  # what it confirmed before the kill but we had not read yet
        confirmed = int(line)
    store = ChatStore(path)
    assert store.recovered == 1  # the answer that was streaming is marked interrupted, not lost
    [conv] = store.conversations()
    user, answer = store.messages(conv.id)
    assert user.content == "count" and answer.status == "interrupted"
    written = answer.content.split()
    # Every token confirmed (printed after its commit) is there; at most one more was committed but not printed.
    assert written == [f"t{i}" for i in range(len(written))] and len(written) in (confirmed + 1, confirmed + 2)


def test_two_instances_write_the_same_database_at_once(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    one, two = ChatStore(path), ChatStore(path)
    conv = one.create()
    errors: list[BaseException] = []

    def write(store: ChatStore, tag: str) -> None:
        try:
            for i in range(100):
                store.add_message(conv.id, "user", f"{tag}{i}")
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s, t)) for s, t in ((one, "a"), (two, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    msgs = two.messages(conv.id)
    assert len(msgs) == 200 and sorted(m.position for m in msgs) == list(range(200))
    assert {m.content for m in msgs} == {f"{t}{i}" for t in "ab" for i in range(100)}


def test_export_markdown_and_json(tmp_path: Path) -> None:
    store = ChatStore(tmp_path / "c.db")
    c = store.create("Squares", system="Be brief.", model="bundled", sampling={"temperature": 0.0})
    store.add_message(c.id, "user", "Square of 3?")
    store.add_message(c.id, "assistant", "```python\nprint(3 ** 2)\n```\nIt is 9.", status="stopped",
                      meta={"decode_tok_s": 20.0})
    conv, msgs = store.conversation(c.id), store.messages(c.id)
    md = export.to_markdown(conv, msgs)
    assert md.startswith("# Squares\n") and "## System\n\nBe brief." in md
    assert "## You\n\nSquare of 3?" in md and "## Assistant _(stopped)_\n\n```python\nprint(3 ** 2)\n```" in md
    data = json.loads(export.to_json(conv, msgs))
    assert data["format"] == export.EXPORT_FORMAT and data["system"] == "Be brief."
    assert [(m["role"], m["content"]) for m in data["messages"]] == [(m.role, m.content) for m in msgs]
    assert data["messages"][1]["meta"] == {"decode_tok_s": 20.0}
    target = tmp_path / "out" / "chat.md"
    export.write_text_atomic(target, md)
    assert target.read_text(encoding="utf-8") == md
    assert [p.name for p in target.parent.iterdir()] == ["chat.md"]  # no temporary file left behind
