"""llama2.c's tokenizer (tokenizer.bin / tok512.bin) and a byte tokenizer for the builtin model.

The file is a u32 ``max_token_length`` followed, for every token id in order, by an f32 merge
score, an i32 byte length and that many bytes. There is no token count: the vocabulary runs to
the end of the file.

``encode`` follows run.c step by step (dummy-prefix space, one lookup per UTF-8 code point with
a byte fallback of ``byte + 3``, then repeatedly merging the adjacent pair whose concatenation is
the best-scoring vocabulary entry, leftmost on ties) because a different but "equivalent" BPE
would feed the model different ids and the reproduction test would no longer mean anything.
Pieces are handled as bytes; ``decode_bytes`` gives what run.c would print (before its
``safe_printf`` filter) and ``decode_all`` joins those bytes and decodes UTF-8 once, so
characters split over byte-fallback tokens come back whole.
"""

from __future__ import annotations

import itertools
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tinytelem.errors import ModelError

__all__ = [
    "BOS",
    "EOS",
    "ByteTokenizer",
    "TextCodec",
    "Tokenizer",
    "load_tokenizer",
    "parse_tokenizer",
]

BOS = 1
EOS = 2
_BYTE_OFFSET = 3  # ids 3..258 are the raw bytes 0x00..0xFF in llama2.c vocabularies
_RAW_BYTE = re.compile(rb"<0x([0-9A-Fa-f]{2})>")
_MIN_SCORE = -1e10  # run.c's starting best score; pairs scoring below it never merge


class TextCodec(Protocol):
    """What the twin and the CLI need from any tokenizer."""

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]: ...

    def decode_bytes(self, prev_token: int, token: int) -> bytes: ...

    def decode(self, prev_token: int, token: int) -> str: ...

    def decode_all(self, ids: list[int]) -> str: ...


def _decode_all(codec: TextCodec, ids: list[int]) -> str:
    parts = [codec.decode_bytes(prev, tok) for prev, tok in itertools.pairwise(ids)]
    if ids and ids[0] != BOS:
        parts.insert(0, codec.decode_bytes(BOS, ids[0]))
    return b"".join(parts).decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Tokenizer:
    """A llama2.c vocabulary: pieces (bytes) and merge scores, indexed by token id."""

    pieces: tuple[bytes, ...]
    scores: tuple[float, ...]
    max_token_length: int
    source: str = "<bytes>"

    def __post_init__(self) -> None:
        lookup: dict[bytes, int] = {}
        for i, piece in enumerate(self.pieces):
            lookup.setdefault(piece, i)
        object.__setattr__(self, "_lookup", lookup)

    @property
    def vocab_size(self) -> int:
        """Number of token ids."""
        return len(self.pieces)

    def _id(self, piece: bytes) -> int:
        lookup: dict[bytes, int] = self._lookup  # type: ignore[attr-defined]
        return lookup.get(piece, -1)

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """Token ids for ``text``, exactly as llama2.c's encode() produces them.

        Raises:
            ModelError: When a needed token (the space, or a byte-fallback id) is missing.
        """
        data = text.encode("utf-8")
        tokens: list[int] = [BOS] if bos else []
        if data:
            space = self._id(b" ")
            if space < 0:
                raise ModelError(f"{self.source}: vocabulary has no ' ' token for the prefix")
            tokens.append(space)
        start = 0
        n = len(data)
        while start < n:
            # One code point: a lead byte plus up to 3 continuation bytes (run.c caps at 4).
            end = start + 1
            while end < n and (data[end] & 0xC0) == 0x80 and end - start < 4:
                end += 1
            chunk = data[start:end]
            tid = self._id(chunk)
            if tid >= 0:
                tokens.append(tid)
            else:
                tokens.extend(b + _BYTE_OFFSET for b in chunk)
            start = end
        if any(t >= self.vocab_size for t in tokens):
            raise ModelError(f"{self.source}: byte fallback needs ids up to 258 but the "
                             f"vocabulary has {self.vocab_size}; use a llama2.c tokenizer")
        self._merge(tokens)
        if eos:
            tokens.append(EOS)
        return tokens

    def _merge(self, tokens: list[int]) -> None:
        """Greedy BPE: merge the best-scoring adjacent pair until none is in the vocabulary."""
        pieces, scores = self.pieces, self.scores

        def pair(i: int) -> tuple[float, int]:
            tid = self._id(pieces[tokens[i]] + pieces[tokens[i + 1]])
            return (scores[tid], tid) if tid >= 0 else (_MIN_SCORE, -1)

        cand = [pair(i) for i in range(len(tokens) - 1)]
        while cand:
            best = max(range(len(cand)), key=lambda i: cand[i][0])  # first index on ties
            score, tid = cand[best]
            if tid < 0 or score <= _MIN_SCORE:
                break
            tokens[best] = tid
            del tokens[best + 1]
            del cand[best]
            if best < len(cand):
                cand[best] = pair(best)
            if best > 0:
                cand[best - 1] = pair(best - 1)

    def decode_bytes(self, prev_token: int, token: int) -> bytes:
        """The bytes run.c prints for ``token`` following ``prev_token``.

        A leading space is dropped right after BOS (SentencePiece's dummy prefix), and
        ``<0xXX>`` pieces become that raw byte.
        """
        if not 0 <= token < len(self.pieces):
            raise ModelError(f"token id {token} is outside the vocabulary of {self.vocab_size}")
        piece = self.pieces[token]
        if prev_token == BOS and piece.startswith(b" "):
            piece = piece[1:]
        m = _RAW_BYTE.match(piece)
        if m:
            return bytes([int(m.group(1), 16)])
        return piece

    def decode(self, prev_token: int, token: int) -> str:
        """One piece as text (a lone raw byte that is not valid UTF-8 shows as U+FFFD)."""
        return self.decode_bytes(prev_token, token).decode("utf-8", errors="replace")

    def decode_all(self, ids: list[int]) -> str:
        """Text of a whole id sequence, as run.c would print it after a leading BOS."""
        return _decode_all(self, ids)


