"""`ChatSession`: messages in, text pieces out, over any backend (native torch or llama.cpp).

The session keeps the whole conversation; only the *prompt* is trimmed to the context: the oldest
user/assistant turns are left out until the prompt plus room for the answer fits, and the system prompt
is never cut. A turn can be stopped at any moment (`stop()` from another thread, or a `should_stop`
callable); the partial answer is kept in the history. Errors inside a turn leave the history as it was
before the turn, so a conversation is never lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Protocol

from bitsmith.engine.errors import BadInputError

from .params import SamplingParams
from .stream import TextStream
from .template import TemplateError, check_messages, fold_system

MIN_ANSWER_ROOM = 16  # tokens that must stay free for an answer, whatever max_tokens says


class Backend(Protocol):
    """What a session needs from a runtime (native.NativeBackend, llamacpp.LlamaCppBackend)."""

    name: str
    n_ctx: int
    has_chat_template: bool
    default_stops: tuple[str, ...]
    eos_ids: frozenset[int]

    def render(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of the conversation with the assistant's generation prompt appended."""
        ...

    def generate(
        self, prompt_ids: list[int], params: SamplingParams, should_stop: Callable[[], bool]
    ) -> Iterator[int]:
        """Sampled token ids after the prompt, one at a time, until the caller stops iterating."""
        ...

    def decode(self, ids: list[int]) -> str:
        """Text of `ids` (special tokens left out)."""
        ...

    def describe(self) -> dict:
        """Facts for the user: backend, model, context, device."""
        ...

    def close(self) -> None:
        """Free the model."""
        ...


@dataclass
class TurnResult:
    """How one answer went. reason: eos, stop_string, max_tokens, context_full or stopped."""

    text: str
    reason: str
    prompt_tokens: int
    completion_tokens: int
    dropped_messages: int
    ttft_s: float | None
    decode_tok_s: float | None

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        return asdict(self)


class ChatSession:
    """A conversation with one model (see the module docstring)."""

    def __init__(
        self,
        backend: Backend,
        system: str | None = None,
        params: SamplingParams | None = None,
        messages: list[dict[str, str]] | None = None,
    ) -> None:
        self.backend = backend
        self.system = system or None
        self.params = params or SamplingParams()
        self.messages: list[dict[str, str]] = []
        self.last: TurnResult | None = None
        self._stop = threading.Event()
        if messages:
            self.load(messages)

    # -- the conversation --------------------------------------------------------------------------
    def load(self, messages: list[dict[str, str]]) -> None:
        """Replace the history (e.g. a saved conversation); a leading system message becomes the system prompt."""
        clean = check_messages(messages)
        if clean and clean[0]["role"] == "system":
            self.system = clean[0]["content"] or None
            clean = clean[1:]
        if any(m["role"] == "system" for m in clean):
            raise BadInputError("only the first message may have the system role",
                                "put the system prompt first, or send it as the session's system prompt")
        self.messages = clean

    def history(self) -> list[dict[str, str]]:
        """The full conversation, system prompt first."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + [dict(m) for m in self.messages]

    def reset(self) -> None:
        """Forget every turn (the system prompt stays)."""
        self.messages = []

    def stop(self) -> None:
        """Stop the answer being generated (safe from another thread); it ends at the next token."""
        self._stop.set()

    # -- prompts -----------------------------------------------------------------------------------
    def _render(self, messages: list[dict[str, str]]) -> list[int]:
        try:
            return self.backend.render(messages)
        except TemplateError:
            if messages and messages[0]["role"] == "system":
                return self.backend.render(fold_system(messages))  # templates without a system role
            raise

    def build_prompt(self, user_text: str, params: SamplingParams) -> tuple[list[int], int]:
        """(prompt ids, messages left out): the newest turns that fit with room for the answer."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        turns = [*self.messages, {"role": "user", "content": user_text}]
        n_ctx = self.backend.n_ctx
        room = max(min(params.max_tokens, n_ctx // 4), MIN_ANSWER_ROOM)
        start = 0
        while True:
            ids = self._render(head + turns[start:])
            if len(ids) + room <= n_ctx:
                return ids, start
            nxt = next((i for i in range(start + 1, len(turns)) if turns[i]["role"] == "user"), None)
            if nxt is None:  # only the new message is left
                if len(ids) + MIN_ANSWER_ROOM <= n_ctx:
                    return ids, start
                what = "the system prompt and your message take" if head else "your message takes"
                raise BadInputError(
                    f"{what} {len(ids)} tokens; the context holds {n_ctx} (with {MIN_ANSWER_ROOM} left for an answer)",
                    "shorten the message or the system prompt, or start the chat with a larger context (--ctx)",
                )
            start = nxt

    # -- answering ---------------------------------------------------------------------------------
    def send(
        self,
        user_text: str,
        params: SamplingParams | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[str]:
        """Add a user message and stream the answer's text pieces; `self.last` holds the TurnResult after."""
        if not isinstance(user_text, str) or not user_text.strip():
            raise BadInputError("the message is empty", "type something to send")
        params = params or self.params
        self._stop.clear()
        stopper = should_stop or (lambda: False)

        def stopped() -> bool:
            return self._stop.is_set() or stopper()

        prompt, dropped = self.build_prompt(user_text, params)
        stops = tuple(params.stop) + tuple(self.backend.default_stops)
        stream = TextStream(self.backend.decode, stops)
        n_ctx, eos = self.backend.n_ctx, self.backend.eos_ids
        t0 = time.perf_counter()
        t_first: float | None = None
        count, reason = 0, "stopped"
        tokens = self.backend.generate(prompt, params, stopped)
        try:
            for tok in tokens:
                if t_first is None:
                    t_first = time.perf_counter()
                count += 1
                if tok in eos:
                    reason = "eos"
                    break
                piece = stream.push(tok)
                if piece:
                    yield piece
                if stream.stopped_by is not None:
                    reason = "stop_string"
                    break
                if count >= params.max_tokens:
                    reason = "max_tokens"
                    break
                if len(prompt) + count >= n_ctx:
                    reason = "context_full"
                    break
                if stopped():
                    reason = "stopped"
                    break
        except GeneratorExit:  # the caller stopped reading: keep what was shown
            self._record(user_text, stream.text, "stopped", prompt, count, dropped, t0, t_first)
            raise
        finally:
            close = getattr(tokens, "close", None)
            if close is not None:
                close()
        tail = stream.finish()
        if tail:
            yield tail
        self._record(user_text, stream.text, reason, prompt, count, dropped, t0, t_first)

    def _record(self, user_text: str, answer: str, reason: str, prompt: list[int], count: int, dropped: int,
                t0: float, t_first: float | None) -> None:
        t_end = time.perf_counter()
        decode_s = t_end - t_first if t_first is not None else 0.0
        self.messages.append({"role": "user", "content": user_text})
        self.messages.append({"role": "assistant", "content": answer})
        self.last = TurnResult(
            text=answer,
            reason=reason,
            prompt_tokens=len(prompt),
            completion_tokens=count,
            dropped_messages=dropped,
            ttft_s=None if t_first is None else round(t_first - t0, 4),
            decode_tok_s=round((count - 1) / decode_s, 2) if count > 1 and decode_s > 0 else None,
        )

    def ask(self, user_text: str, params: SamplingParams | None = None) -> str:
        """The whole answer at once (one-shot use)."""
        return "".join(self.send(user_text, params))
