"""The tokenizer part of a GGUF file: vocabulary, merges or SentencePiece scores, special tokens, chat template.

Two sources. A model that came from a GGUF (the bundled SmolLM2, or any .gguf the user quantized) has
its `tokenizer.*` keys copied verbatim from that file: exactly what llama.cpp already ran. Otherwise the
keys are built from the Hugging Face tokenizer files, the way llama.cpp's convert_hf_to_gguf.py does:
byte-level BPE ("gpt2": tokens, token types, merges, and the pre-tokenizer recognised by hashing the
tokens of a probe text) or SentencePiece-style BPE with byte fallback ("llama": tokens with their word-start
marker, scores in merge order, byte/control/user-defined types). Special token ids and add-BOS flags come
from gguf.SpecialVocab; the chat template from the tokenizer.
"""

from __future__ import annotations

import json
import logging
import re
from hashlib import sha256
from pathlib import Path
from typing import Any

from bitsmith.engine.errors import UnsupportedModelError

log = logging.getLogger(__name__)

# llama.cpp identifies a BPE pre-tokenizer by hashing the ids of this text (convert_hf_to_gguf.py).
CHKTXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ "
    "🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you "
    "sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
KNOWN_PRE = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d": "smaug-bpe",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",
    "9d032fcbd5501f4a38150912590928bfb36091efb5df11b8e2124b0390e3fb1e": "falcon3",
}
"""The hashes (from llama.cpp's convert_hf_to_gguf.py) of the families Bitsmith exports."""

# gguf.TokenType values
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def source_gguf(meta: dict) -> Path | None:
    """The GGUF file a Bitsmith model was quantized from, if it still exists."""
    from bitsmith.engine.model import resolve_source

    src = (meta.get("source") or {}).get("model")
    if not src:
        return None
    try:
        path = Path(resolve_source(str(src)))
    except Exception:  # noqa: BLE001 - the bundled package may be gone
        return None
    return path if path.suffix.lower() == ".gguf" and path.is_file() else None


def copy_from_gguf(writer: Any, path: Path, vocab_size: int) -> list[str] | None:
    """Copy every `tokenizer.*` key of `path` into `writer` and return their names; None (nothing written)
    if its vocabulary does not match the model's embeddings."""
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(str(path))
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    if tokens is None or len(tokens.data) != vocab_size:
        log.warning("%s: its vocabulary does not match the model's %d embeddings; rebuilding it", path, vocab_size)
        return None
    copied = []
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        sub = field.types[1] if vtype == GGUFValueType.ARRAY and len(field.types) > 1 else None
        writer.add_key_value(key, field.contents(), vtype, sub)
        copied.append(key)
    return copied


def bpe_pre(tokenizer: Any) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer ("default" with a warning when unknown)."""
    ids = tokenizer.encode(CHKTXT)
    digest = sha256(str(ids).encode()).hexdigest()
    name = KNOWN_PRE.get(digest)
    if name is None:
        log.warning("unknown BPE pre-tokenizer (hash %s): llama.cpp will use its default splitting", digest)
        return "default"
    return name


def _is_special_looking(text: str) -> bool:
    return (text.startswith("<|") and text.endswith("|>")) or text in ("<pad>", "<mask>")


def _hf_tokens(tokenizer: Any, vocab_size: int, spm: bool) -> tuple[list[str], list[int], list[float]]:
    vocab = tokenizer.get_vocab()
    reverse = {i: t for t, i in vocab.items()}
    added = tokenizer.get_added_vocab()
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    unk = getattr(tokenizer, "unk_token_id", None)
    tokens, types, scores = [], [], []
    for i in range(vocab_size):
        text = reverse.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            scores.append(-1000.0)
            continue
        if spm and re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", text):
            kind, score = BYTE, 0.0
        elif i == unk:
            kind, score = UNKNOWN, 0.0
        elif text in added:
            info = decoder.get(i)
            special = bool(getattr(info, "special", False)) or _is_special_looking(text)
            kind = CONTROL if special else USER_DEFINED
            if kind == USER_DEFINED and spm:
                text = text.replace("\u2581", " ")
            score = 0.0
        else:
            kind, score = NORMAL, -float(i)  # BPE merge order: earlier ids merge first
        tokens.append(text)
        types.append(kind)
        scores.append(score)
    return tokens, types, scores


def build_from_hf(writer: Any, folder: Path, tokenizer: Any, vocab_size: int) -> str:
    """Write the tokenizer keys from HF files in `folder`; returns the tokenizer model name (gpt2 or llama)."""
    import gguf

    spec_path = folder / "tokenizer.json"
    if not spec_path.is_file():
        raise UnsupportedModelError(f"{folder} has no tokenizer.json", "save the model with a fast tokenizer")
    model = json.loads(spec_path.read_text(encoding="utf-8")).get("model", {})
    kind = model.get("type")
    if kind != "BPE":
        raise UnsupportedModelError(f"tokenizers of type {kind!r} cannot be exported to GGUF yet",
                                    "chat with the native backend instead")
    spm = bool(model.get("byte_fallback"))
    tokens, types, scores = _hf_tokens(tokenizer, vocab_size, spm)
    if spm:
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_add_space_prefix(_adds_space_prefix(folder))
        special = gguf.SpecialVocab(folder, load_merges=False, n_vocab=vocab_size)
    else:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(bpe_pre(tokenizer))
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size)
    special.chat_template = None  # written by write_tokenizer from the tokenizer itself
    special.add_to_gguf(writer, quiet=True)
    return "llama" if spm else "gpt2"


def _adds_space_prefix(folder: Path) -> bool:
    """Whether the SentencePiece normaliser prepends "▁" to the text (Llama 2 yes, Gemma no)."""
    spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    text = json.dumps([spec.get("normalizer"), spec.get("pre_tokenizer")])
    return '"prepend": "\\u2581"' in text or '"prepend_scheme": "always"' in text or '"add_prefix_space": true' in text


def write_tokenizer(writer: Any, folder: Path, tokenizer: Any, meta: dict, vocab_size: int) -> str:
    """Tokenizer keys for the export: copied from the source GGUF when there is one, else built from HF files.

    Returns where they came from ("gguf:<file>" or "hf:<model>"). The chat template is always written
    (from the tokenizer, or kept from the source GGUF); a model without one gets none, and chat falls back
    to a plain transcript.
    """
    src = source_gguf(meta)
    template = getattr(tokenizer, "chat_template", None)
    copied = copy_from_gguf(writer, src, vocab_size) if src is not None else None
    if copied is not None:
        if template and "tokenizer.chat_template" not in copied:
            writer.add_chat_template(template)
        return f"gguf:{src.name}"
    kind = build_from_hf(writer, folder, tokenizer, vocab_size)
    if template:
        writer.add_chat_template(template)
    return f"hf:{kind}"

