"""Sample placement and exact window integration."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.analysis.helpers import TICK_HZ, Clock, blocks_of, make_pings, run_row
from tinytelem.analysis.clock import ClockFit
from tinytelem.analysis.energy import PowerTrace, index_segments, sample_indices
from tinytelem.analysis.metrics import compute_metrics
from tinytelem.analysis.rundata import RunData
from tinytelem.trace.schema import POWER_BLOCK_DTYPE

OLD_BLOCK_DTYPE = np.dtype([("first_index", "<u8"), ("n", "<u4"), ("host_s", "<f8")])
IDENTITY = ClockFit.make(0.0, 1.0, residual_s=0.0, error_bound_s=0.0, n_points=2, method="x")


@pytest.mark.parametrize("dtype", [POWER_BLOCK_DTYPE, OLD_BLOCK_DTYPE])
def test_sample_indices_follow_blocks_across_gaps(dtype: np.dtype) -> None:
    idx, pos, rows, warn = sample_indices(blocks_of([(0, 3), (10, 2)], dtype), 5)
    assert idx.tolist() == [0, 1, 2, 10, 11]
    assert pos.tolist() == [0, 1, 2, 3, 4]
    assert rows.tolist() == [0, 0, 0, 1, 1]
    assert warn == ""


def test_sample_indices_truncated_and_missing_blocks() -> None:
    idx, _, _, warn = sample_indices(blocks_of([(0, 3), (3, 3)]), 4)
    assert idx.tolist() == [0, 1, 2, 3] and "2 samples beyond the 4 stored" in warn
    idx, _, _, warn = sample_indices(np.zeros(0, dtype=POWER_BLOCK_DTYPE), 3)
    assert idx.tolist() == [0, 1, 2] and "contiguous" in warn
    assert sample_indices(np.zeros(0, dtype=POWER_BLOCK_DTYPE), 0)[3] == ""


def test_index_segments_split_on_counter_restart() -> None:
    segs = index_segments(blocks_of([(0, 3), (3, 3), (0, 3), (3, 3)]))
    assert [s.tolist() for s in segs] == [[0, 1], [2, 3]]
    assert index_segments(np.zeros(0, dtype=POWER_BLOCK_DTYPE)) == []


def test_window_integration_is_exact_with_fractions() -> None:
    # 1 kHz, 1 W then 3 W: samples [0,1ms)=1 W, [1,2ms)=3 W, gap, [3,4ms)=1 W.
    trace = PowerTrace.build(
        [0, 1, 3],
        [0.2, 0.6, 0.2],
        voltage_v=5.0,
        rate_hz=1000.0,
        sensor=IDENTITY,
        device=IDENTITY,
    )
    e, c = trace.window(0.0005, 0.0035)
    assert e == pytest.approx(0.5e-3 * 1 + 1e-3 * 3 + 0.5e-3 * 1)
    assert c == pytest.approx(0.002)
    assert trace.window(0.01, 0.0) == (0.0, 0.0)
    assert trace.window(math.nan, 1.0) == (0.0, 0.0)
    assert trace.window(-1.0, 0.0) == (0.0, 0.0)
    empty = PowerTrace(np.zeros(0), 0.001, np.zeros(0))
    assert empty.window(0.0, 1.0) == (0.0, 0.0)


def test_nan_samples_are_missing() -> None:
    trace = PowerTrace.build(
        [0, 1, 2],
        [1.0, math.nan, 1.0],
        voltage_v=1.0,
        rate_hz=1.0,
        sensor=IDENTITY,
        device=IDENTITY,
    )
    assert trace.size == 2
    assert trace.window(0.0, 3.0) == pytest.approx((2.0, 2.0))


def test_merge_resorts() -> None:
    a = PowerTrace(np.array([2.0, 3.0]), 1.0, np.array([1.0, 1.0]))
    b = PowerTrace(np.array([0.0]), 1.0, np.array([5.0]))
    m = PowerTrace.merge([a, b])
    assert m.t_s.tolist() == [0.0, 2.0, 3.0] and m.power_w.tolist() == [5.0, 1.0, 1.0]


def test_counter_restart_each_segment_fitted() -> None:
    rng = np.random.default_rng(3)
    rate, block = 1000.0, 100
    device = Clock(0.0, 1.0)
    # Sensor segment 1 starts at host 0; after a restart, segment 2 starts at host 10 from 0.
    rows = []
    for seg_host0 in (0.0, 10.0):
        for k in range(20):
            first = k * block
            rows.append((first, block, seg_host0 + (first + block - 1) / rate + 0.0002))
    blocks = np.zeros(len(rows), dtype=POWER_BLOCK_DTYPE)
    for i, (f, n, h) in enumerate(rows):
        blocks[i]["first_index"], blocks[i]["n"], blocks[i]["host_s"] = f, n, h
        blocks[i]["offset"] = i * block
    current = np.full(len(rows) * block, 0.2, dtype=np.float32)  # 1 W at 5 V
    current[len(current) // 2 :] = 0.4  # 2 W in the second segment
    data = RunData(
        attrs={"tick_hz": TICK_HZ},
        runs=run_row(1, 10.5, 11.5, 1, 1),
        pings=make_pings(device, span_s=20.0, every_s=0.5, rng=rng, scale=0.0002),
        power_current_a=current,
        power_voltage_v=5.0,
        power_rate_hz=rate,
        power_blocks=blocks,
    )
    s = compute_metrics(data)
    assert s.power.energy_j == pytest.approx(2.0, rel=0.01)
    # Idle = every sample before INFER_BEGIN: 2 s at 1 W (segment 1) + 0.5 s at 2 W.
    assert s.power.idle_w == pytest.approx((2.0 * 1 + 0.5 * 2) / 2.5, rel=0.01)
    assert any("restarted 1 time" in w for w in s.warnings)


def test_cumulative_energy_is_computed_once_and_kept() -> None:
    t = PowerTrace(np.array([0.0, 1.0, 2.0]), 1.0, np.array([1.0, 2.0, 4.0]))
    assert t.cum_energy_j.tolist() == [0.0, 1.0, 3.0, 7.0]
    first = t.cum_energy_j
    e, c = t.integrate([0.0, 0.5], [3.0, 2.5])
    assert e.tolist() == pytest.approx([7.0, 0.5 * 1 + 2 + 0.5 * 4])
    assert c.tolist() == pytest.approx([3.0, 2.0])
    assert t.cum_energy_j is first  # integrating does not rebuild the running sum
    assert PowerTrace.merge([t]).cum_energy_j is first
    merged = PowerTrace.merge([t, PowerTrace(np.array([3.0]), 1.0, np.array([8.0]))])
    assert merged.cum_energy_j.tolist() == [0.0, 1.0, 3.0, 7.0, 15.0]
    # not part of equality or repr: two traces of the same samples are equal
    assert t == PowerTrace(t.t_s, 1.0, t.power_w) and "cum_energy" not in repr(t)
