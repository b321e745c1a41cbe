"""llama2.c tokenizer: file parsing, run.c's encode, decode, and the byte tokenizer."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tinytelem.errors import ModelError
from tinytelem.models.tokenizer import (
    BOS,
    EOS,
    ByteTokenizer,
    Tokenizer,
    load_tokenizer,
    parse_tokenizer,
)

TEXTS = [
    "Once upon a time",
    "Lily's mom said, \"Let's go to the park!\"\nThe end.",
    "héllo wörld — naïve café",
    "日本語のテキスト 🦙🚀",
    "  leading spaces and trailing  ",
    "\ttabs\tand\r\nCRLF",
    "x",
    "\x01\x7f control bytes",
]


def test_stories_encoding_of_the_prompt(tok512: Path) -> None:
    tok = load_tokenizer(tok512, vocab_size=512)
    ids = tok.encode("Once upon a time")
    # Derived by hand from the algorithm: dummy prefix ' ' + one token per character, then
    # greedy merges end in the four word pieces ' Once', ' upon', ' a', ' time'.
    assert [tok.pieces[i] for i in ids] == [b"\n<s>\n", b" Once", b" upon", b" a", b" time"]
    assert ids == [1, 403, 407, 261, 378]
    assert tok.decode_all(ids) == "Once upon a time"
    assert tok.encode("Once upon a time", bos=False, eos=True) == [403, 407, 261, 378, EOS]


def test_tokenizer_file_basics(tok512: Path) -> None:
    tok = load_tokenizer(tok512)
    assert tok.vocab_size == 512
    assert tok.max_token_length == 7
    assert tok.pieces[3] == b"<0x00>" and tok.pieces[258] == b"<0xFF>"
    assert tok.scores[260] == -1.0


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(tok512: Path, text: str) -> None:
    tok = load_tokenizer(tok512)
    ids = tok.encode(text)
    assert ids[0] == BOS
    assert all(0 <= i < 512 for i in ids)
    assert tok.decode_all(ids) == text
    assert tok.decode_all(tok.encode(text, bos=False)) == text


def test_byte_fallback_for_unknown_code_points(tok512: Path) -> None:
    tok = load_tokenizer(tok512)
    ids = tok.encode("🦙", bos=False)
    # a 4-byte code point not in a 512 vocabulary becomes its bytes + 3
    assert ids[1:] == [b + 3 for b in "🦙".encode()]
    assert tok.decode_bytes(ids[0], ids[1]) == b"\xf0"
    assert tok.decode(ids[0], ids[1]) == "\ufffd"


def test_empty_text(tok512: Path) -> None:
    tok = load_tokenizer(tok512)
    assert tok.encode("") == [BOS]
    assert tok.encode("", bos=False) == []
    assert tok.decode_all([]) == ""


def test_decode_strips_space_only_after_bos(tok512: Path) -> None:
    tok = load_tokenizer(tok512)
    assert tok.decode(BOS, 403) == "Once"
    assert tok.decode(407, 403) == " Once"
    with pytest.raises(ModelError, match="outside the vocabulary"):
        tok.decode(1, 512)


def _vocab(pieces: list[tuple[bytes, float]]) -> bytes:
    out = [struct.pack("<I", 8)]
    for piece, score in pieces:
        out.append(struct.pack("<fi", score, len(piece)) + piece)
    return b"".join(out)


def _synthetic(extra: list[tuple[bytes, float]]) -> Tokenizer:
    pieces = [(b"<unk>", 0.0), (b"<s>", 0.0), (b"</s>", 0.0)]
    pieces += [(f"<0x{b:02X}>".encode(), 0.0) for b in range(256)]
    pieces += [(b" ", -1.0), (b"a", -1.0), (b"b", -1.0), *extra]
    return parse_tokenizer(_vocab(pieces), "synthetic")


def _pieces(tok: Tokenizer, text: str) -> list[bytes]:
    return [tok.pieces[i] for i in tok.encode(text, bos=False)]


def test_merge_takes_best_score_first() -> None:
    tok = _synthetic([(b"ab", -5.0), (b"ba", -2.0), (b" a", -9.0), (b"aba", -1.0)])
    # ' ',a,b,a,b: 'ba'(-2) merges first, then 'aba'(-1); ' aba' and 'abab' do not exist.
    assert _pieces(tok, "abab") == [b" ", b"aba", b"b"]
    assert _pieces(tok, "aa") == [b" a", b"a"]


def test_merge_ties_go_to_the_leftmost_pair() -> None:
    tok = _synthetic([(b"ab", -2.0), (b"ba", -2.0)])
    assert _pieces(tok, "aba") == [b" ", b"ab", b"a"]
    assert _pieces(tok, "bab") == [b" ", b"ba", b"b"]


def test_code_points_longer_than_the_vocab_fall_back_to_bytes() -> None:
    tok = _synthetic([("é".encode(), -1.0)])
    assert _pieces(tok, "éaé") == [b" ", "é".encode(), b"a", "é".encode()]
    assert tok.encode("ü", bos=False)[1:] == [0xC3 + 3, 0xBC + 3]


def test_corrupt_tokenizer_files(tmp_path: Path) -> None:
    good = _vocab([(b"a", 0.0), (b"bb", 0.0)])
    with pytest.raises(ModelError, match="too short"):
        parse_tokenizer(b"\0\0", "t.bin")
    with pytest.raises(ModelError, match="past the end"):
        parse_tokenizer(good[:-1], "t.bin")
    with pytest.raises(ModelError, match="truncated in the header of token 1"):
        parse_tokenizer(good[:4 + 9 + 3], "t.bin")
    with pytest.raises(ModelError, match="no tokens"):
        parse_tokenizer(struct.pack("<I", 4), "t.bin")
    with pytest.raises(ModelError, match="no ' ' token"):
        parse_tokenizer(good).encode("a")
    p = tmp_path / "t.bin"
    p.write_bytes(good)
    with pytest.raises(ModelError, match="model expects 512"):
        load_tokenizer(p, vocab_size=512)
    with pytest.raises(ModelError, match="cannot read tokenizer"):
        load_tokenizer(tmp_path / "missing.bin")


def test_byte_fallback_needs_258_ids() -> None:
    tok = parse_tokenizer(_vocab([(b"<unk>", 0.0), (b"<s>", 0.0), (b"</s>", 0.0), (b" ", 0.0)]))
    with pytest.raises(ModelError, match="byte fallback"):
        tok.encode("z")


@pytest.mark.parametrize("text", TEXTS)
def test_byte_tokenizer_round_trip(text: str) -> None:
    tok = ByteTokenizer()
    ids = tok.encode(text, eos=True)
    assert ids[0] == BOS and ids[-1] == EOS
    assert ids[1:-1] == [b + 3 for b in text.encode()]
    assert tok.decode_all(ids) == text


def test_byte_tokenizer_ignores_ids_without_bytes() -> None:
    tok = ByteTokenizer()
    assert tok.decode(BOS, 300) == "" and tok.decode(BOS, 0) == ""
    assert tok.decode(BOS, ord("A") + 3) == "A"
    assert tok.vocab_size == 512
    assert tok.decode_all([ord("h") + 3, 400, ord("i") + 3]) == "hi"
