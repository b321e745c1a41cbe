"""SegmentWaveform: the block lookup and the pruning that keep a long run cheap."""

from __future__ import annotations

import numpy as np

from tinytelem.power.waveform import SegmentWaveform


def test_many_segments_give_the_same_current_as_a_direct_lookup() -> None:
    rng = np.random.default_rng(1)
    wave = SegmentWaveform(voltage_v=2.0, idle_w=0.1, horizon_s=1e9)
    edges = np.cumsum(rng.uniform(0.0005, 0.002, 5001))
    watts = rng.uniform(0.2, 1.0, 5000)
    order = rng.permutation(5000)  # segments may arrive in any order
    for i in order:
        if i % 7:  # leave holes: idle there
            wave.add_segment(float(edges[i]), float(edges[i + 1]), float(watts[i]))
    for start in (edges[0] - 0.01, edges[1000], edges[4990]):
        t = start + np.arange(2000) * 1e-5
        got = wave.current_at(t)
        k = np.searchsorted(edges, t, side="right") - 1
        inside = (k >= 0) & (k < 5000) & (k % 7 != 0)
        want = np.where(inside, watts[np.clip(k, 0, 4999)], 0.1) / 2.0
        np.testing.assert_allclose(got, want)


def test_segments_older_than_the_horizon_are_forgotten() -> None:
    wave = SegmentWaveform(horizon_s=1.0)
    for i in range(10_000):
        wave.add_segment(i * 0.001, (i + 1) * 0.001, 1.0)
    assert 990 <= len(wave) <= 1002  # the last second only (float edges)
