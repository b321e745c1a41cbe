"""tokenizer.json built from a llama2.c vocabulary encodes like run.c; SentencePiece models read."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinytelem.errors import ModelError
from tinytelem.models.hf_tokenizer import (
    load_any_tokenizer,
    load_hf_tokenizer,
    load_sentencepiece,
    tokenizer_json,
)
from tinytelem.models.tokenizer import load_tokenizer

pytest.importorskip("tokenizers", reason="the hf extra is not installed")

TEXTS = ("Once upon a time", "The little dog ran to the park.", "", " a  b\n\nc",
         'Lily said, "Yes!" 123 \u00e9 \u00fc \u65e5\u672c \U0001f600 x\ty')


def test_tokenizer_json_encodes_and_decodes_like_run_c(tok512: Path, tmp_path: Path) -> None:
    tok = load_tokenizer(tok512)
    path = tmp_path / "tokenizer.json"
    path.write_text(tokenizer_json(tok))
    hf = load_hf_tokenizer(path)
    assert hf.vocab_size == tok.vocab_size == 512
    for text in TEXTS:
        ids = tok.encode(text)
        assert hf.encode(text) == ids, text
        assert hf.decode_all(ids) == tok.decode_all(ids) == text
    # The library's own template adds BOS the way transformers would.
    assert hf.tk.encode("Once").ids == tok.encode("Once")
    # Back to pieces and scores (what a GGUF stores): run.c's encoder gives the same ids.
    back = hf.as_llama2c()
    assert back is not None and back.pieces == tok.pieces
    for text in TEXTS:
        assert back.encode(text) == tok.encode(text), text


def test_vocabulary_mismatch_and_byte_level_vocabularies_are_refused(tok512: Path,
                                                                     tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text(tokenizer_json(load_tokenizer(tok512)))
    with pytest.raises(ModelError, match="tokenizer has 512 tokens but the model's vocabulary "
                                         "is 32000"):
        load_any_tokenizer(path, 32000)
    import tokenizers

    byte_level = tokenizers.Tokenizer(tokenizers.models.BPE(
        vocab={"b": 0, "\u0120b": 1, "\u0120": 2}, merges=[("\u0120", "b")]))
    byte_level.save(str(tmp_path / "gpt2.json"))
    with pytest.raises(ModelError, match="not a SentencePiece-style vocabulary"):
        load_hf_tokenizer(tmp_path / "gpt2.json")


def test_sentencepiece_model_becomes_a_llama2c_vocabulary(tmp_path: Path) -> None:
    spm = pytest.importorskip("sentencepiece", reason="the hf extra is not installed")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["the cat sat on the mat", "a dog ran in the park",
                                 "once upon a time there was a cat"] * 50))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "sp"),
                                   vocab_size=300, model_type="bpe", byte_fallback=True,
                                   character_coverage=1.0, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "sp.model"))
    tok = load_sentencepiece(tmp_path / "sp.model")
    assert tok.vocab_size == sp.GetPieceSize() == 300
    assert tok.pieces[1] == b"\n<s>\n" and tok.pieces[3] == b"<0x00>"
    for text in ("the cat sat", "once upon a time", "a dog ran in the park"):
        assert tok.encode(text) == [1, *sp.encode(text)], text
    with pytest.raises(ModelError, match="not a readable SentencePiece model"):
        load_sentencepiece(corpus)
