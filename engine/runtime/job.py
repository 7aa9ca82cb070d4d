"""The `chat` job: a chat session in a worker process, driven by messages on its stdin (DESIGN §4).

Request params::

    {"model": "...", "backend": "auto" | "native" | "llama.cpp", "n_ctx": 4096, "device": "auto",
     "system": "...", "sampling": {"temperature": 0.7, ...}, "messages": [...],   (all optional but model)
     "prompt": "..."}                 (one-shot: answer this, then end)

Events, besides the usual stage/log/error/done::

    {"event": "ready", "backend": ..., "model": ..., "n_ctx": ..., ...}     the model is loaded
    {"event": "token", "text": "Par", "turn": 1}                            answer pieces as they come
    {"event": "turn_end", "turn": 1, "text": ..., "reason": "eos", "prompt_tokens": ..., "ttft_s": ...}
    {"event": "turn_error", "turn": 1, "kind": "bad_input", "message": ..., "hint": ...}   the session goes on
    {"event": "history", "messages": [...]}                                 after reset/messages/system changes

Messages on stdin (after the request), one JSON object per line::

    {"type": "user", "content": "...", "sampling": {...}}    ask (sampling overrides this turn only)
    {"type": "stop"}                                          stop the answer being generated
    {"type": "system", "content": "..."}                      set the system prompt
    {"type": "messages", "messages": [...]}                   replace the history (e.g. from the app's database)
    {"type": "reset"}                                         forget the turns
    {"type": "end"}                                           close the session (done, status ok)

{"cancel": true} (or a signal) ends the session as cancelled. After every turn the conversation is
written atomically to conversation.json in the job folder; starting the same job_id again restores it.
"""

from __future__ import annotations

import collections
import queue
import traceback
from typing import Any

from bitsmith.engine.errors import BadInputError, BitsmithError
from bitsmith.engine.jobfiles import read_json, write_json_atomic
from bitsmith.engine.jobs import JobContext, job

from .params import SamplingParams
from .session import ChatSession

CONVERSATION_FILE = "conversation.json"
_POLL_S = 0.1


def _save(ctx: JobContext, session: ChatSession) -> None:
    write_json_atomic(ctx.job_dir / CONVERSATION_FILE, {"system": session.system, "messages": session.messages})


def _restore(ctx: JobContext, session: ChatSession, params: dict[str, Any]) -> None:
    if params.get("messages") is not None:
        session.load(params["messages"])
        return
    saved = read_json(ctx.job_dir / CONVERSATION_FILE)
    if saved:
        session.load(saved.get("messages") or [])
        if saved.get("system") and not params.get("system"):
            session.system = saved["system"]
        ctx.log(f"restored a conversation of {len(session.messages)} messages")


def _error_fields(exc: BaseException) -> dict[str, str]:
    if isinstance(exc, BitsmithError):
        return {"kind": exc.kind, "message": str(exc), "hint": exc.hint}
    if type(exc).__name__ == "OutOfMemoryError" or isinstance(exc, MemoryError):
        return {"kind": "out_of_memory", "message": f"ran out of memory while answering: {exc}"[:300],
                "hint": "use a shorter context (n_ctx), a smaller model, or close other programs"}
    return {"kind": "internal", "message": f"{type(exc).__name__}: {exc}"[:300],
            "hint": "this looks like a bug in Bitsmith; the traceback is in the job's log"}


