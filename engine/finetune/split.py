"""The train / held-out split by whole document, torch-free (the app's dataset preview counts it too)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from bitsmith.engine.errors import BadInputError

from .data import Record

DEFAULT_HELDOUT = 0.1
"""The fraction of documents held out for evaluation when a request does not say."""


def heldout_count(n: int, fraction: float) -> int:
    """How many of `n` documents split_documents holds out (BadInputError where it would refuse)."""
    if not 0.0 <= fraction < 1.0:
        raise BadInputError(f"the held-out fraction must be in [0, 1), got {fraction}", "use e.g. 0.1")
    if fraction == 0.0:
        return 0
    if n < 2:
        raise BadInputError(
            "the data has a single document, so none can be held out for evaluation",
            "give more documents (separate them with two blank lines), pass a held-out file (--eval-data), "
            "or turn evaluation off (--heldout 0)",
        )
    return min(max(1, round(fraction * n)), n - 1)


def split_documents(records: Sequence[Record], fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """(train, held-out): a seeded choice of round(fraction · n) whole documents (at least 1) is held out."""
    k = heldout_count(len(records), fraction)
    if k == 0:
        return list(records), []
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    held = set(order[:k])
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]
