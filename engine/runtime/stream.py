"""Turning a stream of token ids into text pieces that are safe to show.

`IncrementalDecoder` emits text only once it is final: a UTF-8 character split over several byte tokens
is held back until complete, and every piece is the difference between decodes of a window that starts
a few tokens back, so SentencePiece word-start spaces and merged multi-token words come out exactly as
the full decode has them. Concatenated pieces equal `decode(all ids)`. `StopMatcher` holds back text
that might be the start of a stop string and cuts the answer where one appears.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

Decode = Callable[[list[int]], str]

_CONTEXT_TOKENS = 6  # tokens of left context re-decoded with each new token
_MAX_HELD = 8  # never hold back more tokens than this (a UTF-8 character has at most 4 bytes)


class IncrementalDecoder:
    """Token ids in, final text pieces out (see the module docstring)."""

    def __init__(self, decode: Decode) -> None:
        self._decode = decode
        self.ids: list[int] = []
        self._prefix = 0  # start of the window being re-decoded
        self._read = 0  # ids before this index have been emitted
        self._emitted_in_window = ""  # decode(ids[_prefix:_read])

    def push(self, token_id: int) -> str:
        """Add one token; return the newly final text (often "", e.g. mid-character)."""
        self.ids.append(int(token_id))
        return self._advance(final=False)

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character comes out as U+FFFD), at the end of a stream."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        window = self._decode(self.ids[self._prefix :])
        pending = len(self.ids) - self._read
        if not final and window.endswith("\ufffd") and pending < _MAX_HELD:
            return ""  # an incomplete UTF-8 sequence: wait for its next bytes
        done = self._emitted_in_window
        if window.startswith(done):
            piece = window[len(done) :]
        elif not final and pending < _MAX_HELD:
            return ""  # more context changed earlier text (a decoder's clean-up rule): wait until it settles
        else:
            common = next((i for i, (a, b) in enumerate(zip(window, done)) if a != b), min(len(window), len(done)))
            piece = window[common:]
        self._read = len(self.ids)
        if self._read - self._prefix > _CONTEXT_TOKENS:
            self._prefix = self._read - _CONTEXT_TOKENS
            self._emitted_in_window = self._decode(self.ids[self._prefix : self._read])
        else:
            self._emitted_in_window = window
        return piece


class StopMatcher:
    """Cuts text at the first stop string and holds back any tail that could begin one."""

    def __init__(self, stops: Iterable[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped_by: str | None = None

    def feed(self, text: str) -> str:
        """Add text; return the part that is certainly before any stop string."""
        if self.stopped_by is not None:
            return ""
        buf = self._held + text
        hits = [(buf.find(s), s) for s in self.stops if s in buf]
        if hits:
            at, stop = min(hits)
            self.stopped_by, self._held = stop, ""
            return buf[:at]
        keep = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(buf)), 0, -1):
                if buf.endswith(s[:n]):
                    keep = max(keep, n)
                    break
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        """The held-back tail, at the end of the answer (it did not become a stop string)."""
        held, self._held = self._held, ""
        return "" if self.stopped_by is not None else held


class TextStream:
    """Token ids in, display text out: incremental decoding followed by stop-string handling."""

    def __init__(self, decode: Decode, stops: Iterable[str] = ()) -> None:
        self.decoder = IncrementalDecoder(decode)
        self.matcher = StopMatcher(stops)
        self.text = ""

    @property
    def stopped_by(self) -> str | None:
        """The stop string that ended the answer, if one did."""
        return self.matcher.stopped_by

    def push(self, token_id: int) -> str:
        """Add a token; return text safe to show now."""
        piece = self.matcher.feed(self.decoder.push(token_id))
        self.text += piece
        return piece

    def finish(self) -> str:
        """End of the answer: return what was held back."""
        piece = self.matcher.feed(self.decoder.flush())
        piece += self.matcher.flush()
        self.text += piece
        return piece