class _Driver:
    """Runs turns and reads control messages, keeping those that arrive mid-answer for later."""

    def __init__(self, ctx: JobContext, session: ChatSession) -> None:
        self.ctx, self.session = ctx, session
        self.pending: collections.deque[dict[str, Any]] = collections.deque()
        self.turn = 0

    def _drain(self) -> bool:
        """Move waiting messages to `pending`; True if one of them asks to stop the current answer."""
        stop = False
        while True:
            try:
                msg = self.ctx.inbox.get_nowait()
            except queue.Empty:
                return stop
            if msg.get("type") == "stop":
                stop = True
            else:
                self.pending.append(msg)

    def should_stop(self) -> bool:
        """Asked between tokens: a stop message or a cancel ends the answer."""
        return self._drain() or self.ctx.cancelled

    def next_message(self) -> dict[str, Any] | None:
        if self.pending:
            return self.pending.popleft()
        try:
            return self.ctx.inbox.get(timeout=_POLL_S)
        except queue.Empty:
            return None

    def answer(self, text: str, sampling: dict[str, Any] | None = None, raise_errors: bool = False
               ) -> dict[str, Any] | None:
        """One turn: stream tokens, then turn_end (or turn_error, or the exception with raise_errors)."""
        self.turn += 1
        turn = self.turn
        try:
            params = SamplingParams.from_dict(sampling, base=self.session.params) if sampling else None
            for piece in self.session.send(text, params, should_stop=self.should_stop):
                self.ctx.emit({"event": "token", "text": piece, "turn": turn})
        except Exception as exc:  # a failed turn never ends the session
            if raise_errors:
                raise
            if not isinstance(exc, BitsmithError):
                print(f"turn {turn} failed:\n{traceback.format_exc()}")  # goes to the job log
            self.ctx.emit({"event": "turn_error", "turn": turn, **_error_fields(exc)})
            _release_memory()
            return None
        result = self.session.last.to_dict() if self.session.last else {}
        self.ctx.emit({"event": "turn_end", "turn": turn, **result})
        _save(self.ctx, self.session)
        return result

    def handle(self, msg: dict[str, Any]) -> bool:
        """Act on one control message; False when the session should end."""
        kind = msg.get("type")
        if kind == "user":
            content = msg.get("content")
            if not isinstance(content, str):
                self.ctx.emit({"event": "turn_error", "turn": self.turn + 1, "kind": "bad_input",
                               "message": "a user message needs a text 'content'", "hint": ""})
                return True
            self.answer(content, msg.get("sampling"))
        elif kind == "stop":
            pass  # nothing is being generated
        elif kind == "end":
            return False
        elif kind in ("system", "messages", "reset"):
            try:
                if kind == "system":
                    self.session.system = str(msg.get("content") or "") or None
                elif kind == "messages":
                    self.session.load(msg.get("messages"))
                else:
                    self.session.reset()
            except BitsmithError as exc:
                self.ctx.emit({"event": "turn_error", "turn": self.turn, **_error_fields(exc)})
                return True
            _save(self.ctx, self.session)
            self.ctx.emit({"event": "history", "messages": self.session.history()})
        else:
            self.ctx.log(f"ignored an unknown chat message type {kind!r}", level="warning")
        return True


def _release_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort
        pass


@job("chat")
def chat_job(ctx: JobContext, params: dict[str, Any]) -> None:
    """Load a backend, then answer user messages until told to end (see the module docstring)."""
    from .backends import open_backend

    model = params.get("model")
    if not model or not isinstance(model, str):
        raise BadInputError("the chat request lacks 'model'", "pass a Bitsmith folder, HF folder, .gguf file or Hub id")
    sampling = SamplingParams.from_dict(params.get("sampling"))
    n_ctx = params.get("n_ctx")
    ctx.stage("load", total=1)
    backend = open_backend(model, str(params.get("backend") or "auto"), n_ctx=int(n_ctx) if n_ctx else None,
                           device=str(params.get("device") or "auto"))
    ctx.progress(1)
    try:
        session = ChatSession(backend, system=params.get("system") or None, params=sampling)
        _restore(ctx, session, params)
        info = backend.describe()
        if not backend.has_chat_template:
            ctx.log("the model has no chat template: using a plain 'User:/Assistant:' transcript", level="warning")
        ctx.emit({"event": "ready", **info})
        driver = _Driver(ctx, session)
        prompt = params.get("prompt")
        if prompt is not None:
            result = driver.answer(str(prompt), raise_errors=True)
            ctx.emit({"event": "result", **(result or {})})
            return
        while True:
            ctx.check_cancel()
            msg = driver.next_message()
            if msg is not None and not driver.handle(msg):
                return
    finally:
        backend.close()
