"""One matrix: levels, scales, bit packing byte layout and layout errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinytelem.errors import ModelError
from tinytelem.models.qtensor import QuantTensor, pack_levels, quantize_matrix, unpack_levels


def _matrix(rows: int = 24, cols: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((rows, cols)) * 0.1).astype(np.float32)


def test_packing_byte_layout_matches_the_spec() -> None:
    # 4-bit symmetric: offset binary (q + 8), element 0 in the low nibble.
    q4 = np.array([-8, 7, 0, 1, -1, 2, 3, -3], dtype=np.int8)
    assert pack_levels(q4, 4, True) == bytes([0xF0, 0x98, 0xA7, 0x5B])
    # 2-bit asymmetric: four per byte, lowest bits first.
    q2 = np.array([0, 1, 2, 3, 3, 2, 1, 0], dtype=np.uint8)
    assert pack_levels(q2, 2, False) == bytes([0b11100100, 0b00011011])
    # 3-bit asymmetric: 24-bit little-endian word, element j in bits 3j..3j+2.
    q3 = np.arange(8, dtype=np.uint8)
    word = sum(v << (3 * j) for j, v in enumerate(range(8)))
    assert pack_levels(q3, 3, False) == word.to_bytes(3, "little")
    # 8-bit symmetric: plain int8 two's complement.
    q8 = np.array([-128, -1, 0, 1, 127, 5, -5, 9], dtype=np.int8)
    assert pack_levels(q8, 8, True) == q8.tobytes()


@settings(max_examples=40, deadline=None)
@given(bits=st.sampled_from([2, 3, 4, 8]), sym=st.booleans(), n=st.integers(1, 40),
       seed=st.integers(0, 2**31))
def test_pack_unpack_round_trip(bits: int, sym: bool, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if sym else (0, (1 << bits) - 1)
    q = rng.integers(lo, hi + 1, size=8 * n).astype(np.int8 if sym else np.uint8)
    data = pack_levels(q, bits, sym)
    assert len(data) == 8 * n * bits // 8
    assert np.array_equal(unpack_levels(data, bits, q.size, sym), q)


def test_pack_rejects_bad_input() -> None:
    with pytest.raises(ModelError, match="multiple of 8"):
        pack_levels(np.zeros(7, np.int8), 4, True)
    with pytest.raises(ModelError, match="out of range"):
        pack_levels(np.full(8, 9, np.int8), 4, True)
    with pytest.raises(ModelError, match="5-bit"):
        pack_levels(np.zeros(8, np.int8), 5, True)
    with pytest.raises(ModelError, match="bytes"):
        unpack_levels(b"\0" * 3, 4, 8, True)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("sym", [True, False])
def test_levels_in_range_and_error_bounded(bits: int, sym: bool) -> None:
    w = _matrix()
    qt = quantize_matrix(w, bits, 32, sym)
    assert qt.q.shape == w.shape and qt.scales.shape == (24, 2)
    assert qt.scales.dtype == np.float16
    if sym:
        assert qt.q.dtype == np.int8 and qt.zeros is None
        assert qt.q.min() >= -(1 << (bits - 1)) and qt.q.max() <= (1 << (bits - 1)) - 1
    else:
        assert qt.q.dtype == np.uint8 and qt.zeros is not None
        assert qt.q.max() <= (1 << bits) - 1 and qt.zeros.max() <= (1 << bits) - 1
    # Round-to-nearest error is at most half a step (plus clipping at the far end for sym).
    step = np.repeat(np.abs(qt.scales.astype(np.float32)), 32, axis=1)
    err = np.abs(qt.dequantize() - w)
    assert np.all(err <= step * (1.0 if sym else 0.5) + 1e-6)
    back = QuantTensor.unpack(qt.pack(), bits, 32, sym, qt.shape, qt.scales, qt.zeros)
    assert np.array_equal(back.q, qt.q)
    assert np.array_equal(back.dequantize(), qt.dequantize())


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("sym", [True, False])
def test_search_never_worse_than_rtn(bits: int, sym: bool) -> None:
    w = _matrix(64, 128, seed=bits)
    rtn = quantize_matrix(w, bits, 32, sym, "rtn")
    srch = quantize_matrix(w, bits, 32, sym, "search")
    e_rtn = np.square(rtn.dequantize() - w).reshape(64, 4, 32).sum(-1)
    e_s = np.square(srch.dequantize() - w).reshape(64, 4, 32).sum(-1)
    assert np.all(e_s <= e_rtn * (1 + 1e-5) + 1e-12)  # per group
    assert e_s.sum() < 0.97 * e_rtn.sum()  # and clearly better overall at low bits


def test_symmetric_rtn_uses_the_negative_extreme() -> None:
    w = np.zeros((1, 16), np.float32)
    w[0, 3] = 0.8
    w[0, 5] = -0.3
    qt = quantize_matrix(w, 4, 16, True)
    assert qt.q[0, 3] == -8  # the largest magnitude maps to -2^(b-1)
    assert float(qt.scales[0, 0]) == pytest.approx(-0.1, rel=1e-3)


def test_zero_group_and_asymmetric_zero_is_exact() -> None:
    w = _matrix(4, 32)
    w[1] = 0.0
    for sym in (True, False):
        qt = quantize_matrix(w, 3, 16, sym, "search")
        assert np.all(qt.dequantize()[1] == 0.0)
    pos = np.abs(_matrix(2, 16)) + 0.5  # all positive: zero stays representable
    qt = quantize_matrix(pos, 4, 16, False)
    assert qt.zeros is not None and np.all(qt.zeros == 0)


def test_layout_errors_name_the_fix() -> None:
    with pytest.raises(ModelError, match="groups of 32; pick a group size that divides 48"):
        quantize_matrix(_matrix(2, 48), 4, 32)
    with pytest.raises(ModelError, match="group size 12"):
        quantize_matrix(_matrix(2, 48), 4, 12)
    with pytest.raises(ModelError, match="group size 512"):
        quantize_matrix(_matrix(2, 512), 4, 512)
    with pytest.raises(ModelError, match="6-bit"):
        quantize_matrix(_matrix(), 6, 32)
    with pytest.raises(ModelError, match="2-D"):
        quantize_matrix(np.zeros(64, np.float32), 4, 32)
    with pytest.raises(ModelError, match="unknown quantization method"):
        quantize_matrix(_matrix(), 4, 32, method="gptq")  # type: ignore[arg-type]
    bad = _matrix()
    bad[0, 0] = np.nan
    with pytest.raises(ModelError, match="NaN"):
        quantize_matrix(bad, 4, 32)
    with pytest.raises(ModelError, match="float16 range"):
        quantize_matrix(np.full((1, 16), 1e7, np.float32), 8, 16)
    with pytest.raises(ModelError, match="zero points"):
        QuantTensor.unpack(b"\0" * 8, 4, 16, False, (1, 16), np.zeros((1, 1), np.float16))
