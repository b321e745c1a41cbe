"""RunData's placement on the device clock, as every analysis reads it."""

from __future__ import annotations

import numpy as np
import pytest

from tests.analysis.helpers import TICK_HZ, Clock, blocks_of, make_pings, run_row
from tinytelem.analysis.metrics import compute_metrics
from tinytelem.analysis.rundata import RunData, device_clock, power_trace


def test_public_power_trace_matches_compute_metrics() -> None:
    data = RunData(
        attrs={"tick_hz": TICK_HZ},
        runs=run_row(1, 0.5, 1.5, 1, 1),
        pings=make_pings(Clock(0.0, 1.0), span_s=4.0, every_s=0.5,
                         rng=np.random.default_rng(1), scale=0.0001),
        power_current_a=np.full(2000, 0.2, dtype=np.float32),
        power_voltage_v=5.0,
        power_rate_hz=1000.0,
        power_blocks=blocks_of([(0, 1000), (1000, 1000)]),
    )
    data.power_blocks["host_s"] = [0.9995, 1.9995]
    s = compute_metrics(data)
    fit = device_clock(data)
    assert fit == s.device_clock
    p = power_trace(data)
    assert p is not None and s.power_trace is not None
    assert np.array_equal(p.t_s, s.power_trace.t_s)
    assert np.array_equal(p.power_w, s.power_trace.power_w)
    assert p.window(0.5, 1.5)[0] == pytest.approx(s.power.energy_j)
    same = power_trace(data, fit, warnings := [])
    assert same is not None and np.array_equal(same.t_s, p.t_s) and warnings == []
    bare = RunData(attrs={"tick_hz": TICK_HZ}, runs=run_row(1, 0.5, 1.5, 1, 1))
    assert power_trace(bare) is None and compute_metrics(bare).power_trace is None
