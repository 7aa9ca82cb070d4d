"""A tiny, deterministic backend for session tests: one token per character, a scripted answer."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from bitsmith.engine.runtime.params import SamplingParams
from bitsmith.engine.runtime.template import PLAIN_STOPS, PLAIN_TEMPLATE, TemplateError, render_template

EOS = 0


class FakeBackend:
    """Tokens are Unicode code points; the answer is `script` followed by EOS (or endless with eos=False)."""

    name = "fake"

    def __init__(self, n_ctx: int = 200, script: str = "The answer.", eos: bool = True, template: str | None = None,
                 system_ok: bool = True) -> None:
        self.n_ctx, self.script, self.eos, self.system_ok = n_ctx, script, eos, system_ok
        self.template = template
        self.has_chat_template = template is not None
        self.default_stops = () if template else PLAIN_STOPS
        self.eos_ids = frozenset({EOS})
        self.prompts: list[list[int]] = []
        self.fed = 0  # tokens the consumer read before stopping

    def render(self, messages: list[dict[str, str]]) -> list[int]:
        if not self.system_ok and any(m["role"] == "system" for m in messages):
            raise TemplateError("System role not supported")
        text = render_template(self.template or PLAIN_TEMPLATE, messages)
        return [ord(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids if i != EOS)

    def generate(self, prompt_ids: list[int], params: SamplingParams,
                 should_stop: Callable[[], bool] | None = None) -> Iterator[int]:
        self.prompts.append(list(prompt_ids))
        i = 0
        while True:
            if i < len(self.script):
                tok = ord(self.script[i])
            elif self.eos:
                tok = EOS
            else:
                tok = ord("x")
            i += 1
            self.fed = i
            yield tok

    def describe(self) -> dict:
        return {"backend": "fake", "n_ctx": self.n_ctx}

    def close(self) -> None:
        pass
