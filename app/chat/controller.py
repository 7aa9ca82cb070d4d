"""Drives a `chat` worker job for the chat page and writes every streamed token to the conversation store.

One worker is kept per (model, backend, context size); switching conversations re-sends the history from
the database (`messages` and `system` control messages, engine/runtime/job.py), so the database is the only
truth and a worker can die at any time without losing a word that was shown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, Signal

from ..qtjob import QtJob
from ..services import JobManager
from . import models
from .store import DEFAULT_TITLE, ChatStore, Conversation, Message, StoreError

SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_tokens", "seed")
DEFAULT_SAMPLING: dict[str, Any] = {"temperature": 0.7, "top_p": 0.95, "max_tokens": 512, "seed": None}
DEFAULT_N_CTX = 4096
TITLE_CHARS = 48


def sampling_for_worker(sampling: dict[str, Any]) -> dict[str, Any]:
    """The conversation's sampling settings as the worker expects them (a negative seed means random)."""
    out = {k: v for k, v in {**DEFAULT_SAMPLING, **sampling}.items() if k in SAMPLING_KEYS}
    if isinstance(out.get("seed"), int) and out["seed"] < 0:
        out["seed"] = None
    return out


def title_from(text: str) -> str:
    """A conversation title from its first message."""
    line = " ".join(text.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


@dataclass
class _Turn:
    conversation_id: int
    message_id: int
    started: float
    first_token: float | None = None
    tokens: int = 0
    stop_requested: bool = False


class ChatController(QObject):
    """Sends turns to a chat worker and records the answers (see the module docstring)."""

    busy_changed = Signal(bool)
    status = Signal(str)
    message_added = Signal(object)  # Message
    token = Signal(int, str)  # message id, text
    message_finished = Signal(object)  # Message
    speed = Signal(int, float)  # tokens so far, tokens per second
    problem = Signal(str, str)  # what happened, what to do
    conversation_changed = Signal(object)  # Conversation (e.g. its automatic title)

    def __init__(self, store: ChatStore, jobs: JobManager, n_ctx: int = DEFAULT_N_CTX,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.store, self.jobs, self.n_ctx = store, jobs, n_ctx
        self.job: QtJob | None = None
        self.job_key: tuple[str, str, int] | None = None
        self.ready = False
        self.model_info: dict[str, Any] = {}
        self.turn: _Turn | None = None

    @property
    def busy(self) -> bool:
        """True while an answer is being generated."""
        return self.turn is not None

    # -- turns ------------------------------------------------------------------------------------
    def send(self, conv: Conversation, text: str) -> bool:
        """Add a user message and start its answer; False (with a `problem`) when it cannot start."""
        if self.turn is not None:
            self.problem.emit("An answer is still being written.", "Wait for it or press Stop, then send again.")
            return False
        if not text.strip():
            return False
        trouble = models.problem(conv.model, conv.backend)
        if trouble is not None:
            self.problem.emit(*trouble)
            return False
        try:  # a full disk or a locked database: say so and start nothing
            history = self.store.history(conv.id)
            user = self.store.add_message(conv.id, "user", text)
            answer = self.store.add_message(conv.id, "assistant", "", status="streaming",
                                            meta={"model": models.label(conv.model), "backend": conv.backend})
            if conv.title == DEFAULT_TITLE and not history:
                conv = self.store.rename(conv.id, title_from(text))
                self.conversation_changed.emit(conv)
        except StoreError as exc:
            self.problem.emit(f"The message was not sent: {exc}", exc.hint)
            return False
        self.message_added.emit(user)
        self.message_added.emit(answer)
        self.turn = _Turn(conv.id, answer.id, time.monotonic())
        self.busy_changed.emit(True)
        job = self._ensure_worker(conv)
        job.send({"type": "system", "content": conv.system or ""})
        job.send({"type": "messages", "messages": history})
        job.send({"type": "user", "content": text, "sampling": sampling_for_worker(conv.sampling)})
        if self.ready:
            self.status.emit("Generating…")
        return True

    def resend_from(self, conv: Conversation, message_id: int, text: str) -> bool:
        """Edit-and-resend: delete this user message and everything after it, then send `text`."""
        if self.turn is not None:
            return False
        try:
            self.store.truncate_from(message_id)
        except StoreError as exc:
            self.problem.emit(f"The edited message was not sent: {exc}", exc.hint)
            return False
        return self.send(conv, text)

    def regenerate(self, conv: Conversation) -> bool:
        """Answer the last user message again (its old answer is replaced)."""
        if self.turn is not None:
            return False
        last_user = next((m for m in reversed(self.store.messages(conv.id)) if m.role == "user"), None)
        if last_user is None:
            return False
        return self.resend_from(conv, last_user.id, last_user.content)

    def stop(self) -> None:
        """Stop the answer being written (the text so far is kept)."""
        if self.turn is None:
            return
        self.turn.stop_requested = True
        if self.job is None or not self.job.send({"type": "stop"}):
            self._finish_turn("stopped", {"reason": "stopped"})

    # -- the worker -------------------------------------------------------------------------------
    def _ensure_worker(self, conv: Conversation) -> QtJob:
        key = (conv.model, conv.backend, self.n_ctx)
        if self.job is not None and self.job.running and self.job_key == key:
            return self.job
        self.end_worker()
        self.ready = False
        self.status.emit(f"Loading {models.label(conv.model)}…")
        params = {"model": conv.model, "backend": conv.backend, "n_ctx": models.chat_context(conv.model, self.n_ctx),
                  "system": conv.system or "", "sampling": sampling_for_worker(conv.sampling)}
        job = self.jobs.start("chat", params)
        job.event.connect(lambda ev, j=job: self._on_event(j, ev))
        job.finished.connect(lambda ev, j=job: self._on_finished(j, ev))
        self.job, self.job_key = job, key
        return job

    def end_worker(self) -> None:
        """Close the current worker politely (its model is freed)."""
        job, self.job, self.job_key, self.ready = self.job, None, None, False
        if job is not None and job.running:
            if not job.send({"type": "end"}):
                job.cancel()

    def _on_event(self, job: QtJob, ev: dict) -> None:
        if job is not self.job:
            return
        kind = ev.get("event")
        if kind == "ready":
            self.ready = True
            self.model_info = ev
            where = f" · {ev['device']}" if ev.get("device") else ""
            name = models.label(str(self.job_key[0] if self.job_key else ""))
            self.status.emit(f"Ready · {name} · {ev.get('backend', '')} · context {ev.get('n_ctx', '?')}{where}")
            if self.turn is not None:
                self.status.emit("Generating…")
        elif kind == "token" and self.turn is not None:
            text = str(ev.get("text", ""))
            turn = self.turn
            now = time.monotonic()
            if turn.first_token is None:
                turn.first_token = now
            turn.tokens += 1
            try:
                self.store.append_text(turn.message_id, text)
            except StoreError as exc:  # what cannot be saved is not written on: stop, keep what was saved
                self.token.emit(turn.message_id, text)
                self._save_failed(exc)
                return
            self.token.emit(turn.message_id, text)
            elapsed = now - turn.first_token
            self.speed.emit(turn.tokens, (turn.tokens - 1) / elapsed if elapsed > 0 else 0.0)
        elif kind == "turn_end" and self.turn is not None:
            status = "stopped" if ev.get("reason") == "stopped" else "complete"
            meta = {k: ev.get(k) for k in ("reason", "prompt_tokens", "completion_tokens", "ttft_s", "decode_tok_s",
                                           "dropped_messages")}
            text = ev.get("text")
            self._finish_turn(status, meta, text if isinstance(text, str) else None)
        elif kind == "turn_error" and self.turn is not None:
            message, hint = str(ev.get("message", "the answer failed")), str(ev.get("hint", ""))
            self._finish_turn("error", {"error": message, "hint": hint})
            self.problem.emit(f"The model could not answer: {message}", hint)
        elif kind == "log" and ev.get("level") == "warning":
            self.status.emit(str(ev.get("message", "")))

    def _on_finished(self, job: QtJob, done: dict) -> None:
        if job is not self.job:
            return
        self.job, self.job_key, self.ready = None, None, False
        error = job.errors[-1] if job.errors else None
        if done.get("status") == "ok" and error is None:
            self.status.emit("The model was closed.")
            if self.turn is not None:
                self._finish_turn("interrupted", {"error": "the model process ended"})
            return
        if error is not None:
            message = str(error.get("message", "the model process failed"))
            hint = str(error.get("hint", ""))
            if error.get("kind") == "worker_died":
                what = "The model process stopped unexpectedly"
                hint = (hint + ". " if hint else "") + "Your conversation is saved; send again to restart the model."
            else:
                what = "The model could not be started" if not self.ready else "The model process failed"
        elif done.get("status") == "cancelled":
            message, hint, what = "the model process was cancelled", "send again to restart it", "Stopped"
        else:
            message, hint, what = "the model process ended", "send again to restart it", "The model stopped"
        if self.turn is not None:
            status = "stopped" if self.turn.stop_requested and done.get("status") == "cancelled" else (
                "error" if not self.store.message(self.turn.message_id).content else "interrupted")
            self._finish_turn(status, {"error": message, "hint": hint})
        self.status.emit(f"{what}.")
        self.problem.emit(f"{what}: {message}", hint)

    def _finish_turn(self, status: str, meta: dict[str, Any], content: str | None = None) -> None:
        turn, self.turn = self.turn, None
        if turn is None:
            return
        try:
            msg = self.store.finish_message(turn.message_id, status, meta, content=content)
        except KeyError:  # the conversation was deleted meanwhile
            msg = None
        except StoreError as exc:  # the turn still ends: the Send button must come back
            msg = None
            self.problem.emit(f"The answer could not be saved: {exc}", exc.hint)
        if msg is not None:
            self.message_finished.emit(msg)
        self.busy_changed.emit(False)
        if self.ready:
            self.status.emit(f"Ready · {models.label(str(self.job_key[0] if self.job_key else ''))}")

    def _save_failed(self, exc: StoreError) -> None:
        """The database refused a write mid-answer (disk full): stop generating and end the turn."""
        if self.job is not None:
            self.job.send({"type": "stop"})
        self._finish_turn("error", {"error": str(exc)})
        self.problem.emit(f"The answer was stopped because it could not be saved: {exc}",
                          exc.hint or "free some disk space, then regenerate the answer")

    def shutdown(self) -> None:
        """The window closes: keep the partial answer as stopped and end the worker."""
        if self.turn is not None:
            self._finish_turn("stopped", {"reason": "stopped", "note": "the app was closed mid-answer"})
        job = self.job
        self.end_worker()
        if job is not None:
            job.close(2.0)

    def current_message(self) -> Message | None:
        """The answer being written, if any."""
        return self.store.message(self.turn.message_id) if self.turn is not None else None
