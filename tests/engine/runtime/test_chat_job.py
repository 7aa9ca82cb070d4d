"""The chat job in a real worker process: turns in, token events out, stop, errors that keep the session."""

import json
import sys
from pathlib import Path

import pytest

from bitsmith.engine.jobclient import JobClient, run_inprocess

pytest.importorskip("llama_cpp")

GREEDY = {"temperature": 0, "max_tokens": 6}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BITSMITH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _until(handle, kind: str, seen: list) -> dict:  # noqa: ANN001
    for event in handle.events(timeout=300):
        seen.append(event)
        if event["event"] in (kind, "done"):
            return event
    raise AssertionError(f"no {kind} event; got {[e['event'] for e in seen]}")


def test_a_session_answers_survives_a_bad_turn_and_ends_cleanly(home: Path, bundled_gguf: Path) -> None:
    seen: list = []
    with JobClient().start("chat", {"model": str(bundled_gguf), "sampling": GREEDY, "n_ctx": 512,
                                    "system": "Be brief."}, env={"BITSMITH_HOME": str(home)}) as h:
        ready = _until(h, "ready", seen)
        assert ready["event"] == "ready" and ready["backend"] == "llama.cpp" and ready["n_ctx"] == 512
        h.send({"type": "user", "content": "Say hello."})
        end = _until(h, "turn_end", seen)
        tokens = "".join(e["text"] for e in seen if e["event"] == "token" and e["turn"] == 1)
        assert end["turn"] == 1 and end["text"] == tokens and end["completion_tokens"] <= 6
        h.send({"type": "user", "content": "word " * 2000})  # far beyond the 512-token context
        err = _until(h, "turn_error", seen)
        assert err["kind"] == "bad_input" and "context holds 512" in err["message"]
        h.send({"type": "end"})
        done = _until(h, "done", seen)
        assert done["status"] == "ok" and h.wait(30) == 0
    saved = json.loads((h.job_dir / "conversation.json").read_text())
    assert saved["system"] == "Be brief." and saved["messages"][1]["content"] == end["text"]


@pytest.mark.slow
def test_stop_ends_an_answer_and_a_restarted_job_keeps_the_conversation(home: Path, bundled_gguf: Path) -> None:
    seen: list = []
    params = {"model": str(bundled_gguf), "sampling": {"temperature": 0, "max_tokens": 400}, "n_ctx": 1024}
    with JobClient().start("chat", params, env={"BITSMITH_HOME": str(home)}) as h:
        _until(h, "ready", seen)
        h.send({"type": "user", "content": "Write a very long story about a lighthouse keeper."})
        _until(h, "token", seen)
        h.send({"type": "stop"})
        end = _until(h, "turn_end", seen)
        assert end["reason"] == "stopped" and end["completion_tokens"] < 400
        h.send({"type": "reset"})
        hist = _until(h, "history", seen)
        assert hist["messages"] == []
        h.send({"type": "messages", "messages": [{"role": "user", "content": "Hi"},
                                                 {"role": "assistant", "content": "Hello!"}]})
        _until(h, "history", seen)
        h.cancel()
        done = _until(h, "done", seen)
        assert done["status"] == "cancelled"
        job_id = h.job_id
    seen = []
    with JobClient().start("chat", {**params, "prompt": "And now?"}, job_id=job_id,
                           env={"BITSMITH_HOME": str(home)}) as h2:
        result = _until(h2, "result", seen)
        assert any("restored a conversation of 2 messages" in e.get("message", "") for e in seen)
        assert result["prompt_tokens"] > 10 and h2.wait(30) == 0


def test_one_shot_in_process_and_bad_requests(home: Path, bundled_gguf: Path, tmp_path: Path) -> None:
    events: list = []
    code = run_inprocess("chat", {"model": str(bundled_gguf), "prompt": "Hi", "sampling": GREEDY, "n_ctx": 256},
                         events.append)
    assert code == 0 and events[-2]["event"] == "result" and events[-1] == {"event": "done", "status": "ok"}
    events.clear()
    assert run_inprocess("chat", {"model": str(tmp_path / "none.gguf")}, events.append) == 2
    assert events[-2]["kind"] == "bad_input" and "does not exist" in events[-2]["message"]
    events.clear()
    assert run_inprocess("chat", {"model": str(bundled_gguf), "sampling": {"temp": 1}}, events.append) == 2
    assert "temp" in events[-2]["message"]


@pytest.mark.slow
def test_the_cli_one_shot_prints_the_answer_alone(bundled_gguf: Path, capsys: pytest.CaptureFixture) -> None:
    from bitsmith.engine.cli import main
    from bitsmith.engine.runtime.llamacpp import LlamaCppBackend
    from bitsmith.engine.runtime.params import SamplingParams
    from bitsmith.engine.runtime.session import ChatSession

    code = main(["chat", str(bundled_gguf), "--prompt", "Name a fruit.", "--temperature", "0", "--max-tokens", "8",
                 "--system", "Be brief.", "--ctx", "512"])
    out = capsys.readouterr().out
    backend = LlamaCppBackend(bundled_gguf, n_ctx=512)
    want = ChatSession(backend, system="Be brief.").ask("Name a fruit.", SamplingParams(temperature=0, max_tokens=8))
    assert code == 0 and out == want + "\n"
    assert main(["chat", str(bundled_gguf), "--prompt", "x", "--backend", "native", "--top-p", "2"]) == 2
    assert "top_p" in capsys.readouterr().err


def test_llama_cpp_backend_refuses_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from bitsmith.engine.cli import main

    (tmp_path / "m").mkdir()
    assert main(["chat", str(tmp_path / "m"), "--backend", "llama.cpp", "--prompt", "x"]) == 2
    assert "bitsmith export" in capsys.readouterr().err


if sys.platform == "win32":  # pragma: no cover - the worker signals differ; covered by the worker's own tests
    pytestmark = pytest.mark.skip("POSIX worker test")
