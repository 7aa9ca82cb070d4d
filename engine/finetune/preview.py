"""The `preview_dataset` job: the first training examples as the trainer will format them, torch-free.

Each example comes back as (text, trained) segments: the chat rendered with the model's chat template and
split by template.chat_segments exactly as the fine-tune job splits it (trained = inside the loss), or a plain
text document (all trained). No tokenizer library is loaded: the model folder's chat template and special
tokens are read from its files and rendered with the same Jinja settings transformers uses
(engine/runtime/template.py). A tokenizer without a template, or no model at all, gets the engine's fallback
(ChatML, template.FALLBACK_TEMPLATE), and the preview says so. Malformed records are all listed (file:line and
what is wrong) rather than only the first, with the counts of the train / held-out split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bitsmith.engine.errors import BadInputError
from bitsmith.engine.jobfiles import read_json
from bitsmith.engine.jobs import JobContext, job

from .data import _HINT_FORMATS, Dataset, Record, hub_repo, load_dataset
from .split import DEFAULT_HELDOUT, heldout_count
from .template import ensure_chat_template

SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
EXAMPLES = 5  # shown by default
MAX_CHARS = 1500  # per example in the preview (the trainer sees everything)
MAX_LISTED = 20  # malformed records listed by name
FALLBACK_NAME = "ChatML (<|im_start|>role … <|im_end|>)"


class TemplateTokenizer:
    """The part of a tokenizer that chat_segments uses: a chat template and its special tokens, rendered by Jinja."""

    def __init__(self, chat_template: str | None, special_tokens: dict[str, str] | None = None) -> None:
        self.chat_template = chat_template
        self.special_tokens = dict(special_tokens or {})

    @property
    def eos_token(self) -> str | None:
        """The end-of-sequence token's text (appended to plain-text documents), if known."""
        return self.special_tokens.get("eos_token")

    def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool = False,
                            add_generation_prompt: bool = False) -> str:
        """The rendered chat, as transformers' apply_chat_template(..., tokenize=False) returns it."""
        from bitsmith.engine.runtime.template import render_template

        if tokenize:
            raise ValueError("a TemplateTokenizer only renders text")
        if not self.chat_template:
            raise BadInputError("this tokenizer has no chat template", "install the fallback template first")
        return render_template(self.chat_template, messages, add_generation_prompt=add_generation_prompt,
                               special_tokens=self.special_tokens)

    @classmethod
    def from_folder(cls, folder: str | Path) -> TemplateTokenizer:
        """The chat template and special tokens of a Hugging Face / Bitsmith model folder, from its files."""
        folder = Path(folder)
        config = _json_object(folder / "tokenizer_config.json")
        special: dict[str, str] = {}
        for source in (_json_object(folder / "special_tokens_map.json"), config):
            for name in SPECIAL_TOKENS:
                text = _token_text(source.get(name))
                if text:
                    special[name] = text
        return cls(_folder_template(folder, config), special)


def _json_object(path: Path) -> dict[str, Any]:
    return read_json(path) or {}


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer files store it: a string or an AddedToken dict with "content"."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _folder_template(folder: Path, config: dict[str, Any]) -> str | None:
    """The chat template transformers would load: chat_template.jinja, else chat_template.json, else the config."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        text = jinja.read_text(encoding="utf-8")
        return text if text.strip() else None
    template = _json_object(folder / "chat_template.json").get("chat_template") or config.get("chat_template")
    if isinstance(template, list):  # named templates: the "default" one is what apply_chat_template uses
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    return template if isinstance(template, str) and template.strip() else None


def _clip(segments: list[tuple[str, bool]], limit: int) -> tuple[list[list[Any]], bool]:
    """At most `limit` characters of segments (as JSON lists); True if something was cut."""
    out: list[list[Any]] = []
    left = limit
    for text, trained in segments:
        if left <= 0:
            return out, True
        out.append([text[:left], trained])
        left -= len(text)
    return out, left < 0


def format_record(tokenizer: TemplateTokenizer, record: Record) -> list[tuple[str, bool]]:
    """One record as (text, trained) segments, the way the fine-tune job masks it."""
    from .template import chat_segments

    if record.kind == "text":
        tail = [(tokenizer.eos_token, True)] if tokenizer.eos_token else []
        return [(record.text, True), *tail]
    return chat_segments(tokenizer, record.messages)


def _load(source: str, on_error: str) -> Dataset:
    """All records, skipping malformed ones; if none is left, the first malformed one's own error."""
    try:
        return load_dataset(source, "skip")
    except BadInputError:
        if on_error == "skip":
            raise
        load_dataset(source, "stop")  # names the first bad record (file:line) when there is one
        raise


