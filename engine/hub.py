"""The Hub client: search text-generation models, read a model card, judge fit before downloading, download.

Search and model cards are thin layers over huggingface_hub's HfApi (list_models / model_info). The fit
verdict needs no weights: config.json (a few KB) and the safetensors headers (Range requests of the first
bytes of each shard) are enough for bitsmith.engine.plan to size the model for this machine. Downloads live
in bitsmith.engine.hub_download and are re-exported here.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from bitsmith.engine.errors import BadInputError, BitsmithError, NetworkError
from bitsmith.engine.hub_common import check_model_id, endpoint, hub_errors, is_offline, translate
from bitsmith.engine.hub_download import (  # noqa: F401 - re-exported: the Hub client's public API
    DownloadPlan,
    DownloadProgress,
    DownloadResult,
    RemoteFile,
    default_dest,
    download_model,
    find_local,
    plan_download,
)

SORTS = {"downloads": "downloads", "likes": "likes", "recent": "last_modified", "trending": "trending_score"}
SEARCH_FIELDS = [
    "author", "downloads", "likes", "gated", "lastModified", "library_name", "pipeline_tag",
    "safetensors", "tags", "private", "sha",
]
DTYPE_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BOOL": 1,
}
_UNITS = {"K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}


@dataclass
class FitResult:
    """Whether a model at `bpw` bits per weight runs on this machine for chat, and by how much it misses."""

    verdict: str  # "gpu" | "offload" | "cpu" | "no_fit" (bitsmith.engine.plan)
    gap_gb: float | None
    bpw: float


@dataclass
class HubModel:
    """One search result: what the Hub says about a model, plus the fit verdict when it was asked for."""

    id: str
    author: str | None
    downloads: int | None
    likes: int | None
    params: int | None
    license: str | None
    gated: bool
    library: str | None
    last_modified: datetime | None
    size_bytes: int | None  # bytes of the safetensors weights, from the Hub's parameter counts per dtype
    pipeline_tag: str | None = None
    tags: list[str] = field(default_factory=list)
    fit: FitResult | None = None
    fit_note: str | None = None  # why `fit` is None, when it was asked for

    @classmethod
    def from_info(cls, info: Any) -> HubModel:
        """Build from a huggingface_hub ModelInfo."""
        tags = list(info.tags or [])
        st = info.safetensors
        params = int(st.total) if st and st.total else None
        size = None
        if st and st.parameters and all(d in DTYPE_BYTES for d in st.parameters):
            size = sum(DTYPE_BYTES[d] * n for d, n in st.parameters.items())
        license_ = next((t.split(":", 1)[1] for t in tags if t.startswith("license:")), None)
        if license_ is None and info.card_data is not None:
            license_ = getattr(info.card_data, "license", None)
        return cls(
            id=info.id, author=info.author or info.id.split("/")[0], downloads=info.downloads, likes=info.likes,
            params=params, license=license_, gated=bool(info.gated), library=info.library_name,
            last_modified=info.last_modified, size_bytes=size, pipeline_tag=info.pipeline_tag, tags=tags,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        out = asdict(self)
        out["last_modified"] = self.last_modified.isoformat() if self.last_modified else None
        return out


def parse_params(value: str | int | float | None) -> int | None:
    """'7B' -> 7_000_000_000, '500M', '1.5b', '123' -> 123; None stays None. Raises BadInputError otherwise."""
    if value is None or isinstance(value, (int, float)):
        return None if value is None else int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMbBgGtT]?)\s*", value)
    if not m:
        raise BadInputError(f"'{value}' is not a parameter count", hint="write it like 500M, 1.5B or 7B")
    return int(float(m.group(1)) * _UNITS.get(m.group(2).upper(), 1))


def _hub_count(n: int) -> str:
    """A count in the Hub's num_parameters syntax, exact: 7B, 1500M, 135M, 42."""
    for unit in ("T", "B", "M", "K"):
        if n and n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return str(n)


