"""Export a conversation as Markdown (to read or share) or JSON (to re-import or feed other tools)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from bitsmith.engine.jobfiles import write_text_atomic  # noqa: F401 - the chat page writes exports through it

from .store import Conversation, Message

EXPORT_FORMAT = "bitsmith-conversation/1"


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="seconds")


def to_dict(conv: Conversation, messages: list[Message]) -> dict[str, Any]:
    """A JSON-ready description: settings, then messages in the common {role, content} shape plus facts."""
    return {
        "format": EXPORT_FORMAT,
        "title": conv.title,
        "created_at": _stamp(conv.created_at),
        "updated_at": _stamp(conv.updated_at),
        "model": conv.model,
        "backend": conv.backend,
        "system": conv.system,
        "sampling": conv.sampling,
        "messages": [
            {"role": m.role, "content": m.content, "created_at": _stamp(m.created_at), "status": m.status,
             **({"meta": m.meta} if m.meta else {})}
            for m in messages
        ],
    }


def to_json(conv: Conversation, messages: list[Message]) -> str:
    """The conversation as pretty-printed JSON text."""
    return json.dumps(to_dict(conv, messages), indent=2, ensure_ascii=False) + "\n"


def to_markdown(conv: Conversation, messages: list[Message]) -> str:
    """The conversation as Markdown: a heading, the settings, then each message under its speaker."""
    lines = [f"# {conv.title}", ""]
    if conv.model:
        lines.append(f"- Model: `{conv.model}` ({conv.backend})")
    lines.append(f"- Started: {_stamp(conv.created_at)}")
    if conv.sampling:
        lines.append("- Sampling: " + ", ".join(f"{k}={v}" for k, v in sorted(conv.sampling.items())))
    lines.append("")
    if conv.system:
        lines += ["## System", "", conv.system, ""]
    names = {"user": "You", "assistant": "Assistant", "system": "System"}
    for m in messages:
        note = "" if m.status == "complete" else f" _({m.status})_"
        lines += [f"## {names.get(m.role, m.role)}{note}", "", m.content.rstrip(), ""]
    return "\n".join(lines).rstrip() + "\n"
