"""Integer inference: the arithmetic contract, accuracy against fp32, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinytelem.errors import ModelError
from tinytelem.models import qinfer, reference
from tinytelem.models.llama2c import builtin_model, load_checkpoint
from tinytelem.models.qtensor import QuantTensor, quantize_matrix
from tinytelem.models.quant import quantize_model
from tinytelem.models.tokenizer import load_tokenizer

PROMPT = "Once upon a time"


def test_tt_expf_accuracy_and_limits() -> None:
    x = np.linspace(-86.0, 88.0, 200_001, dtype=np.float32)
    got = qinfer.tt_expf(x).astype(np.float64)
    want = np.exp(x.astype(np.float64))
    assert np.max(np.abs(got - want) / want) < 2.5e-7  # about 2 ulp
    assert qinfer.tt_expf(np.float32([-86.5, -1000.0])).tolist() == [0.0, 0.0]
    assert np.isfinite(qinfer.tt_expf(np.float32([1e6]))).all()  # clamped at 88
    assert qinfer.tt_expf(np.float32([0.0]))[0] == 1.0


def test_sequential_sum_is_a_c_loop() -> None:
    rng = np.random.default_rng(5)
    a = (rng.standard_normal((3, 257)) * 10 ** rng.uniform(-3, 3, (3, 257))).astype(np.float32)
    got = qinfer._seqsum(a, axis=1)
    for r in range(3):
        acc = np.float32(0.0)
        for v in a[r]:
            acc = np.float32(acc + v)
        assert got[r].tobytes() == acc.tobytes()
    assert qinfer._seqsum(np.float32([-0.0, -0.0])).tobytes() == np.float32(0.0).tobytes()


def test_activation_rounding_is_half_to_even() -> None:
    x = np.zeros(16, np.float32)
    x[:6] = [127.0, 0.5, 1.5, -0.5, 2.5, -2.5]
    xq, d = qinfer.quantize_activation(x, 16)
    assert d.tolist() == [1.0]
    assert xq[0, :6].tolist() == [127.0, 0.0, 2.0, 0.0, 2.0, -2.0]
    xq0, d0 = qinfer.quantize_activation(np.zeros(16, np.float32), 16)
    assert d0.tolist() == [0.0] and not xq0.any()


def _matvec_by_hand(qt: QuantTensor, x: np.ndarray) -> np.ndarray:
    """The contract written as the C loops would run it, with numpy scalars."""
    rows, cols = qt.shape
    g = qt.group_size
    lv = qt.levels().astype(np.int64)
    out = np.zeros(rows, np.float32)
    for gi in range(cols // g):
        seg = x[gi * g:(gi + 1) * g]
        amax = np.float32(max(abs(float(v)) for v in seg))
        d = np.float32(amax / np.float32(127.0))
        inv = np.float32(np.float32(1.0) / d) if d != 0 else np.float32(0.0)
        xq = [int(np.clip(np.rint(np.float32(v * inv)), -127, 127)) for v in seg]
        for r in range(rows):
            isum = sum(a * int(b) for a, b in zip(xq, lv[r, gi * g:(gi + 1) * g], strict=True))
            ws = np.float32(qt.scales[r, gi])
            out[r] = np.float32(out[r] + np.float32(np.float32(isum) * np.float32(d * ws)))
    return out


@pytest.mark.parametrize(("bits", "sym", "group"), [(2, True, 16), (3, False, 32),
                                                     (4, True, 32), (8, True, 64),
                                                     (8, False, 16)])
def test_matvec_matches_the_contract_bit_for_bit(bits: int, sym: bool, group: int) -> None:
    rng = np.random.default_rng(bits)
    qt = quantize_matrix((rng.standard_normal((6, 64)) * 0.2).astype(np.float32), bits, group,
                         sym)
    x = (rng.standard_normal(64) * 3).astype(np.float32)
    got = qinfer.matvec(qinfer._Matrix(qt), x)
    assert got.tobytes() == _matvec_by_hand(qt, x).tobytes()
    # A float matrix: the sequential dot product, and zero-extension of a short input.
    dense = (rng.standard_normal((4, 16))).astype(np.float32)
    y = qinfer.matvec(qinfer._Matrix(dense), x[:12])
    for r in range(4):
        acc = np.float32(0.0)
        for c in range(12):
            acc = np.float32(acc + np.float32(dense[r, c] * x[c]))
        assert y[r].tobytes() == acc.tobytes()
    with pytest.raises(ModelError, match="columns"):
        qinfer.matvec(qinfer._Matrix(dense), x[:20])


def _teacher_forced_agreement(m: object, qm: object, ids: list[int]) -> float:
    ref = reference.Transformer(m)  # type: ignore[arg-type]
    qt = qinfer.QTransformer(qm)  # type: ignore[arg-type]
    hits = 0
    for pos, tok in enumerate(ids[:-1]):
        hits += int(np.argmax(ref.forward(tok, pos)) == np.argmax(qt.forward(tok, pos)))
    return hits / (len(ids) - 1)


@pytest.mark.slow
def test_8bit_and_4bit_against_fp32(stories260k: Path, tok512: Path) -> None:
    m = load_checkpoint(stories260k)
    tok = load_tokenizer(tok512, m.config.vocab_size)
    prompt = tok.encode(PROMPT)
    ref_ids = reference.generate(m, prompt, 64)
    q8 = quantize_model(m, 8, 64)
    q8_ids = qinfer.generate(q8, prompt, 64)
    prefix = next((i for i, (a, b) in enumerate(zip(ref_ids, q8_ids, strict=False)) if a != b),
                  min(len(ref_ids), len(q8_ids)))
    tf8 = _teacher_forced_agreement(m, q8, ref_ids)
    print(f"8-bit: greedy prefix {prefix}/{len(ref_ids)}, teacher-forced top-1 {tf8:.3f}")
    assert tf8 >= 0.95
    assert prefix >= 48  # the first 48 greedy tokens are identical
    q4 = quantize_model(m, 4, 32, method="search")
    q4_ids = qinfer.generate(q4, prompt, 64)
    tf4 = _teacher_forced_agreement(m, q4, ref_ids)
    print(f"4-bit: teacher-forced top-1 {tf4:.3f}: {tok.decode_all(q4_ids)!r}")
    assert all(0 <= t < m.config.vocab_size for t in q4_ids) and len(q4_ids) > 32
    assert tf4 >= 0.6
    text = tok.decode_all(q4_ids)
    assert text.startswith(PROMPT) and sum(c.isalpha() or c in " .,!'\n" for c in text) \
        > 0.95 * len(text)


def test_integer_path_is_reproducible() -> None:
    qm = quantize_model(builtin_model(1), 4, 32, symmetric=False)
    runs = []
    for _ in range(2):
        tf = qinfer.QTransformer(qm)
        runs.append(b"".join(tf.forward(t, p).tobytes() for p, t in enumerate([1, 70, 80, 90])))
    assert runs[0] == runs[1]
    tf.reset()
    assert not tf.key_cache.any()
    a = qinfer.generate(qm, [1, 70], 24, temperature=0.9, seed=7)
    b = qinfer.generate(qm, [1, 70], 24, temperature=0.9, seed=7)
    c = qinfer.generate(qm, [1, 70], 24, temperature=0.9, topp=0.0, seed=7)
    d = qinfer.generate(qm, [1, 70], 24, temperature=0.9, seed=8)
    assert a == b and len(a) == 25 and len(c) == 25  # first id + one per step
    assert a != d


def test_forward_errors() -> None:
    qm = quantize_model(builtin_model(0), 8, 32)
    tf = qinfer.QTransformer(qm)
    with pytest.raises(ModelError, match="vocabulary"):
        tf.forward(512, 0)
    with pytest.raises(ModelError, match="context"):
        tf.forward(1, 512)
    with pytest.raises(ModelError, match="prompt"):
        qinfer.generate(qm, [], 5)
    del qm.tensors["norm"]
    with pytest.raises(ModelError, match="lacks tensor 'norm'"):
        qinfer.QTransformer(qm)