def search_models(
    query: str | None = None,
    *,
    author: str | None = None,
    min_params: int | str | None = None,
    max_params: int | str | None = None,
    library: str | None = None,
    license: str | None = None,  # noqa: A002 - the Hub's own word
    sort: str = "downloads",
    limit: int = 20,
    bpw: float | None = None,
    hardware: Any = None,
    token: str | bool | None = None,
) -> list[HubModel]:
    """Search text-generation models on the Hub, best first by `sort` (downloads, likes, recent, trending).

    `min_params`/`max_params` bound the parameter count from the Hub's safetensors metadata (models without
    it are left out when a bound is given). With `bpw`, each result gets a fit verdict for `hardware`
    (default: this machine), computed from config.json and safetensors headers only.
    """
    if sort not in SORTS:
        raise BadInputError(f"unknown sort '{sort}'", hint=f"use one of: {', '.join(SORTS)}")
    if limit < 1:
        raise BadInputError("the result limit must be at least 1", hint="for example --limit 20")
    lo, hi = parse_params(min_params), parse_params(max_params)
    if lo is not None and hi is not None and lo > hi:
        raise BadInputError("the minimum parameter count is above the maximum", hint="swap --min-params/--max-params")
    if is_offline():
        raise NetworkError("searching the Hub needs the network, and offline mode is on (HF_HUB_OFFLINE=1)",
                           hint="unset HF_HUB_OFFLINE; downloaded models stay usable offline")
    bounds = ",".join(
        [f"min:{_hub_count(lo)}"] * (lo is not None) + [f"max:{_hub_count(hi)}"] * (hi is not None)
    )
    filters = [f for f in (library, license and f"license:{license}") if f]
    from huggingface_hub import HfApi

    try:
        items = HfApi(endpoint=endpoint(), token=token).list_models(
            search=query or None, author=author or None, pipeline_tag="text-generation",
            filter=filters or None, num_parameters=bounds or None, sort=SORTS[sort], limit=limit,
            expand=SEARCH_FIELDS,
        )
        models = [HubModel.from_info(i) for i in items]
    except BitsmithError:
        raise
    except Exception as exc:
        raise translate(exc, "the search") from exc
    if lo is not None or hi is not None:  # the Hub filters too; this keeps the promise on any mirror
        models = [
            m for m in models
            if m.params is not None and (lo is None or m.params >= lo) and (hi is None or m.params <= hi)
        ]
    if bpw is not None:
        attach_fit(models, bpw, hardware=hardware, token=token)
    return models


# -- fit ---------------------------------------------------------------------------------------------------------


def fit_inputs(
    model_id: str, revision: str | None = None, token: str | bool | None = None
) -> tuple[dict, dict[str, tuple[list[int], str]] | None]:
    """(config.json, {tensor name: (shape, dtype)} from safetensors headers) — no weights downloaded.

    The tensor map is None for repos without safetensors, or when only the cached config.json is reachable.
    """
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import NotASafetensorsRepoError

    model_id = check_model_id(model_id)
    with hub_errors(model_id, "config.json", token):
        path = hf_hub_download(model_id, "config.json", revision=revision, token=token, endpoint=endpoint())
    with open(path, encoding="utf-8") as fh:
        config = json.load(fh)
    if is_offline():
        return config, None
    try:
        with hub_errors(model_id, None, token):
            meta = HfApi(endpoint=endpoint(), token=token).get_safetensors_metadata(model_id, revision=revision)
    except NetworkError as exc:
        from bitsmith.engine.hub_common import is_connection_error

        if exc.__cause__ is not None and is_connection_error(exc.__cause__):
            return config, None
        raise
    except BitsmithError as exc:
        if isinstance(exc.__cause__, NotASafetensorsRepoError):
            return config, None
        raise
    tensors = {
        name: (list(t.shape), t.dtype) for fm in meta.files_metadata.values() for name, t in fm.tensors.items()
    }
    return config, tensors


def fit_for(
    model_id: str, bpw: float, *, hardware: Any = None, revision: str | None = None, token: str | bool | None = None
) -> FitResult:
    """The chat-stage fit verdict of `model_id` quantized to `bpw` on `hardware` (default: this machine)."""
    from bitsmith.engine.modelinfo import ModelInfo
    from bitsmith.engine.plan import plan_model

    if hardware is None:
        from bitsmith.engine.hardware import detect

        hardware = detect()
    config, tensors = fit_inputs(model_id, revision, token)
    info = ModelInfo.from_config(config, tensors, model_id)
    chat = plan_model(info, bpw, hardware).stages["chat"]
    return FitResult(verdict=chat.verdict, gap_gb=chat.gap_gb, bpw=bpw)


