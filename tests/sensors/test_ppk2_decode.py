"""PPK2 decoder: the kernels against the formula, and bytes split at every offset."""

from __future__ import annotations

import numpy as np
import pytest

from tinytelem.errors import SensorError
from tinytelem.sensors.ppk2_decode import (
    PPK2Decoder,
    PPK2Gap,
    PPK2MetadataEvent,
    PPK2Samples,
    SpikeFilterConfig,
)
from tinytelem.sensors.ppk2_emulator import EXAMPLE_METADATA
from tinytelem.sensors.ppk2_protocol import (
    convert_reference,
    format_metadata,
    pack_words,
)


def _words(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ranges = np.repeat(rng.integers(0, 5, n // 50 + 1), 50)[:n]
    return pack_words(rng.integers(0, 16384, n), ranges, np.arange(n), rng.integers(0, 256, n))


@pytest.mark.parametrize("backend", ["numba", "numpy", "python"])
def test_sensors_ppk2_conversion_equals_formula(backend: str) -> None:
    words = _words(5000)
    dec = PPK2Decoder(EXAMPLE_METADATA, vdd_mv=3000, spike=SpikeFilterConfig(enabled=False),
                      backend=backend)
    (ev,) = dec.receive_data(words.tobytes())
    assert isinstance(ev, PPK2Samples)
    ref = convert_reference(words, EXAMPLE_METADATA, 3000).astype(np.float32)
    np.testing.assert_array_equal(ev.current_a, ref)
    np.testing.assert_array_equal(ev.logic, (words >> 24).astype(np.uint8))


def test_sensors_ppk2_spike_filter_backends_agree() -> None:
    words = _words(20000, seed=3)
    outs = []
    for backend in ("numba", "numpy", "python"):
        dec = PPK2Decoder(EXAMPLE_METADATA, backend=backend)
        cur = np.concatenate([e.current_a for e in dec.receive_data(words[:7001].tobytes())
                              + dec.receive_data(words[7001:].tobytes())
                              if isinstance(e, PPK2Samples)])
        outs.append(cur)
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-6)
    np.testing.assert_allclose(outs[0], outs[2], rtol=1e-6)
    ref = convert_reference(words, EXAMPLE_METADATA, 3300)
    switch = np.flatnonzero(np.diff((words >> 14) & 7)) + 1
    assert not np.allclose(outs[0][switch], ref[switch])  # filtered after switches
    steady = np.setdiff1d(np.arange(words.size), np.concatenate([switch + k for k in range(3)]))
    np.testing.assert_allclose(outs[0][steady], ref[steady].astype(np.float32), rtol=1e-6)


def test_sensors_ppk2_split_at_every_offset_and_gaps() -> None:
    words = _words(40)
    keep = np.ones(40, dtype=bool)
    keep[10:13] = False  # 3 lost samples
    keep[30] = False
    data = words[keep].tobytes()
    for cut in range(len(data) + 1):
        dec = PPK2Decoder(EXAMPLE_METADATA)
        evs = dec.receive_data(data[:cut]) + dec.receive_data(data[cut:])
        gaps = [e for e in evs if isinstance(e, PPK2Gap)]
        assert [(g.first_index, g.n_missing) for g in gaps] == [(10, 3), (30, 1)]
        assert dec.samples == 36 and dec.next_index == 40
        idx = np.concatenate([np.arange(e.first_index, e.first_index + e.current_a.size)
                              for e in evs if isinstance(e, PPK2Samples)])
        np.testing.assert_array_equal(idx, np.flatnonzero(keep))


def test_sensors_ppk2_metadata_then_samples_one_byte_at_a_time() -> None:
    words = _words(8)
    data = format_metadata(EXAMPLE_METADATA).encode() + words.tobytes()
    dec = PPK2Decoder()
    dec.expect_metadata()
    evs = []
    for b in data:
        evs += dec.receive_data(bytes([b]))
    assert isinstance(evs[0], PPK2MetadataEvent)
    assert dec.metadata.hw == "13371337"
    assert sum(e.current_a.size for e in evs if isinstance(e, PPK2Samples)) == 8
    with pytest.raises(SensorError, match="backend"):
        PPK2Decoder(backend="fortran").receive_data(words.tobytes())
