"""GGML block quantizers: bit-exact legacy types, K-quant packing checked through gguf-py."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinytelem.errors import ModelError
from tinytelem.models import kquants

gguf = pytest.importorskip("gguf")
GT = gguf.GGMLQuantizationType
LEGACY = [("q8_0", GT.Q8_0), ("q4_0", GT.Q4_0)]
KQ = [("q2_k", GT.Q2_K, 0.32), ("q3_k", GT.Q3_K, 0.19), ("q4_k", GT.Q4_K, 0.085)]


def _data(seed: int, rows: int = 16, cols: int = 512) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    x[0, :32] = 0.0  # an all-zero block (d = 0)
    x[1, 7] = 40.0  # an outlier
    x[2, 32:64] = 0.49999997  # the value where floor(x + 0.5) rounds wrongly in float32
    return x


@pytest.mark.parametrize(("name", "gtype"), LEGACY)
def test_legacy_byte_identical(name: str, gtype: object) -> None:
    for seed in range(3):
        x = _data(seed) * np.float32(10.0 ** (seed - 1))
        ours = kquants.quantize(x, name)
        theirs = gguf.quants.quantize(x, gtype)
        assert ours.shape == theirs.shape
        assert np.array_equal(ours, theirs)
        assert np.array_equal(kquants.dequantize(ours, name), gguf.quants.dequantize(theirs, gtype))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e4, 1e4, width=32), min_size=32, max_size=32),
       st.sampled_from(LEGACY))
def test_legacy_byte_identical_any_block(values: list[float], pair: tuple[str, object]) -> None:
    x = np.asarray(values, dtype=np.float32).reshape(1, 32)
    assert np.array_equal(kquants.quantize(x, pair[0]), gguf.quants.quantize(x, pair[1]))


@pytest.mark.parametrize(("name", "gtype", "bound"), KQ)
def test_kquant_roundtrip_through_gguf(name: str, gtype: object, bound: float) -> None:
    x = _data(5)
    packed = kquants.quantize(x, name)
    assert packed.shape == (16, 512 // 256 * kquants.BLOCK[name][1])
    theirs = gguf.quants.dequantize(packed, gtype)
    assert np.array_equal(kquants.dequantize(packed, name), theirs)
    rows = slice(3, None)  # gaussian rows; the crafted ones are checked below
    rmse = float(np.sqrt(((theirs[rows] - x[rows]) ** 2).mean()))
    assert rmse < bound, rmse
    assert np.abs(theirs[0, :32]).max() < 0.05  # the zero block stays near zero
    # Quantizing a scaled tensor scales the error: the packing holds scales, not constants.
    big = gguf.quants.dequantize(kquants.quantize(x[rows] * 100, name), gtype)
    assert float(np.sqrt(((big - x[rows] * 100) ** 2).mean())) < bound * 100


@pytest.mark.parametrize(("name", "gtype", "bound"), KQ)
def test_kquant_dequantizer_matches_gguf_on_random_bytes(name: str, gtype: object,
                                                        bound: float) -> None:
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, size=(8, kquants.BLOCK[name][1]), dtype=np.uint8)
    with np.errstate(all="ignore"):  # random f16 scales include inf/NaN
        ours = kquants.dequantize(raw, name)
        theirs = gguf.quants.dequantize(raw, gtype)
    assert np.allclose(ours, theirs, equal_nan=True)


def test_kquant_monotone_in_bits() -> None:
    x = _data(9)[3:]
    errs = [float(np.abs(kquants.dequantize(kquants.quantize(x, t), t) - x).mean())
            for t in ("q2_k", "q3_k", "q4_k", "q8_0")]
    assert errs == sorted(errs, reverse=True)


def test_errors_name_the_problem() -> None:
    with pytest.raises(ModelError, match="multiple of 256"):
        kquants.quantize(np.zeros((2, 64), np.float32), "q4_k")
    with pytest.raises(ModelError, match="not one of"):
        kquants.quantize(np.zeros((2, 64), np.float32), "q5_k")
    with pytest.raises(ModelError, match="not one of"):
        kquants.dequantize(np.zeros((2, 64), np.uint8), "iq2")
    with pytest.raises(ModelError, match="whole 18-byte blocks"):
        kquants.dequantize(np.zeros((2, 17), np.uint8), "q4_0")
    assert kquants.row_bytes("q4_k", 512) == 288
