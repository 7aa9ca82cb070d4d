"""Records -> token ids and a loss mask, with the model's own chat template.

A chat is rendered with the tokenizer's chat template. Each assistant turn's span is what the template
adds after the generation prompt (`apply_chat_template(turns[:i], add_generation_prompt=True)`) up to the
end of that turn, so the loss covers the answer and its end-of-turn marker and nothing the user wrote.
Spans are tokenized separately from the prompt before them, which is also how the answer's tokens arise
at inference time (generated after the tokenized prompt).

A tokenizer without a chat template gets `FALLBACK_TEMPLATE` (ChatML, with the tokenizer's EOS after each
answer). It is installed on the tokenizer, so the saved model chats in the format it was trained in.
Plain text is tokenized as is (BOS as the tokenizer adds it) with EOS appended; the loss covers every token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bitsmith.engine.errors import BadInputError

from .data import Record

FALLBACK_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' }}"
    "{% if message['role'] == 'assistant' and eos_token %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""ChatML, used (and saved with the model) when the tokenizer has no chat template of its own."""


@dataclass(frozen=True)
class Example:
    """Token ids of one document and which of them are trained on (loss mask, same length)."""

    ids: tuple[int, ...]
    mask: tuple[bool, ...]

    @property
    def targets(self) -> int:
        """Tokens that are predicted and scored (a masked token is scored from the token before it)."""
        return sum(self.mask[1:])


def ensure_chat_template(tokenizer: Any) -> bool:
    """Install FALLBACK_TEMPLATE when the tokenizer has none; returns True if it did."""
    if getattr(tokenizer, "chat_template", None):
        return False
    tokenizer.chat_template = FALLBACK_TEMPLATE
    return True


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    if not isinstance(text, str):  # some versions return a list for batched input
        text = text[0]
    return text


def chat_segments(tokenizer: Any, messages: tuple[tuple[str, str], ...]) -> list[tuple[str, bool]]:
    """The rendered chat as (text, trained) segments that concatenate to the full rendering."""
    msgs = [{"role": r, "content": c} for r, c in messages]
    full = _render(tokenizer, msgs, False)
    segments: list[tuple[str, bool]] = []
    pos = 0
    for i, (role, content) in enumerate(messages):
        if role != "assistant":
            continue
        prompt = _render(tokenizer, msgs[:i], True) if i else ""
        upto = _render(tokenizer, msgs[: i + 1], False)
        if full.startswith(upto) and upto.startswith(prompt) and len(prompt) >= pos:
            start, end = len(prompt), len(upto)
        else:  # a template that rewrites earlier turns: fall back to finding the answer text itself
            start = full.find(content, pos)
            if start < 0:
                raise BadInputError("the chat template drops assistant messages, so answers cannot be located",
                                    "use a model whose chat template keeps earlier turns")
            end = start + len(content)
        if start > pos:
            segments.append((full[pos:start], False))
        segments.append((full[start:end], True))
        pos = end
    if pos < len(full):
        segments.append((full[pos:], False))
    return segments


def _encode(tokenizer: Any, text: str, special: bool = False) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"]) if text else []


def tokenize_record(tokenizer: Any, record: Record) -> Example:
    """One record -> Example (ids and loss mask)."""
    if record.kind == "text":
        ids = _encode(tokenizer, record.text, special=True)
        if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
            ids.append(tokenizer.eos_token_id)
        return Example(tuple(ids), (True,) * len(ids))
    ids: list[int] = []
    mask: list[bool] = []
    for text, trained in chat_segments(tokenizer, record.messages):
        piece = _encode(tokenizer, text)
        ids += piece
        mask += [trained] * len(piece)
    return Example(tuple(ids), tuple(mask))
