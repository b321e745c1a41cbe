"""Alignment of device time to sensor samples, against a simulated 10-minute run's truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tinytelem.analysis.alignment import align_markers, align_ping
from tinytelem.analysis.clock import ClockFit
from tinytelem.trace.schema import PING_DTYPE, POWER_BLOCK_DTYPE

RATE = 100_000.0
DURATION = 600.0


class World:
    """True host time h; device_s = (h - 3.0) * (1 + dev_ppm); sensor_s = (h - s0) * (1 + s_ppm)."""

    def __init__(self, sensor_ppm: float, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.dev_k = 1 + 35e-6
        self.sen_k = 1 + sensor_ppm * 1e-6
        self.s0 = 1.2345

    def device_s(self, h: np.ndarray) -> np.ndarray:
        return (h - 3.0) * self.dev_k

    def host_of_device(self, d: np.ndarray) -> np.ndarray:
        return d / self.dev_k + 3.0

    def sensor_s(self, h: np.ndarray) -> np.ndarray:
        return (h - self.s0) * self.sen_k

    def truth_sensor_of_device(self, d: np.ndarray) -> np.ndarray:
        return self.sensor_s(self.host_of_device(d))


@pytest.mark.parametrize("ppm", [-200.0, 200.0])
def test_sensors_alignment_markers_under_10us(ppm: float) -> None:
    w = World(ppm, seed=int(ppm) + 1000)
    # Token boundaries every 15..35 ms for ten minutes.
    gaps = w.rng.uniform(0.015, 0.035, int(DURATION / 0.02))
    h = 5.0 + np.cumsum(gaps)
    h = h[h < 5.0 + DURATION]
    dev = w.device_s(h)
    edges = np.ceil(w.sensor_s(h) * RATE).astype(np.int64)
    keep = w.rng.random(edges.size) > 0.02  # 2% of edges lost in sensor gaps
    glitches = w.rng.integers(edges.min(), edges.max(), edges.size // 100)
    observed = np.sort(np.concatenate([edges[keep], glitches]))
    al = align_markers(dev, observed, RATE)
    assert al.method == "gpio-markers"
    probe = np.linspace(dev[0], dev[-1], 2001)
    err = np.abs(al.device_to_sensor_s(probe) - w.truth_sensor_of_device(probe))
    assert float(err.max()) < 10e-6
    assert al.error_bound_s < 10e-6 and float(err.max()) < al.error_bound_s * 3
    assert al.drift_ppm == pytest.approx((w.sen_k / w.dev_k - 1) * 1e6, abs=0.5)
    assert al.n_points >= keep.sum() * 0.95
    assert al.n_extra_edges >= glitches.size * 0.9
    attrs = al.clock_attrs()
    assert attrs["alignment_method"] == "gpio-markers"
    # round trip and composition with a device fit
    np.testing.assert_allclose(al.sensor_to_device_s(al.device_to_sensor_s(probe)), probe)
    dfit = ClockFit.make(3.0, 1 / w.dev_k, residual_s=0, error_bound_s=0, n_points=2,
                         method="x")
    sfit = al.sensor_fit(dfit)
    sensor_s = w.sensor_s(np.array([100.0, 400.0]))
    np.testing.assert_allclose(sfit.to_host(sensor_s), [100.0, 400.0], atol=1e-5)


def test_sensors_alignment_markers_need_data() -> None:
    assert align_markers([1.0], [5, 6], RATE).method == "none"
    # markers with no matching edges at all
    al = align_markers(np.arange(10) * 0.02, np.array([1, 2, 3]) * 10**7, RATE)
    assert al.method in ("none", "gpio-markers")


@pytest.mark.parametrize("ppm", [-200.0, 200.0])
def test_sensors_alignment_ping_under_1ms(ppm: float) -> None:
    w = World(ppm, seed=700 + int(ppm))
    tick_hz = 1_000_000.0
    # PING once a second; each direction 0.15 ms minimum + exponential jitter.
    send = 5.0 + np.arange(DURATION) + w.rng.uniform(0, 0.1, int(DURATION))
    d1 = 0.15e-3 + w.rng.exponential(0.8e-3, send.size)
    d2 = 0.15e-3 + w.rng.exponential(0.8e-3, send.size)
    pings = np.zeros(send.size, dtype=PING_DTYPE)
    pings["send_host_s"] = send
    pings["recv_host_s"] = send + d1 + d2
    pings["ticks"] = np.round(w.device_s(send + d1) * tick_hz).astype(np.uint64)
    # Sensor blocks of 5000 samples, arriving 0.3 ms + jitter after their last sample.
    n_blocks = int(DURATION / 0.05)
    first = np.arange(n_blocks, dtype=np.int64) * 5000 + int(5.0 * RATE)
    last_sensor_s = (first + 4999) / RATE
    produced_h = last_sensor_s / w.sen_k + w.s0
    blocks = np.zeros(n_blocks, dtype=POWER_BLOCK_DTYPE)
    blocks["first_index"] = first
    blocks["n"] = 5000
    blocks["host_s"] = produced_h + 0.3e-3 + w.rng.exponential(0.5e-3, n_blocks)
    al = align_ping(pings, tick_hz, blocks, RATE, sensor_latency_s=0.3e-3)
    assert al.method == "ping"
    probe = np.linspace(w.device_s(np.array([6.0]))[0], w.device_s(np.array([600.0]))[0], 999)
    err = np.abs(al.device_to_sensor_s(probe) - w.truth_sensor_of_device(probe))
    assert float(err.max()) < 1e-3
    assert math.isfinite(al.error_bound_s) and float(err.max()) <= al.error_bound_s
    # without pings: no alignment
    assert align_ping(pings[:0], tick_hz, blocks, RATE).method == "none"