def attach_fit(models: list[HubModel], bpw: float, hardware: Any = None, token: str | bool | None = None,
               workers: int = 8) -> None:
    """Fill `fit` (or `fit_note` saying why not) on each model, a few models at a time."""
    try:
        from bitsmith.engine import modelinfo, plan  # noqa: F401 - availability check

        if hardware is None:
            from bitsmith.engine.hardware import detect

            hardware = detect()
    except ImportError as exc:
        for m in models:
            m.fit, m.fit_note = None, f"fit check unavailable ({exc.name} is not installed)"
        return

    def one(m: HubModel) -> None:
        try:
            m.fit = fit_for(m.id, bpw, hardware=hardware, token=token)
        except BitsmithError as exc:
            m.fit_note = str(exc)
        except Exception as exc:  # one odd config must not sink the whole result list
            m.fit_note = f"cannot size this model ({type(exc).__name__}: {exc})"

    if not models:
        return
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(models)))) as pool:
        list(pool.map(one, models))


# -- model card --------------------------------------------------------------------------------------------------


@dataclass
class ModelCardSummary:
    """What a user reads before downloading: the card's opening text, license, tags, gating, files and sizes."""

    id: str
    commit: str | None
    summary: str
    license: str | None
    tags: list[str]
    gated: bool
    pipeline_tag: str | None
    library: str | None
    params: int | None
    downloads: int | None
    likes: int | None
    last_modified: datetime | None
    files: list[tuple[str, int | None]]

    @property
    def total_bytes(self) -> int:
        return sum(size or 0 for _, size in self.files)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        out = asdict(self)
        out["last_modified"] = self.last_modified.isoformat() if self.last_modified else None
        out["files"] = [{"name": n, "size": s} for n, s in self.files]
        out["total_bytes"] = self.total_bytes
        return out


_SKIP_BLOCK = re.compile(r"^\s*(#|!\[|\[!\[|<|\||```|~~~|---|\*\*\*|___|>\s*\[!)")


def card_summary(readme: str, max_chars: int = 700, max_paragraphs: int = 2) -> str:
    """The first prose paragraph(s) of a model card: no YAML front matter, headings, badges, HTML or tables."""
    text = readme.replace("\r\n", "\n")
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        text = text[end + 4:] if end != -1 else ""
    paragraphs: list[str] = []
    in_code = False
    for block in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in block.strip().splitlines() if ln.strip()]
        if not lines:
            continue
        fences = sum(ln.startswith(("```", "~~~")) for ln in lines)
        if in_code or fences:
            in_code = in_code != (fences % 2 == 1)
            continue
        if _SKIP_BLOCK.match(lines[0]) or all(re.fullmatch(r"\[.*\]\(.*\)", ln) for ln in lines):
            continue
        paragraphs.append(" ".join(lines))
        if len(paragraphs) >= max_paragraphs or sum(map(len, paragraphs)) >= max_chars:
            break
    out = "\n\n".join(paragraphs)
    return out if len(out) <= max_chars else out[: max_chars - 1].rsplit(" ", 1)[0] + "…"


def model_card(model_id: str, revision: str | None = None, token: str | bool | None = None) -> ModelCardSummary:
    """Summarise a model's Hub page: card text, license, tags, gating and its files with sizes."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import GatedRepoError, RemoteEntryNotFoundError

    model_id = check_model_id(model_id)
    with hub_errors(model_id, token=token):
        info = HfApi(endpoint=endpoint(), token=token).model_info(model_id, revision=revision, files_metadata=True)
    names = [s.rfilename for s in info.siblings or []]
    summary = ""
    if "README.md" in names:
        try:
            path = hf_hub_download(model_id, "README.md", revision=info.sha or revision, token=token,
                                   endpoint=endpoint())
            with open(path, encoding="utf-8", errors="replace") as fh:
                summary = card_summary(fh.read())
        except (GatedRepoError, RemoteEntryNotFoundError):
            summary = ""
        except Exception as exc:
            raise translate(exc, model_id, "README.md") from exc
    hub = HubModel.from_info(info)
    files = [(s.rfilename, s.lfs.size if s.lfs else s.size) for s in info.siblings or []]
    return ModelCardSummary(
        id=model_id, commit=info.sha, summary=summary, license=hub.license, tags=hub.tags, gated=hub.gated,
        pipeline_tag=hub.pipeline_tag, library=hub.library, params=hub.params, downloads=hub.downloads,
        likes=hub.likes, last_modified=hub.last_modified, files=files,
    )
