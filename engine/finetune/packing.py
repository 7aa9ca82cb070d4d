"""Padding-free rows of packed examples (the train / held-out split by document is in split.py).

Several examples share one row of at most `seq_len` tokens; position ids restart at 0 at every example,
which transformers turns into a block-diagonal causal mask (no example attends to another), and targets
never cross an example boundary. An instruction or chat example longer than `seq_len` is truncated (its
tail is lost, counted); a plain-text document is cut into `seq_len` pieces instead (nothing is lost).
Rows are filled best-fit-decreasing, so almost no row needs padding; a micro-batch of several rows pads the
shorter ones at the end, with ignored targets.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from bitsmith.engine.errors import BadInputError

from .split import split_documents  # noqa: F401 - re-exported: the split used to live here
from .template import Example

IGNORE = -100


@dataclass
class FitReport:
    """What fitting examples to the sequence length did."""

    examples: int = 0
    truncated: int = 0
    dropped: int = 0  # truncated so far that no answer token was left, or nothing to predict at all
    pieces: int = 0  # plain-text documents cut into several pieces
    tokens: int = 0
    targets: int = 0
    notes: list[str] = field(default_factory=list)

    def describe(self, seq_len: int) -> str:
        """A log line."""
        parts = [f"{self.examples} examples, {self.tokens} tokens, {self.targets} trained tokens"]
        if self.truncated:
            parts.append(f"{self.truncated} longer than {seq_len} tokens were truncated")
        if self.dropped:
            parts.append(f"{self.dropped} dropped (nothing left to train on)")
        if self.pieces:
            parts.append(f"{self.pieces} long text documents were cut into {seq_len}-token pieces")
        return "; ".join(parts)


def fit_examples(examples: Sequence[Example], kinds: Sequence[str], seq_len: int) -> tuple[list[Example], FitReport]:
    """Cut plain text into pieces of `seq_len`, truncate longer chats, drop what has nothing to predict."""
    if seq_len < 2:
        raise BadInputError(f"the sequence length must be at least 2 tokens, got {seq_len}", "use e.g. 512")
    out: list[Example] = []
    rep = FitReport()
    for ex, kind in zip(examples, kinds, strict=True):
        if kind == "text" and len(ex.ids) > seq_len:
            rep.pieces += 1
            pieces = [Example(ex.ids[i: i + seq_len], ex.mask[i: i + seq_len]) for i in range(0, len(ex.ids), seq_len)]
        elif len(ex.ids) > seq_len:
            rep.truncated += 1
            pieces = [Example(ex.ids[:seq_len], ex.mask[:seq_len])]
        else:
            pieces = [ex]
        for piece in pieces:
            if piece.targets == 0:
                rep.dropped += kind != "text"  # a text piece of one token is just the document's tail
                continue
            out.append(piece)
            rep.examples += 1
            rep.tokens += len(piece.ids)
            rep.targets += piece.targets
    return out, rep


@dataclass(frozen=True)
class Row:
    """One packed row: the examples' indices in order."""

    members: tuple[int, ...]


def pack_rows(examples: Sequence[Example], seq_len: int) -> list[Row]:
    """Best-fit-decreasing packing of examples (each ≤ seq_len tokens) into rows of ≤ seq_len tokens."""
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i].ids), i))
    caps: list[tuple[int, int]] = []  # sorted (remaining capacity, row id)
    rows: list[list[int]] = []
    for i in order:
        n = len(examples[i].ids)
        at = bisect.bisect_left(caps, (n, -1))
        if at < len(caps):
            cap, rid = caps.pop(at)
        else:
            cap, rid = seq_len, len(rows)
            rows.append([])
        rows[rid].append(i)
        if cap - n > 1:  # a row with one token left can hold nothing useful
            bisect.insort(caps, (cap - n, rid))
    return [Row(tuple(r)) for r in rows]


@dataclass
class Batch:
    """A micro-batch: input ids, position ids and targets [B, T] (targets IGNORE where nothing is scored)."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    targets: torch.Tensor
    n_tokens: int  # real tokens (padding excluded)

    @property
    def n_targets(self) -> int:
        """Number of scored tokens."""
        return int((self.targets != IGNORE).sum())

    def to(self, device: torch.device | str) -> Batch:
        """The same batch on `device`."""
        return Batch(self.input_ids.to(device), self.position_ids.to(device), self.targets.to(device), self.n_tokens)


def make_batch(rows: Sequence[Row], examples: Sequence[Example], pad_id: int) -> Batch:
    """Tensors for rows of packed examples; shorter rows padded at the end."""
    width = max(sum(len(examples[i].ids) for i in row.members) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    tgt = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    real = 0
    for r, row in enumerate(rows):
        at = 0
        for i in row.members:
            ex = examples[i]
            n = len(ex.ids)
            t = torch.tensor(ex.ids, dtype=torch.long)
            ids[r, at: at + n] = t
            pos[r, at: at + n] = torch.arange(n)
            scored = torch.tensor(ex.mask[1:], dtype=torch.bool)
            tgt[r, at: at + n - 1] = torch.where(scored, t[1:], torch.full_like(t[1:], IGNORE))
            at += n
        real += at
        if at < width:  # padding: its own "sequence" (positions from 0), attended by nothing real
            pos[r, at:] = torch.arange(width - at)
    return Batch(ids, pos, tgt, real)


class BatchPlan:
    """Deterministic micro-batches: row order reshuffled each epoch from (seed, epoch); a step needs no state."""

    def __init__(self, rows: Sequence[Row], examples: Sequence[Example], batch_size: int, seed: int,
                 pad_id: int) -> None:
        if not rows:
            raise BadInputError("no training examples are left after fitting them to the sequence length",
                                "use a longer --seq-len or more data")
        self.rows, self.examples = list(rows), list(examples)
        self.batch_size = max(1, min(batch_size, len(self.rows)))
        self.seed, self.pad_id = seed, pad_id
        self._orders: dict[int, list[int]] = {}

    @property
    def batches_per_epoch(self) -> int:
        """Micro-batches in one pass over the rows (the last partial one is skipped)."""
        return max(1, len(self.rows) // self.batch_size)

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            order = list(range(len(self.rows)))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            self._orders = {epoch: order}
        return self._orders[epoch]

    def micro_batch(self, index: int) -> Batch:
        """The `index`-th micro-batch of the run (index = step · accumulation + micro)."""
        epoch, j = divmod(index, self.batches_per_epoch)
        order = self._order(epoch)
        picked = [self.rows[k] for k in order[j * self.batch_size: (j + 1) * self.batch_size]]
        return make_batch(picked, self.examples, self.pad_id)


def eval_batches(examples: Sequence[Example], seq_len: int, max_tokens: int, pad_id: int) -> list[Batch]:
    """Held-out batches (one row each), the first rows up to `max_tokens` tokens (0: all), in a fixed order."""
    rows = pack_rows(examples, seq_len)
    rows.sort(key=lambda r: r.members)
    out, total = [], 0
    for row in rows:
        out.append(make_batch([row], examples, pad_id))
        total += out[-1].input_ids.numel()
        if max_tokens and total >= max_tokens:
            break
    return out
