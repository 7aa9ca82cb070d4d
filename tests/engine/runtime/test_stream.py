"""Streaming text: pieces never split a character, keep word spaces, add up to the full text; stop strings."""

import random

import pytest

from bitsmith.engine.runtime.stream import IncrementalDecoder, StopMatcher, TextStream

WORDS = ["hello", "wörld", "naïve", "日本語", "🦙", "😶\u200d🌫️", "a", "Ωmega", "x"]


def _byte_vocab() -> list[bytes]:
    """Byte-level BPE style: every single byte, plus some multi-byte pieces (some cut mid-character)."""
    vocab = [bytes([i]) for i in range(256)]
    for w in WORDS:
        b = (" " + w).encode()
        vocab += [b, b[: len(b) // 2], b[len(b) // 2 :]]
    return vocab


def _random_ids(vocab: list[bytes], rng: random.Random) -> list[int]:
    """A sequence whose bytes are valid UTF-8 overall but split anywhere between tokens."""
    text = "".join(rng.choice([" ", ""]) + rng.choice(WORDS) for _ in range(rng.randint(5, 25)))
    data, ids = text.encode(), []
    i = 0
    while i < len(data):
        options = [t for t, piece in enumerate(vocab) if piece and data.startswith(piece, i)]
        t = rng.choice(options)
        ids.append(t)
        i += len(vocab[t])
    return ids


def test_byte_level_pieces_never_split_a_character_and_add_up() -> None:
    vocab = _byte_vocab()
    decode = lambda ids: b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")  # noqa: E731
    rng = random.Random(random.randrange(2**32))
    for _ in range(30):
        ids = _random_ids(vocab, rng)
        dec = IncrementalDecoder(decode)
        pieces = [dec.push(i) for i in ids] + [dec.flush()]
        assert "".join(pieces) == decode(ids)
        assert not any("\ufffd" in p for p in pieces)


def test_sentencepiece_style_word_starts_keep_their_spaces() -> None:
    # SentencePiece decodes "▁" as a space but drops the space at the very start of a text; decoding each
    # token alone would glue the words together.
    pieces_vocab = ["▁The", "▁qu", "ick", "▁brown", "▁fox", "es", "▁", "!", "▁jumps"]

    def decode(ids: list[int]) -> str:
        return "".join(pieces_vocab[i] for i in ids).replace("▁", " ").removeprefix(" ")

    rng = random.Random(random.randrange(2**32))
    ids = [rng.randrange(len(pieces_vocab)) for _ in range(60)]
    dec = IncrementalDecoder(decode)
    out = "".join(dec.push(i) for i in ids) + dec.flush()
    assert out == decode(ids)


def test_a_held_incomplete_character_comes_out_at_flush() -> None:
    decode = lambda ids: bytes(ids).decode("utf-8", errors="replace")  # noqa: E731
    dec = IncrementalDecoder(decode)
    euro = list("€".encode())
    assert dec.push(ord("a")) == "a"
    assert dec.push(euro[0]) == "" and dec.push(euro[1]) == ""
    assert dec.push(euro[2]) == "€"
    assert dec.push(euro[0]) == ""
    assert dec.flush() == "\ufffd"


@pytest.mark.parametrize("cut", range(1, 12))
def test_stop_string_split_across_pieces_is_cut_and_never_shown(cut: int) -> None:
    text = "The answer is 42.###Human: more"
    m = StopMatcher(["###Human:", "<end>"])
    shown = m.feed(text[:cut]) + m.feed(text[cut:]) + m.flush()
    assert shown == "The answer is 42." and m.stopped_by == "###Human:"


def test_held_back_text_that_does_not_become_a_stop_is_released() -> None:
    m = StopMatcher(["\nUser:"])
    assert m.feed("Sure.\nUs") == "Sure."
    assert m.feed("eful tip") == "\nUseful tip"
    assert m.feed("\n") == "" and m.flush() == "\n" and m.stopped_by is None


def test_the_earliest_of_several_stops_wins() -> None:
    m = StopMatcher(["END", "STOP"])
    assert m.feed("abc STOP def END") == "abc " and m.stopped_by == "STOP"


def test_text_stream_with_a_real_tokenizer(smollm_tok) -> None:
    tok = smollm_tok
    rng = random.Random(random.randrange(2**32))
    text = " ".join(rng.choice(WORDS + ["don't", "3.14", "\n\n", "résumé"]) for _ in range(80))
    ids = tok(text)["input_ids"]
    decode = lambda x: tok.decode(x, skip_special_tokens=True, clean_up_tokenization_spaces=False)  # noqa: E731
    stream = TextStream(decode, stops=["zzz-never"])
    pieces = [stream.push(i) for i in ids] + [stream.finish()]
    assert "".join(pieces) == decode(ids) == stream.text
    assert not any("\ufffd" in p for p in pieces)
