"""Reading training records: formats, malformed lines (stop or skip), empty data, folders, the Hub offline."""

from __future__ import annotations

import json
import random

import pytest

from bitsmith.engine.errors import BadInputError, NetworkError
from bitsmith.engine.finetune.data import describe_skipped, load_dataset, parse_record


def test_formats_become_chats_or_text(tmp_path, write_jsonl) -> None:
    rows = [
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
        {"instruction": "Say hi.", "output": "Hi!", "system": "Be brief."},
        {"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]},
        {"conversations": [{"from": "human", "value": "Q2?"}, {"from": "gpt", "value": "A2."}]},
        {"prompt": "P", "completion": "C"},
        {"text": "Plain text document."},
    ]
    data = load_dataset(write_jsonl(tmp_path / "d.jsonl", rows))
    recs = data.records
    assert [r.kind for r in recs] == ["chat"] * 5 + ["text"]
    assert recs[0].messages == (("user", "Add the numbers.\n\n2 and 3"), ("assistant", "5"))
    assert recs[1].messages[0] == ("system", "Be brief.")
    assert recs[3].messages == (("user", "Q2?"), ("assistant", "A2."))
    assert recs[4].messages == (("user", "P"), ("assistant", "C"))
    assert recs[5].text == "Plain text document."
    assert recs[2].where == "d.jsonl:3"
    assert data.kinds == {"chat", "text"}


def test_json_array_and_text_files(tmp_path) -> None:
    (tmp_path / "a.json").write_text(json.dumps([{"instruction": "x", "output": "y"}] * 3))
    assert len(load_dataset(tmp_path / "a.json").records) == 3
    (tmp_path / "t.txt").write_text("First document,\nstill first.\n\n\nSecond document.\n\n\n\nThird.\n")
    docs = [r.text for r in load_dataset(tmp_path / "t.txt").records]
    assert docs == ["First document,\nstill first.", "Second document.", "Third."]
    (tmp_path / "p.txt").write_text("para one\n\npara two\n")  # no double blank lines: paragraphs
    assert [r.text for r in load_dataset(tmp_path / "p.txt").records] == ["para one", "para two"]


def test_folder_gives_one_document_per_text_file(tmp_path) -> None:
    sub = tmp_path / "corpus"
    (sub / "deep").mkdir(parents=True)
    names = [f"doc{i}" for i in random.sample(range(100), 4)]
    for i, name in enumerate(names):
        (sub / ("deep" if i % 2 else "") / f"{name}.txt").write_text(f"text of {name}\n\nwith a paragraph")
    (sub / "ignored.bin").write_bytes(b"\x00\x01")
    recs = load_dataset(sub).records
    assert sorted(r.text.split("\n")[0] for r in recs) == sorted(f"text of {n}" for n in names)


@pytest.mark.parametrize(
    ("line", "what"),
    [
        ("{not json", "not valid JSON"),
        ('["a", "list"]', "expected a JSON object"),
        ('{"instruction": "x"}', "'output' must be a string"),
        ('{"instruction": "x", "output": "   "}', "'output' is empty"),
        ('{"messages": [{"role": "wizard", "content": "x"}]}', "role 'wizard'"),
        ('{"messages": [{"role": "user", "content": "only a question"}]}', "no assistant message"),
        ('{"foo": 1}', "unknown record format (keys: foo)"),
    ],
)
def test_malformed_line_is_named_and_stops_or_is_skipped(tmp_path, write_jsonl, line: str, what: str) -> None:
    good = {"instruction": "hi", "output": "hello"}
    bad_at = random.randint(2, 5)
    rows = [good] * (bad_at - 1) + [line] + [good] * 3
    path = write_jsonl(tmp_path / "data.jsonl", rows)
    with pytest.raises(BadInputError) as err:
        load_dataset(path)
    assert f"data.jsonl:{bad_at}" in str(err.value) and what in str(err.value)
    assert "skip" in err.value.hint
    data = load_dataset(path, on_error="skip")
    assert len(data.records) == len(rows) - 1
    assert data.skipped == [f"data.jsonl:{bad_at}: {str(err.value).split(': ', 1)[1]}"]
    assert f"skipped 1 malformed record(s): data.jsonl:{bad_at}" in describe_skipped(data.skipped)


def test_bad_utf8_line_is_reported_and_others_kept(tmp_path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "\xff\xfe"}\n{"text": "fine"}\n')
    with pytest.raises(BadInputError, match=r"d\.jsonl:2: not UTF-8"):
        load_dataset(path)
    assert [r.text for r in load_dataset(path, on_error="skip").records] == ["ok", "fine"]


def test_empty_and_missing_data(tmp_path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(BadInputError, match="holds no training examples"):
        load_dataset(tmp_path / "empty.jsonl")
    (tmp_path / "allbad.jsonl").write_text("{oops\n[1]\n")
    with pytest.raises(BadInputError, match=r"no training examples \(2 malformed, skipped\)"):
        load_dataset(tmp_path / "allbad.jsonl", on_error="skip")
    with pytest.raises(BadInputError, match="does not exist"):
        load_dataset(tmp_path / "nope.jsonl")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(BadInputError, match="unknown file type"):
        load_dataset(tmp_path / "x.csv")
    with pytest.raises(BadInputError, match="on_error"):
        load_dataset(tmp_path / "empty.jsonl", on_error="ignore")


def test_bad_json_file_names_its_line(tmp_path) -> None:
    (tmp_path / "a.json").write_text('[\n {"text": "a"},\n {"text": }\n]')
    with pytest.raises(BadInputError, match=r"a\.json:3: not valid JSON"):
        load_dataset(tmp_path / "a.json")


def test_hub_dataset_offline_is_a_network_error(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    with pytest.raises(NetworkError) as err:
        load_dataset("hub:tatsu-lab/alpaca-not-cached-anywhere")
    assert "--data FILE" in err.value.hint


def test_parse_record_is_strict_about_types() -> None:
    with pytest.raises(BadInputError, match="'instruction' must be a string"):
        parse_record({"instruction": 3, "output": "x"}, "here:1")
    assert parse_record({"messages": [{"role": "system", "content": ""}, {"role": "user", "content": "u"},
                                      {"role": "assistant", "content": "a"}]}).messages[0] == ("system", "")
