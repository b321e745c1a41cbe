"""Hugging Face tokenizers: ``tokenizer.json`` (the ``tokenizers`` package) and SentencePiece
``tokenizer.model`` (the ``sentencepiece`` package), in and out.

Reading:

* ``tokenizer.model`` becomes our llama2.c :class:`~tinytelem.models.tokenizer.Tokenizer`
  (pieces with U+2581 as a space, the model's scores, BOS/EOS spelled as llama2.c's
  ``tokenizer.py`` spells them), exactly what llama2.c's export does, so the run.c encoder and
  every writer that stores a tokenizer (GGUF) work with it unchanged.
* ``tokenizer.json`` is wrapped (:class:`HfTokenizer`): the ``tokenizers`` library encodes, so
  ids are the ones ``transformers`` would feed the model. Only llama-style vocabularies are
  accepted (SentencePiece pieces with ``<0xXX>`` byte fallback); a byte-level BPE
  (``Ġ``-style, Llama 3 / GPT-2) is refused with one line.

Writing (:func:`tokenizer_json`): a llama2.c vocabulary becomes a BPE ``tokenizer.json`` the way
``transformers``' ``LlamaConverter`` builds one from a SentencePiece model: merges are every split
``(a, b)`` of a piece into two vocabulary pieces, ranked by the piece's score, so the library's
BPE merges the best-scoring pair first, as run.c's encoder does.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from tinytelem.errors import ConfigError, ModelError
from tinytelem.models.tokenizer import BOS, EOS, TextCodec, Tokenizer, _decode_all, load_tokenizer

__all__ = ["HfTokenizer", "load_any_tokenizer", "load_hf_tokenizer", "load_sentencepiece",
           "tokenizer_json"]

SPACE: Final = "\u2581"  # SentencePiece's visible space
_RAW_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_SPECIAL: Final = {0: "<unk>", BOS: "<s>", EOS: "</s>"}
_LLAMA2C_SPECIAL: Final = {BOS: b"\n<s>\n", EOS: b"\n</s>\n"}  # llama2.c tokenizer.py's


def _need(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"reading Hugging Face tokenizers needs the {module!r} package: "
                          "pip install 'tinytelem[hf]'") from exc


def load_sentencepiece(path: str | Path) -> Tokenizer:
    """A SentencePiece ``tokenizer.model`` as a llama2.c vocabulary.

    Raises:
        ModelError: The file is not a SentencePiece model.
    """
    spm = _need("sentencepiece")
    p = Path(path)
    sp = spm.SentencePieceProcessor()
    try:
        sp.Load(str(p))
    except (OSError, RuntimeError) as exc:
        raise ModelError(f"{p}: not a readable SentencePiece model ({exc}); pass the "
                         "tokenizer.model the checkpoint was trained with") from exc
    pieces: list[bytes] = []
    scores: list[float] = []
    for i in range(sp.GetPieceSize()):
        piece = sp.IdToPiece(i)
        pieces.append(_LLAMA2C_SPECIAL.get(i, piece.replace(SPACE, " ").encode("utf-8")))
        scores.append(float(sp.GetScore(i)))
    return Tokenizer(tuple(pieces), tuple(scores), max(len(x) for x in pieces), str(p))


@dataclass(frozen=True)
class HfTokenizer:
    """A llama-style ``tokenizer.json``, encoded by the ``tokenizers`` library.

    Attributes:
        tk: The ``tokenizers.Tokenizer``.
        source: The file it came from (named in errors).
    """

    tk: Any
    source: str
    pieces: tuple[str, ...] = field(default=(), repr=False)

    @property
    def vocab_size(self) -> int:
        """Number of token ids, added (special) tokens included."""
        return len(self.pieces)

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """Ids for ``text`` as the library gives them (BOS/EOS added here, not by its template)."""
        ids = [BOS] if bos else []
        if text:
            ids.extend(self.tk.encode(text, add_special_tokens=False).ids)
        if eos:
            ids.append(EOS)
        return ids

    def decode_bytes(self, prev_token: int, token: int) -> bytes:
        """The bytes of one piece (``<0xXX>`` as that byte; the dummy-prefix space dropped
        after BOS; special tokens print nothing)."""
        if not 0 <= token < len(self.pieces):
            raise ModelError(f"token id {token} is outside the vocabulary of {self.vocab_size}")
        if token in _SPECIAL:
            return b""
        piece = self.pieces[token]
        m = _RAW_BYTE.fullmatch(piece)
        if m:
            return bytes([int(m.group(1), 16)])
        out = piece.replace(SPACE, " ").encode("utf-8")
        return out[1:] if prev_token == BOS and out.startswith(b" ") else out

    def as_llama2c(self) -> Tokenizer | None:
        """The same vocabulary as pieces and scores (what GGUF and run.c's encoder hold), or
        None when it is not a BPE model.

        A piece's score is minus the rank of the first merge that makes it, so run.c's "merge
        the best-scoring pair" applies merges in the library's rank order; pieces no merge makes
        (characters, bytes, specials) score below every merged piece.
        """
        model = json.loads(self.tk.to_str()).get("model", {})
        if model.get("type") != "BPE":
            return None
        rank: dict[str, int] = {}
        for r, m in enumerate(model.get("merges", [])):
            a, b = m.split(" ", 1) if isinstance(m, str) else m
            rank.setdefault(a + b, r)
        floor = -float(len(rank) + 1)
        pieces = tuple(_LLAMA2C_SPECIAL.get(i, p.replace(SPACE, " ").encode("utf-8"))
                       for i, p in enumerate(self.pieces))
        scores = tuple(-float(rank[p]) if p in rank else floor for p in self.pieces)
        return Tokenizer(pieces, scores, max(len(x) for x in pieces), self.source)

    def decode(self, prev_token: int, token: int) -> str:
        """One piece as text."""
        return self.decode_bytes(prev_token, token).decode("utf-8", errors="replace")

    def decode_all(self, ids: list[int]) -> str:
        """Text of a whole id sequence."""
        return _decode_all(self, ids)


def load_hf_tokenizer(path: str | Path) -> HfTokenizer:
    """A ``tokenizer.json`` of a llama-style (SentencePiece BPE, byte fallback) vocabulary.

    Raises:
        ModelError: Unreadable, not a tokenizers file, or a byte-level BPE vocabulary.
    """
    lib = _need("tokenizers")
    p = Path(path)
    try:
        tk = lib.Tokenizer.from_file(str(p))
    except Exception as exc:  # the library raises plain Exception subclasses from Rust
        raise ModelError(f"{p}: not a readable tokenizer.json ({exc}); pass the tokenizer "
                         "the checkpoint was trained with") from exc
    n = tk.get_vocab_size(with_added_tokens=True)
    pieces = tuple(tk.id_to_token(i) or "" for i in range(n))
    if not any(SPACE in x for x in pieces) or any(x.startswith("\u0120") for x in pieces[:1000]):
        raise ModelError(f"{p}: not a SentencePiece-style vocabulary (no U+2581 pieces, or "
                         "byte-level 'Ġ' pieces); tinytelem runs llama/llama2-style tokenizers")
    return HfTokenizer(tk, str(p), pieces)


def _merges(vocab: dict[str, int], scores: list[float]) -> list[tuple[str, str]]:
    """Every split of a piece into two vocabulary pieces, best-scoring piece first (what
    ``transformers``' SentencePieceExtractor does)."""
    ranked: list[tuple[float, int, int, str, str]] = []
    for piece, pid in vocab.items():
        if pid in _SPECIAL or _RAW_BYTE.fullmatch(piece):
            continue
        for cut in range(1, len(piece)):
            a, b = piece[:cut], piece[cut:]
            if a in vocab and b in vocab:
                ranked.append((-scores[pid], vocab[a], vocab[b], a, b))
    ranked.sort()
    return [(a, b) for _s, _ia, _ib, a, b in ranked]


def tokenizer_json(tok: Tokenizer) -> str:
    """A llama-style ``tokenizer.json`` (BPE, byte fallback) holding ``tok``'s vocabulary.

    Raises:
        ModelError: A piece is not UTF-8 text or two ids share a piece (a BPE vocabulary maps
            each piece to one id).
    """
    lib = _need("tokenizers")
    vocab: dict[str, int] = {}
    for i, raw in enumerate(tok.pieces):
        try:
            piece = _SPECIAL.get(i) or raw.decode("utf-8").replace(" ", SPACE)
        except UnicodeDecodeError as exc:
            raise ModelError(f"{tok.source}: token {i} is not UTF-8 text; it cannot be stored "
                             "in a tokenizer.json") from exc
        if piece in vocab:
            raise ModelError(f"{tok.source}: tokens {vocab[piece]} and {i} are both {piece!r}; "
                             "a tokenizer.json maps each piece to one id")
        vocab[piece] = i
    bpe = lib.models.BPE(vocab=vocab, merges=_merges(vocab, list(tok.scores)),
                         unk_token="<unk>", fuse_unk=True, byte_fallback=True)  # nosec B106
    tk = lib.Tokenizer(bpe)
    nz, dec = lib.normalizers, lib.decoders
    tk.normalizer = nz.Sequence([nz.Prepend(SPACE), nz.Replace(" ", SPACE)])
    tk.decoder = dec.Sequence([dec.Replace(SPACE, " "), dec.ByteFallback(), dec.Fuse(),
                               dec.Strip(" ", 1, 0)])
    tk.add_special_tokens([lib.AddedToken(_SPECIAL[i], special=True, normalized=False)
                           for i in sorted(_SPECIAL)])
    tk.post_processor = lib.processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", BOS)])
    text: str = tk.to_str(pretty=False)
    json.loads(text)  # the library's own output; fail here rather than in a reader later
    return text


def load_any_tokenizer(path: str | Path, vocab_size: int) -> TextCodec:
    """A tokenizer file of any kind: ``*.json`` (tokenizers), ``*.model`` (SentencePiece), else
    a llama2.c ``tokenizer.bin``; its vocabulary must be the model's.

    Raises:
        ModelError: Unreadable, or its vocabulary size is not ``vocab_size``.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".json", ".model"):
        return load_tokenizer(p, vocab_size)
    tok: TextCodec = load_hf_tokenizer(p) if suffix == ".json" else load_sentencepiece(p)
    if tok.vocab_size != vocab_size:
        raise ModelError(f"{p}: tokenizer has {tok.vocab_size} tokens but the model's "
                         f"vocabulary is {vocab_size}; pass the tokenizer trained with this "
                         "model")
    return tok