def _template_note(model: str | None, tokenizer: TemplateTokenizer, fallback: bool) -> tuple[str, str]:
    """(which template, a sentence for the user)."""
    if model is None:
        return "fallback", (f"No model chosen yet: chats are shown in {FALLBACK_NAME}, the engine's fallback format. "
                            "The model's own chat template is used once you choose one.")
    name = Path(model).name
    if fallback:
        return "fallback", (f"{name}'s tokenizer has no chat template: the fine-tune uses {FALLBACK_NAME} and saves "
                            "it with the tuned model, so chat uses the same format.")
    return "model", f"Formatted with {name}'s own chat template."


def preview_dataset(source: str, model: str | None = None, *, heldout: float = DEFAULT_HELDOUT,
                    limit: int = EXAMPLES, on_error: str = "stop") -> dict[str, Any]:
    """The preview as a JSON-ready dict (see the module docstring); BadInputError / NetworkError as the job has."""
    data = _load(source, on_error)
    model_dir = Path(model).expanduser() if model else None
    if model_dir is not None and not model_dir.is_dir():
        raise BadInputError(f"the model folder {model_dir} does not exist", "choose another model")
    tokenizer = TemplateTokenizer.from_folder(model_dir) if model_dir is not None else TemplateTokenizer(None)
    chats = "chat" in data.kinds
    fallback = ensure_chat_template(tokenizer) if chats else False
    template, note = _template_note(model, tokenizer, fallback) if chats else (
        "none", "Plain text: every token is trained on; an end-of-text token follows each document.")
    n = len(data.records)
    split_note = None
    try:
        held = heldout_count(n, heldout)
    except BadInputError as exc:
        held, split_note = 0, f"{exc}: {exc.hint}" if exc.hint else str(exc)
    examples = []
    for record in data.records[:max(0, limit)]:
        segments, cut = _clip(format_record(tokenizer, record), MAX_CHARS)
        examples.append({"where": record.where, "kind": record.kind, "segments": segments, "truncated": cut})
    kinds = sorted(data.kinds)
    return {"source": data.source, "hub": hub_repo(source), "documents": n, "kinds": kinds,
            "chats": sum(r.kind == "chat" for r in data.records), "train": n - held, "heldout": held,
            "heldout_fraction": heldout, "split_note": split_note, "template": template, "template_note": note,
            "skipped": data.skipped[:MAX_LISTED], "skipped_count": len(data.skipped),
            "formats_hint": _HINT_FORMATS[0].upper() + _HINT_FORMATS[1:] + ".", "examples": examples}


@job("preview_dataset")
def preview_job(ctx: JobContext, params: dict[str, Any]) -> None:
    """Worker entry point: params data (file, folder or Hub id), model (folder, optional), heldout, limit."""
    source = params.get("data")
    if not isinstance(source, str) or not source.strip():
        raise BadInputError("the preview request lacks 'data'", "pass a dataset file, folder or Hub id")
    repo = hub_repo(source.strip())
    ctx.stage("download" if repo else "read", total=1)
    if repo:
        ctx.log(f"fetching the dataset {repo} from the Hugging Face Hub (or its local cache)")
    on_error = str(params.get("on_bad_line") or "stop")
    preview = preview_dataset(source.strip(), params.get("model") or None,
                              heldout=float(params.get("heldout", DEFAULT_HELDOUT)),
                              limit=int(params.get("limit", EXAMPLES)), on_error=on_error)
    ctx.progress(1)
    ctx.emit({"event": "result", "preview": preview})
