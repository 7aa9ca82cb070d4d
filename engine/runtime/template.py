"""Chat templates: checking messages, rendering a model's Jinja template, and the fallback for models without one.

`render_template` mirrors what transformers' `apply_chat_template` does (same Jinja settings and helper
functions), so a GGUF's `tokenizer.chat_template` renders here exactly as the HF tokenizer renders it,
without importing transformers. Models that ship no template get `PLAIN_TEMPLATE`, a neutral
"User:/Assistant:" transcript whose turn marker doubles as a stop string.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

from bitsmith.engine.errors import BadInputError

ROLES = ("system", "user", "assistant")

PLAIN_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}User: {{ m['content'] }}\n"
    "{% else %}Assistant: {{ m['content'] }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
"""Used when a model has no chat template (base models): a plain transcript."""
PLAIN_STOPS = ("\nUser:",)
"""Stop strings that go with PLAIN_TEMPLATE: the model starting the user's next turn."""


class TemplateError(BadInputError):
    """The model's chat template refused the conversation (e.g. it has no system role)."""


def check_messages(messages: Any) -> list[dict[str, str]]:
    """Validate a conversation: a list of {"role": system|user|assistant, "content": str}; returns clean copies."""
    if not isinstance(messages, list):
        raise BadInputError(f"messages must be a list of {{role, content}} objects, got {type(messages).__name__}",
                            'send e.g. [{"role": "user", "content": "Hello"}]')
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise BadInputError(f"message {i} is not a {{role, content}} object with role in {ROLES}: {m!r}"[:300],
                                'each message needs "role" (system, user or assistant) and a text "content"')
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _raise(message: str) -> None:
    raise TemplateError(f"the chat template refused the conversation: {message}",
                        "check the roles (some templates need user/assistant turns to alternate)")


@lru_cache(maxsize=8)
def _compile(template: str) -> Any:
    from jinja2.exceptions import TemplateSyntaxError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except TemplateSyntaxError as exc:
        raise BadInputError(f"the model's chat template is not valid Jinja: {exc}",
                            "fix tokenizer_config.json's chat_template, or chat without a template") from exc


def render_template(
    template: str,
    messages: list[dict[str, str]],
    *,
    add_generation_prompt: bool = True,
    special_tokens: dict[str, str] | None = None,
) -> str:
    """Render `messages` with a Jinja chat template the way transformers does; TemplateError if it refuses."""
    compiled = _compile(template)
    try:
        return compiled.render(messages=messages, add_generation_prompt=add_generation_prompt,
                               **(special_tokens or {}))
    except TemplateError:
        raise
    except Exception as exc:  # a template bug or a conversation shape it cannot handle
        raise TemplateError(f"the chat template failed on this conversation: {type(exc).__name__}: {exc}",
                            "check the roles and contents of the messages") from exc


def fold_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Merge a leading system message into the first user message (for templates without a system role)."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], [dict(m) for m in messages[1:]]
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{system}\n\n{m['content']}"
            return rest
    return [{"role": "user", "content": system}, *rest]
