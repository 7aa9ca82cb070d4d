"""The dataset preview (torch-free) splits chats into trained and ignored text exactly as the trainer does with the
real tokenizer, lists every malformed record, counts the split, and runs as the `preview_dataset` worker job."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from bitsmith.engine.errors import BadInputError
from bitsmith.engine.finetune.data import Record, load_dataset
from bitsmith.engine.finetune.preview import TemplateTokenizer, format_record, preview_dataset
from bitsmith.engine.finetune.template import chat_segments, ensure_chat_template, tokenize_record

CHATS = [
    Record("chat", messages=(("user", "Add the numbers.\n\n2 and 3"), ("assistant", "5"))),
    Record("chat", messages=(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello!"), ("user", "And?"),
                             ("assistant", "Bye."))),
    Record("chat", messages=(("user", "P"), ("assistant", "C"))),
]


def test_segments_match_the_trainers_with_the_real_tokenizer(bundled_folder, tokenizer) -> None:  # noqa: ANN001
    light = TemplateTokenizer.from_folder(bundled_folder)
    assert light.chat_template == tokenizer.chat_template and light.eos_token == tokenizer.eos_token
    for record in CHATS:
        assert format_record(light, record) == chat_segments(tokenizer, record.messages)
    # No chat template: both get the engine's ChatML fallback with the tokenizer's EOS.
    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    light = TemplateTokenizer(None, {"eos_token": bare.eos_token})
    assert ensure_chat_template(bare) and ensure_chat_template(light)
    for record in CHATS:
        assert format_record(light, record) == chat_segments(bare, record.messages)
    # Plain text: the document and the EOS the trainer appends, all trained.
    text = Record("text", text="A plain document about rivers and the sea.")
    segments = format_record(TemplateTokenizer.from_folder(bundled_folder), text)
    example = tokenize_record(tokenizer, text)
    assert all(trained for _, trained in segments) and all(example.mask)
    assert "".join(t for t, _ in segments) == tokenizer.decode(list(example.ids))


def test_preview_lists_malformed_records_and_counts_the_split(tmp_path, write_jsonl, bundled_folder) -> None:  # noqa: ANN001
    rows = [{"instruction": f"Q{i}", "output": f"A{i}"} for i in range(20)]
    rows[3], rows[11] = '{"instruction": ', {"instruction": "no answer"}
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    got = preview_dataset(str(path), str(bundled_folder), limit=3)
    assert (got["documents"], got["train"], got["heldout"]) == (18, 16, 2)
    assert got["skipped_count"] == 2 and got["skipped"][0].startswith("d.jsonl:4: not valid JSON")
    assert got["skipped"][1].startswith("d.jsonl:12: 'output'")
    assert [e["where"] for e in got["examples"]] == ["d.jsonl:1", "d.jsonl:2", "d.jsonl:3"]
    assert got["template"] == "model" and got["examples"][0]["segments"][-1] == ["A0<|im_end|>\n", True]
    # Every record malformed: the first one's own error, with its line.
    bad = write_jsonl(tmp_path / "bad.jsonl", ["not json", '{"text": 3}'])
    with pytest.raises(BadInputError, match=r"bad.jsonl:1: not valid JSON"):
        preview_dataset(str(bad))
    # One document cannot be split: said, not raised (the trainer would refuse it).
    one = write_jsonl(tmp_path / "one.jsonl", [{"text": "Only one document."}])
    got = preview_dataset(str(one))
    assert got["heldout"] == 0 and "single document" in got["split_note"] and got["template"] == "none"
    # A long example is cut for the preview and says so.
    long = write_jsonl(tmp_path / "long.jsonl", [{"text": "word " * 1000}, {"text": "short"}])
    first = preview_dataset(str(long))["examples"][0]
    assert first["truncated"] and sum(len(t) for t, _ in first["segments"]) == 1500
    assert len(load_dataset(long).records[0].text) == 5000  # the data itself is untouched


def test_the_worker_job_answers_with_the_preview(tmp_path, write_jsonl) -> None:  # noqa: ANN001
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "2+2?", "completion": "4"}, {"text": "Some text."}])
    request = {"kind": "preview_dataset", "params": {"data": str(path)}}
    out = subprocess.run([sys.executable, "-m", "bitsmith.engine.worker"], input=json.dumps(request) + "\n",
                         capture_output=True, text=True, timeout=120)
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert out.returncode == 0, out.stderr
    assert events[-1]["event"] == "done" and events[-1]["status"] == "ok"
    [result] = [e for e in events if e["event"] == "result"]
    preview = result["preview"]
    assert preview["documents"] == 2 and preview["kinds"] == ["chat", "text"] and preview["template"] == "fallback"
    assert preview["examples"][1]["segments"] == [["Some text.", True]]  # no model: no EOS token known
