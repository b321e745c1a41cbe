"""Clock fits against synthetic clocks with known offset and drift."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.analysis.helpers import TICK_HZ, Clock, make_pings
from tinytelem.analysis.clock import (
    ClockFit,
    fit_arrival_clock,
    fit_device_clock,
    fit_sensor_clock,
    lower_hull_line,
)
from tinytelem.trace.schema import PING_DTYPE, POWER_BLOCK_DTYPE


@pytest.mark.parametrize("drift_ppm", [-200.0, 0.0, 137.0, 200.0])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_device_fit_within_50us_over_60s(drift_ppm: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = Clock(offset=-12.345, scale=1.0 + drift_ppm * 1e-6)
    # USB-CDC-like link: 4 pings/s, each way 0.2 ms + Exp(0.5 ms) (mean RTT 1.4 ms).
    pings = make_pings(truth, span_s=60.0, every_s=0.25, rng=rng, scale=0.0005)
    fit = fit_device_clock(pings, TICK_HZ)
    assert fit.method == "bracket-hull"
    assert fit.n_points == pings.size
    x = np.linspace(truth.from_host(0.5), truth.from_host(60.0), 200)
    err = np.abs(fit.to_host(x) - truth.to_host(x))
    assert err.max() < 50e-6
    assert abs(fit.drift_ppm - drift_ppm) < 2.0
    # The bound is honest: it covers the actual error.
    assert fit.error_bound_s >= err.max()
    assert fit.error_bound_s < 5e-3


def test_device_fit_beats_plain_midpoint_least_squares() -> None:
    rng = np.random.default_rng(9)
    truth = Clock(offset=3.0, scale=1.0 - 150e-6)
    # Asymmetric delays: the way back is much slower, which biases plain midpoints.
    pings = make_pings(truth, span_s=60.0, every_s=0.5, rng=rng, base=0.0001, scale=0.002)
    fit = fit_device_clock(pings, TICK_HZ)
    x = pings["ticks"] / TICK_HZ
    mid = (pings["send_host_s"] + pings["recv_host_s"]) / 2
    b, a = np.polyfit(x, mid, 1)
    plain = np.abs(a + b * x - truth.to_host(x)).max()
    ours = np.abs(fit.to_host(x) - truth.to_host(x)).max()
    assert ours < plain


def test_device_fit_large_uptime_keeps_precision() -> None:
    rng = np.random.default_rng(4)
    truth = Clock(offset=-86_400.0 * 30, scale=1.0 + 180e-6)  # device up for a month
    pings = make_pings(truth, span_s=60.0, every_s=1.0, rng=rng, t0_host=1000.0)
    fit = fit_device_clock(pings, TICK_HZ)
    x = pings["ticks"] / TICK_HZ
    assert np.abs(fit.to_host(x) - truth.to_host(x)).max() < 50e-6


def test_to_host_from_host_roundtrip_vectorised() -> None:
    fit = ClockFit.make(2.5, 1.0001, residual_s=0.0, error_bound_s=0.0, n_points=3, method="x")
    x = np.array([0.0, 1.0, 1e4])
    np.testing.assert_allclose(fit.from_host(fit.to_host(x)), x, rtol=0, atol=1e-9)
    assert float(fit.to_host(1.0)) == pytest.approx(3.5001)
    assert fit.drift_ppm == pytest.approx(100.0)


def test_device_fit_degenerate_inputs_never_crash() -> None:
    none = fit_device_clock(np.zeros(0, dtype=PING_DTYPE), TICK_HZ)
    assert none.method == "none" and not none.usable and math.isinf(none.error_bound_s)
    one = np.zeros(1, dtype=PING_DTYPE)
    one[0] = (1, 10.0, 10.002, int(3 * TICK_HZ))
    single = fit_device_clock(one, TICK_HZ)
    assert single.method == "single" and single.scale == 1.0
    assert single.offset_s == pytest.approx(10.001 - 3.0)
    assert math.isinf(single.error_bound_s) and single.usable
    assert fit_device_clock(one, 0.0).method == "none"
    # Negative RTT and NaN rows are dropped, same ticks give a single-point fit.
    bad = np.zeros(3, dtype=PING_DTYPE)
    bad[0] = (1, 5.0, 4.0, 100)
    bad[1] = (2, math.nan, 4.0, 100)
    bad[2] = (3, 5.0, 5.001, 100)
    assert fit_device_clock(bad, TICK_HZ).method == "single"
    bad[0] = (1, 5.0, 4.0, 300)
    assert fit_device_clock(bad[:2], TICK_HZ).method == "none"


def test_device_fit_backwards_clock_falls_back() -> None:
    p = np.zeros(4, dtype=PING_DTYPE)
    for i in range(4):
        p[i] = (i, 10.0 - i, 10.001 - i, int(i * TICK_HZ))
    fit = fit_device_clock(p, TICK_HZ)
    assert fit.method == "single"


def _blocks(sensor: Clock, rate: float, block: int, n_blocks: int, rng) -> np.ndarray:
    b = np.zeros(n_blocks, dtype=POWER_BLOCK_DTYPE)
    first = np.arange(n_blocks) * block
    b["first_index"] = first
    b["n"] = block
    b["host_s"] = (
        sensor.to_host((first + block - 1) / rate) + 0.0005 + rng.exponential(0.004, n_blocks)
    )
    return b


@pytest.mark.parametrize("drift_ppm", [-200.0, 55.0, 200.0])
def test_sensor_fit_within_one_block_period(drift_ppm: float) -> None:
    rng = np.random.default_rng(11)
    rate, block = 100_000.0, 5000  # 50 ms blocks
    sensor = Clock(offset=7.0, scale=1.0 + drift_ppm * 1e-6)
    blocks = _blocks(sensor, rate, block, 1200, rng)  # 60 s
    fit = fit_sensor_clock(blocks, rate)
    assert fit.method == "lower-hull"
    x = np.linspace(0, 60.0, 100)
    err = np.abs(fit.to_host(x) - sensor.to_host(x))
    assert err.max() < block / rate
    # Much better in practice: the envelope sits on the minimum delay (0.5 ms).
    assert err.max() < 0.001
    assert abs(fit.drift_ppm - drift_ppm) < 5.0


def test_lower_hull_beats_least_squares_on_one_sided_delays() -> None:
    rng = np.random.default_rng(5)
    x = np.linspace(0, 100, 500)
    y = 1.0 + 1.0002 * x + rng.exponential(0.01, x.size)
    line = lower_hull_line(x, y)
    assert line is not None
    a, b = line
    assert abs(a - 1.0) < 0.002
    assert abs(b - 1.0002) < 5e-6
    assert np.all(y - (a + b * x) >= -1e-9)  # below every point


def test_lower_hull_degenerate() -> None:
    assert lower_hull_line([1.0], [2.0]) is None
    assert lower_hull_line([1.0, 1.0], [2.0, 3.0]) is None
    assert lower_hull_line([], []) is None
    assert lower_hull_line([0.0, 1.0], [0.0, 2.0]) == pytest.approx((0.0, 2.0))


def test_sensor_and_arrival_fit_fallbacks() -> None:
    empty = np.zeros(0, dtype=POWER_BLOCK_DTYPE)
    assert fit_sensor_clock(empty, 1000.0).method == "none"
    one = np.zeros(1, dtype=POWER_BLOCK_DTYPE)
    one["first_index"], one["n"], one["host_s"] = 1000, 100, 5.0
    fit = fit_sensor_clock(one, 1000.0)
    assert fit.method == "single"
    assert fit.offset_s == pytest.approx(5.0 - 1.099)
    assert fit_sensor_clock(one, 0.0).method == "none"
    assert fit_sensor_clock(one, math.nan).method == "none"
    assert fit_arrival_clock([0.0, 1.0], [5.0, 4.0]).method == "single"
    assert fit_arrival_clock([math.nan], [1.0]).method == "none"


def test_device_fit_falls_back_to_min_rtt_when_bracket_is_inconsistent() -> None:
    rng = np.random.default_rng(8)
    truth = Clock(offset=-1.0, scale=1.0 + 50e-6)
    pings = make_pings(truth, span_s=60.0, every_s=0.25, rng=rng, scale=0.0005)
    # A mis-paired PONG: its ticks are 20 ms off, outside its own round trip.
    pings["ticks"][100] += int(0.020 * TICK_HZ)
    fit = fit_device_clock(pings, TICK_HZ)
    assert fit.method == "min-rtt-wls"
    x = np.linspace(truth.from_host(1.0), truth.from_host(60.0), 50)
    assert np.abs(fit.to_host(x) - truth.to_host(x)).max() < 1e-3
    assert fit.error_bound_s > fit.residual_s > 0