def parse_tokenizer(data: bytes, source: str = "<bytes>") -> Tokenizer:
    """Parse tokenizer bytes.

    Raises:
        ModelError: When the bytes run out mid-token or a length is negative.
    """
    if len(data) < 4:
        raise ModelError(f"{source}: {len(data)} bytes is too short for a llama2.c tokenizer")
    (max_len,) = struct.unpack_from("<I", data, 0)
    pieces: list[bytes] = []
    scores: list[float] = []
    off = 4
    while off < len(data):
        if off + 8 > len(data):
            raise ModelError(f"{source}: truncated in the header of token {len(pieces)} "
                             f"at byte {off}; the tokenizer file is incomplete")
        score, length = struct.unpack_from("<fi", data, off)
        off += 8
        if length < 0 or off + length > len(data):
            raise ModelError(f"{source}: token {len(pieces)} claims {length} bytes at byte "
                             f"{off}, past the end ({len(data)}); the file is corrupt")
        pieces.append(data[off : off + length])
        scores.append(score)
        off += length
    if not pieces:
        raise ModelError(f"{source}: tokenizer has no tokens")
    return Tokenizer(tuple(pieces), tuple(scores), max_len, source)


def load_tokenizer(path: str | Path, vocab_size: int | None = None) -> Tokenizer:
    """Load a llama2.c tokenizer file.

    Args:
        path: The tokenizer.bin.
        vocab_size: When given, the model's vocabulary size, which must match.

    Raises:
        ModelError: When the file is unreadable, corrupt, or does not match the model.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        msg = f"cannot read tokenizer {p}: {exc.strerror or exc}; check the path"
        raise ModelError(msg) from exc
    tok = parse_tokenizer(data, str(p))
    if vocab_size is not None and tok.vocab_size != vocab_size:
        raise ModelError(f"{p}: tokenizer has {tok.vocab_size} tokens but the model expects "
                         f"{vocab_size}; pass the tokenizer trained with this model")
    return tok


@dataclass(frozen=True)
class ByteTokenizer:
    """Text <-> ids for the builtin model: 0 <unk>, 1 BOS, 2 EOS, 3..258 raw bytes.

    Ids above 258 (the builtin model's vocabulary is 512) decode to nothing; the random model
    emits them, and showing no text for them is more honest than inventing some.
    """

    vocab_size: int = 512

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """One id per UTF-8 byte, with optional BOS and EOS."""
        ids = [BOS] if bos else []
        ids.extend(b + _BYTE_OFFSET for b in text.encode("utf-8"))
        if eos:
            ids.append(EOS)
        return ids

    def decode_bytes(self, prev_token: int, token: int) -> bytes:
        """The byte for ids 3..258, nothing for the others."""
        del prev_token  # no dummy prefix to strip: encode never adds one
        if _BYTE_OFFSET <= token < _BYTE_OFFSET + 256:
            return bytes([token - _BYTE_OFFSET])
        return b""

    def decode(self, prev_token: int, token: int) -> str:
        """One id as text (U+FFFD for a byte that is not valid UTF-8 alone)."""
        return self.decode_bytes(prev_token, token).decode("utf-8", errors="replace")

    def decode_all(self, ids: list[int]) -> str:
        """Text of a whole id sequence."""
        return _decode_all(self, ids)
