"""Accuracy metrics: the batched forward pass, the metric definitions, the shipped stories."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tinytelem.errors import ModelError
from tinytelem.models.evaluate import (
    compare_logits,
    eval_texts,
    evaluate,
    forward_sequence,
    render_eval_table,
    sequence_logits,
    tokenize_texts,
)
from tinytelem.models.llama2c import builtin_model, load_checkpoint
from tinytelem.models.quant import dequantize_model, quantize_model
from tinytelem.models.reference import Transformer
from tinytelem.models.tokenizer import ByteTokenizer, load_tokenizer


def test_batched_forward_matches_reference(stories260k: Path) -> None:
    m = load_checkpoint(stories260k)
    ids = [1, 403, 407, 261, 378, 8, 300, 41, 22, 500]
    tf = Transformer(m)
    step = np.stack([tf.forward(t, p) for p, t in enumerate(ids)])
    batched = forward_sequence(m, ids)
    np.testing.assert_allclose(batched, step, atol=1e-4)
    assert (batched.argmax(1) == step.argmax(1)).all()
    assert np.array_equal(sequence_logits(Transformer(m), ids), step)


def test_forward_errors() -> None:
    m = builtin_model(0)
    with pytest.raises(ModelError, match=r"0\.\.511"):
        forward_sequence(m, [1, 900])
    with pytest.raises(ModelError, match="exceeds the context"):
        forward_sequence(m, [1] * 513)
    assert forward_sequence(m, []).shape == (0, 512)


def test_metric_definitions_on_hand_made_logits() -> None:
    ref = [np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]], np.float32))]
    cand = [np.log(np.array([[0.25, 0.5, 0.25], [0.1, 0.8, 0.1]], np.float32))]
    tgt = [np.array([0, 1])]
    r = compare_logits("x", ref, cand, tgt)
    kl0 = 0.5 * math.log(2) + 0.25 * math.log(0.5)
    assert r.tokens == 2
    assert r.kld_mean == pytest.approx(kl0 / 2, rel=1e-6)
    assert r.kld_max == pytest.approx(kl0, rel=1e-6)
    assert r.top1 == pytest.approx(0.5)
    assert r.ppl == pytest.approx(math.exp(-(math.log(0.25) + math.log(0.8)) / 2), rel=1e-6)
    assert r.ppl_ref == pytest.approx(math.exp(-(math.log(0.5) + math.log(0.8)) / 2), rel=1e-6)
    assert r.rms_dp == pytest.approx(math.sqrt((0.25 ** 2 + 0) / 2), rel=1e-5)
    same = compare_logits("same", ref, ref, tgt)
    assert same.kld_max == 0 and same.top1 == 1 and same.rms_dp == 0
    with pytest.raises(ModelError, match="empty"):
        compare_logits("none", [], [], [])


def test_stories_shipped_and_user_text(tmp_path: Path) -> None:
    texts = eval_texts()
    assert 15 <= len(texts) <= 25
    assert all(40 < len(t.split()) < 200 for t in texts)
    user = tmp_path / "t.txt"
    user.write_text("First para\nstill first.\n\nSecond one.\n\n\n", encoding="utf-8")
    assert eval_texts(user) == ["First para still first.", "Second one."]
    (tmp_path / "e.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(ModelError, match="no evaluation text"):
        eval_texts(tmp_path / "e.txt")
    with pytest.raises(ModelError, match="cannot read"):
        eval_texts(tmp_path / "missing.txt")
    seqs = tokenize_texts(ByteTokenizer(), ["abcdef", "ghij"], 512, max_tokens=8)
    assert sum(len(s) - 1 for s in seqs) == 8 and all(s[0] == 1 for s in seqs)


def test_bit_widths_order_on_real_model(stories260k: Path, tok512: Path) -> None:
    m = load_checkpoint(stories260k)
    seqs = tokenize_texts(load_tokenizer(tok512), eval_texts(), 512, max_tokens=600)
    cands = [(f"{b}", dequantize_model(quantize_model(m, b, 32))) for b in (8, 4, 2)]
    res = evaluate(m, cands, seqs)
    klds = [r.kld_mean for r in res]
    assert klds == sorted(klds) and klds[0] < 0.01 < klds[-1]
    assert [r.top1 for r in res] == sorted((r.top1 for r in res), reverse=True)
    assert 3 < res[0].ppl_ref < 10  # stories260K on TinyStories-like text
    table = render_eval_table(res)
    assert "KLD mean" in table and "reference PPL" in table
    assert res[0].to_dict()["label"] == "8"
