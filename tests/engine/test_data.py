"""Offline text sources are real, disjoint and deterministic; bad files give clear errors."""

import pytest

from bitsmith.engine.data import load_text, stdlib_docstrings, stdlib_text, token_windows
from bitsmith.engine.errors import BadInputError


def test_stdlib_splits_are_disjoint_and_substantial() -> None:
    calib, held = stdlib_text("calib"), stdlib_text("heldout")
    assert len(calib) > 200_000 and len(held) > 50_000
    assert not set(stdlib_docstrings("heldout")) & set(stdlib_docstrings("calib"))
    assert stdlib_text("heldout") == held


def test_local_files(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("hello world " * 10)
    assert load_text(tmp_path / "a.txt").startswith("hello")
    (tmp_path / "b.jsonl").write_text('{"text": "one"}\n\n{"text": "two"}\n')
    assert load_text(tmp_path / "b.jsonl") == "one\n\ntwo"
    (tmp_path / "c.jsonl").write_text('{"text": "one"}\n{oops\n')
    with pytest.raises(BadInputError, match=r"c.jsonl:2"):
        load_text(tmp_path / "c.jsonl")
    with pytest.raises(BadInputError, match="neither a file"):
        load_text(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(BadInputError, match="no text"):
        load_text(tmp_path / "empty.txt")


def test_token_windows_are_seeded() -> None:
    ids = list(range(1000))
    a = token_windows(ids, 4, 100, seed=1)
    assert a == token_windows(ids, 4, 100, seed=1)
    assert a != token_windows(ids, 4, 100, seed=2)
    assert all(len(w) == 100 and w == list(range(w[0], w[0] + 100)) for w in a)
    with pytest.raises(BadInputError, match="fewer than one sample"):
        token_windows(ids[:50], 1, 100)
