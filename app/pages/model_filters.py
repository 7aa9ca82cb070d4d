"""The Models page's Hub search filters beyond size and sort: model family and licence (Qt-free).

The Hub has no "family" field, so a model's family is read from its repo name, then from the base model its tags
name (`base_model:…`, what fine-tunes and quantizations declare), then from its architecture tag (`llama`, `qwen2`,
`gemma3`…). The licence is the Hub's own (`license:` tag, else the card data), as HubModel.license holds it.
A family filter searches the Hub for the family's name when nothing is typed (or for the typed text), and is then
applied here: like a licence group, which the Hub cannot filter on either, it fetches more results than it shows
and keeps the matching ones. A single licence is the Hub's own filter.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# (key, label, name pattern, architecture-tag pattern). Order matters: a name naming two families takes the first
# (SmolLM models are Llama-shaped; a "Qwen…-llama" merge is a Qwen).
FAMILIES: tuple[tuple[str, str, str, str], ...] = (
    ("smollm", "SmolLM", r"smollm", r"smollm\d*"),
    ("qwen", "Qwen", r"qwen|qwq", r"qwen\d*(?:_\w+)?"),
    ("gemma", "Gemma", r"gemma", r"gemma\d*(?:_\w+)?"),
    ("phi", "Phi", r"(?:^|[^a-z])phi(?:[^a-z]|$)", r"phi\d*(?:_\w+)?|phimoe"),
    ("mistral", "Mistral", r"mistral|mixtral|ministral", r"mistral\d*|mixtral"),
    ("llama", "Llama", r"llama", r"llama\d*"),
)
_NAME = {key: re.compile(pattern) for key, _label, pattern, _arch in FAMILIES}
_ARCH = {key: re.compile(arch) for key, _label, _pattern, arch in FAMILIES}

# (key, label, the Hub licence ids it covers)
LICENCES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("open", "Open source (Apache 2.0, MIT, BSD)", ("apache-2.0", "mit", "bsd-3-clause", "bsd-2-clause", "bsd")),
    ("apache-2.0", "Apache 2.0", ("apache-2.0",)),
    ("mit", "MIT", ("mit",)),
    ("llama", "Llama community licence", ("llama2", "llama3", "llama3.1", "llama3.2", "llama3.3", "llama4")),
    ("gemma", "Gemma terms of use", ("gemma",)),
    ("noncommercial", "Non-commercial (CC BY-NC)", ("cc-by-nc-4.0", "cc-by-nc-sa-4.0", "cc-by-nc-nd-4.0")),
)
_LICENCE_IDS = {key: ids for key, _label, ids in LICENCES}
OVERSAMPLE = 4  # a filter the Hub cannot apply keeps about one result in a few: fetch this many times more
MAX_FETCH = 100


def _name_family(name: str) -> str | None:
    low = name.lower()
    return next((key for key, pattern in _NAME.items() if pattern.search(low)), None)


def family_of(model_id: str, tags: Iterable[str] = ()) -> str | None:
    """The family key of a Hub model ('llama', 'qwen'…), or None when neither its name nor its tags say."""
    found = _name_family(model_id.split("/")[-1])
    if found:
        return found
    tags = [str(t) for t in tags]
    for tag in tags:  # base_model:Qwen/Qwen2.5-7B, base_model:finetune:…, base_model:quantized:…
        if tag.startswith("base_model:"):
            found = _name_family(tag.rsplit("/", 1)[-1])
            if found:
                return found
    for key, arch in _ARCH.items():
        if any(arch.fullmatch(t.lower()) for t in tags):
            return key
    return None


def family_label(key: str | None) -> str:
    """'Qwen' for 'qwen'; '' for None."""
    return next((label for k, label, _p, _a in FAMILIES if k == key), "")


def licence_label(key: str | None) -> str:
    """'Apache 2.0' for 'apache-2.0'; '' for None."""
    return next((label for k, label, _ids in LICENCES if k == key), "")


@dataclass(frozen=True)
class SearchFilter:
    """The family and licence filters chosen on the page (None: any)."""

    family: str | None = None
    licence: str | None = None

    def hub_query(self, text: str | None) -> str | None:
        """What to send as the Hub's search text: the typed text, else the family's name (its key is that word)."""
        return text or self.family

    def hub_licence(self) -> str | None:
        """The licence id the Hub can filter on itself (a filter covering several ids is applied here)."""
        ids = _LICENCE_IDS.get(self.licence or "", ())
        return ids[0] if len(ids) == 1 else None

    def fetch_limit(self, shown: int) -> int:
        """How many results to ask the Hub for so that about `shown` survive the filters applied here (a search for
        "phi" also finds "dolphin" models)."""
        local = self.family is not None or (self.licence is not None and self.hub_licence() is None)
        return min(MAX_FETCH, shown * OVERSAMPLE) if local else shown

    def keeps(self, model: Any) -> bool:
        """Whether a HubModel passes both filters."""
        if self.family is not None and family_of(model.id, model.tags) != self.family:
            return False
        if self.licence is not None and (model.license or "").lower() not in _LICENCE_IDS.get(self.licence, ()):
            return False
        return True

    def describe(self) -> str:
        """'Qwen models, licence: Apache 2.0'; '' when no filter is on."""
        what = f"{family_label(self.family)} models" if self.family else "models"
        if self.licence:
            return f"{what}, licence: {licence_label(self.licence)}"
        return what if self.family else ""
