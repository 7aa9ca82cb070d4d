"""Sampling settings shared by every backend (torch-free: the GUI builds them from its sliders)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from bitsmith.engine.errors import BadInputError


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen and when an answer ends.

    temperature 0 means greedy. top_k 0, top_p 1 and min_p 0 switch those filters off. The repetition
    penalty divides positive (multiplies negative) logits of tokens seen in the last `repeat_last_n`
    tokens of prompt and answer (1 = off). `seed` None draws a fresh seed per answer. `stop` strings
    end the answer and are not part of it. The defaults are the common chat defaults of llama.cpp.
    """

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repetition_penalty: float = 1.1
    repeat_last_n: int = 64
    seed: int | None = None
    max_tokens: int = 512
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        def bad(name: str, value: Any, rule: str) -> BadInputError:
            return BadInputError(f"sampling setting {name}={value!r} is invalid: {rule}",
                                 f"give {name} a value that {rule.replace('must ', '')}")

        for name in ("temperature", "top_p", "min_p", "repetition_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad(name, value, "must be a finite number")
        for name in ("top_k", "repeat_last_n", "max_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad(name, value, "must be a whole number")
        if self.temperature < 0:
            raise bad("temperature", self.temperature, "must be >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            raise bad("top_p", self.top_p, "must be in (0, 1]")
        if not 0 <= self.min_p < 1:
            raise bad("min_p", self.min_p, "must be in [0, 1)")
        if self.top_k < 0:
            raise bad("top_k", self.top_k, "must be >= 0 (0 = off)")
        if self.repetition_penalty <= 0:
            raise bad("repetition_penalty", self.repetition_penalty, "must be > 0 (1 = off)")
        if self.repeat_last_n < 0:
            raise bad("repeat_last_n", self.repeat_last_n, "must be >= 0")
        if self.max_tokens < 1:
            raise bad("max_tokens", self.max_tokens, "must be >= 1")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise bad("seed", self.seed, "must be a whole number or null")
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        if not all(isinstance(s, str) and s for s in stop):
            raise bad("stop", self.stop, "must be a list of non-empty strings")
        object.__setattr__(self, "stop", stop)

    @property
    def greedy(self) -> bool:
        """True when the answer is deterministic (temperature 0)."""
        return self.temperature == 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        out = asdict(self)
        out["stop"] = list(self.stop)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, base: SamplingParams | None = None) -> SamplingParams:
        """`base` (or the defaults) with the given fields replaced; unknown names are a BadInputError."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BadInputError(f"unknown sampling setting(s) {unknown}", f"known settings: {', '.join(sorted(known))}")
        if "stop" in data and data["stop"] is not None and not isinstance(data["stop"], str):
            data["stop"] = tuple(data["stop"])
        if data.get("stop") is None:
            data.pop("stop", None)
        return replace(base or cls(), **data)
