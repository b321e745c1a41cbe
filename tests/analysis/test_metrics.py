"""Run metrics on synthetic traces whose latency and energy are known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.analysis.helpers import (
    TICK_HZ,
    Clock,
    analytic_energy,
    make_pings,
    make_power,
    piecewise,
    run_row,
    schedule,
    tokens_for_run,
)
from tinytelem.analysis.metrics import compute_metrics
from tinytelem.analysis.rundata import RunData
from tinytelem.errors import TraceError
from tinytelem.trace.schema import LINK_GAP_DTYPE, MEMORY_DTYPE, POWER_GAP_DTYPE, RUN_DTYPE

JITTER = np.array([0.001, -0.001, 0.002, -0.002] * 5)[:19]


def one_run(begin: float = 1.0, **kw) -> tuple[RunData, list[float], list[float], float]:
    prefill, decode, end = schedule(begin=begin, jitter=JITTER, **kw)
    data = RunData(
        attrs={"tick_hz": TICK_HZ},
        tokens=tokens_for_run(1, begin, prefill, decode),
        runs=run_row(1, begin, end, len(prefill), len(decode)),
    )
    return data, prefill, decode, end


def test_latency_exact_on_known_schedule() -> None:
    data, _, decode, end = one_run()
    s = compute_metrics(data)
    # prefill: 5 tokens at 2 ms each; first decode token 12 ms after the last prefill token.
    assert s.ttft_s == pytest.approx(0.010 + 0.012)
    assert s.prefill_s == pytest.approx(0.010)
    assert s.prefill_tok_s == pytest.approx(5 / 0.010)
    assert s.e2e_s == pytest.approx(end - 1.0)
    itl = 0.010 + JITTER
    assert s.itl.n == 19
    assert s.itl.mean == pytest.approx(itl.mean())
    assert s.itl.p50 == pytest.approx(np.percentile(itl, 50))
    assert s.itl.p90 == pytest.approx(np.percentile(itl, 90))
    assert s.itl.p99 == pytest.approx(np.percentile(itl, 99))
    assert s.itl.max == pytest.approx(0.012)
    assert s.decode_tok_s == pytest.approx(19 / (decode[-1] - decode[0]))
    assert (s.n_prompt, s.n_generated) == (5, 20)
    assert s.runs[0].complete and s.runs[0].run_id == 1


def test_lost_token_frame_is_skipped_in_itl_but_counted_in_throughput() -> None:
    data, _, decode, _ = one_run()
    lost = np.delete(data.tokens, 10)  # decode token with index 10 never arrived
    s = compute_metrics(RunData(attrs=data.attrs, tokens=lost, runs=data.runs))
    assert s.itl.n == 17  # two gaps touched the missing token
    assert s.decode_tok_s == pytest.approx(19 / (decode[-1] - decode[0]))
    assert s.n_generated == 20  # INFER_END's count, not the frames that arrived


def test_runs_pooled_and_selected() -> None:
    d1, *_ = one_run(begin=1.0)
    p2, dec2, end2 = schedule(begin=5.0, first_decode=0.030, n_decode=10, itl=0.020)
    tokens = np.concatenate([d1.tokens, tokens_for_run(2, 5.0, p2, dec2)])
    runs = np.concatenate([d1.runs, run_row(2, 5.0, end2, 5, 10)])
    failed = run_row(3, 9.0, 9.5, 5, 0, status=2)
    data = RunData(attrs={"tick_hz": TICK_HZ}, tokens=tokens, runs=np.concatenate([runs, failed]))
    s = compute_metrics(data)
    assert [r.run_id for r in s.runs] == [1, 2]  # the ERROR run is left out
    assert s.ttft_s == pytest.approx(((0.022) + (0.040)) / 2)
    assert s.itl.n == 19 + 9
    assert s.n_generated == 30
    only2 = compute_metrics(data, run_id=2)
    assert only2.ttft_s == pytest.approx(0.040)
    assert only2.itl.mean == pytest.approx(0.020)
    with pytest.raises(TraceError, match="run 7 is not in this trace"):
        compute_metrics(data, run_id=7)


def test_incomplete_and_rowless_runs() -> None:
    prefill, decode, _ = schedule()
    tokens = tokens_for_run(4, 1.0, prefill, decode)
    open_row = run_row(4, 1.0, math.nan, 5, 0, status=-1)
    s = compute_metrics(RunData(attrs={"tick_hz": TICK_HZ}, tokens=tokens, runs=open_row))
    assert s.e2e_s is None and s.ttft_s == pytest.approx(0.022)
    assert not s.runs[0].complete and s.n_generated == 20
    assert any("no run ended OK" in w for w in s.warnings)
    rowless = compute_metrics(RunData(tokens=tokens))
    assert rowless.ttft_s is None and rowless.itl.n == 19
    assert compute_metrics(RunData(tokens=tokens), run_id=4).itl.n == 19
    empty = compute_metrics(RunData())
    assert empty.runs == () and empty.ttft_s is None and empty.itl.mean is None


def test_memory_peaks_within_run_windows() -> None:
    data, *_ = one_run()
    mem = np.zeros(3, dtype=MEMORY_DTYPE)
    mem["device_s"] = [0.5, 1.05, 1.1]
    mem["heap_peak"] = [99_999, 1000, 2000]
    mem["arena_bytes"] = [1, 500, 400]
    mem["kv_bytes"] = [0, 64, 128]
    mem["stack_peak"] = [0, 10, 30]
    s = compute_metrics(RunData(attrs=data.attrs, tokens=data.tokens, runs=data.runs, memory=mem))
    m = s.memory
    assert (m.peak_heap_bytes, m.peak_arena_bytes, m.kv_bytes, m.stack_peak_bytes) == (
        2000,
        500,
        128,
        30,
    )
    none = compute_metrics(RunData(attrs=data.attrs, tokens=data.tokens, runs=data.runs))
    assert none.memory.peak_heap_bytes is None


def test_link_health() -> None:
    gaps = np.zeros(2, dtype=LINK_GAP_DTYPE)
    gaps[0] = (1.0, 2.0)
    gaps[1] = (5.0, math.nan)  # still down at the end
    pg = np.zeros(2, dtype=POWER_GAP_DTYPE)
    pg["n_missing"] = [100, 23]
    s = compute_metrics(
        RunData(
            link={"frames": 1234, "crc_errors": 2, "seq_gaps": 3}, link_gaps=gaps, power_gaps=pg
        )
    )
    assert (s.link.frames, s.link.crc_errors, s.link.gaps) == (1234, 2, 3)
    assert s.link.reconnects == 1 and s.link.dropped_samples == 123
    assert compute_metrics(RunData()).link.frames is None


# --- power and energy -------------------------------------------------------------------

RATE = 10_000.0
DEVICE = Clock(offset=-3.0, scale=1.0 + 150e-6)  # host = -3 + (1+150 ppm) * device
SENSOR = Clock(offset=0.2, scale=1.0 - 180e-6)  # host = 0.2 + (1-180 ppm) * sensor


def powered_run(drop_blocks: tuple[int, ...] = (), seed: int = 0):
    """A run at device 5..~5.3 s with idle 0.1 W, prefill 0.8 W, decode 0.5 W."""
    rng = np.random.default_rng(seed)
    begin = 5.0
    prefill, decode, end = schedule(begin=begin, jitter=JITTER)
    edges = [begin, prefill[-1], end]
    levels = [0.1, 0.8, 0.5, 0.1]
    # Sensor starts 1 s of host time before device 4 s; runs 3 s.
    n = int(3.0 * RATE)
    first_host = DEVICE.to_host(4.0)
    sensor = Clock(offset=float(first_host), scale=SENSOR.scale)
    current, blocks = make_power(
        sensor, DEVICE, piecewise(edges, levels), n, RATE, 1000, rng, drop_blocks=drop_blocks
    )
    pings = make_pings(
        DEVICE, span_s=60.0, every_s=0.25, rng=rng, t0_host=float(first_host) - 0.9, scale=0.0005
    )
    data = RunData(
        attrs={"tick_hz": TICK_HZ},
        tokens=tokens_for_run(1, begin, prefill, decode, device=DEVICE),
        runs=run_row(1, begin, end, len(prefill), len(decode)),
        pings=pings,
        power_current_a=current,
        power_voltage_v=5.0,
        power_rate_hz=RATE,
        power_blocks=blocks,
    )
    return data, edges, levels, prefill, decode, end


def test_energy_per_token_with_drifting_clocks() -> None:
    data, edges, levels, prefill, decode, end = powered_run()
    s = compute_metrics(data)
    truth = analytic_energy(edges, levels, 5.0, end)
    p = s.power
    assert p.energy_j == pytest.approx(truth, rel=0.01)
    assert p.energy_per_token_j == pytest.approx(truth / 20, rel=0.01)
    assert p.avg_w == pytest.approx(truth / (end - 5.0), rel=0.01)
    assert p.coverage == pytest.approx(1.0, abs=1e-6)
    # Uncalibrated, a 10 ms phase is off by at most the 0.3 ms minimum sensor delay x 0.7 W.
    assert p.prefill_energy_j == pytest.approx(0.8 * (prefill[-1] - 5.0), abs=0.7 * 0.0004)
    calibrated = RunData(
        **{**data.__dict__, "attrs": {"tick_hz": TICK_HZ, "sensor_latency_s": 0.0003}}
    )
    p = compute_metrics(calibrated).power
    assert p.prefill_energy_j == pytest.approx(0.8 * (prefill[-1] - 5.0), rel=0.01)
    assert p.decode_energy_j == pytest.approx(0.5 * (end - prefill[-1]), rel=0.01)
    # Per-token energy between consecutive token times: ITL x 0.5 W in decode.
    per = p.per_token_j
    assert per.size == 20
    np.testing.assert_allclose(per[1:], 0.5 * np.diff(decode), rtol=0.02)
    assert p.idle_w == pytest.approx(0.1, rel=0.01)
    assert p.energy_above_idle_j == pytest.approx(truth - 0.1 * (end - 5.0), rel=0.01)
    assert s.device_clock.method == "bracket-hull"
    assert s.sensor_clock.method == "lower-hull"
    # 3 s of blocks cannot resolve 180 ppm, but placement stays within a millisecond.
    x = np.linspace(0.0, 3.0, 50)
    true_host = float(DEVICE.to_host(4.0)) + SENSOR.scale * x
    assert np.abs(s.sensor_clock.to_host(x) - true_host).max() < 0.001


def test_gaps_reduce_coverage_and_keep_average_power_unbiased() -> None:
    # Blocks are 0.1 s; the run spans sensor time ~1.0-1.2 s: drop block 10 (1.0-1.1 s).
    data, edges, levels, _, _, end = powered_run(drop_blocks=(10,))
    s = compute_metrics(data)
    p = s.power
    assert p.coverage is not None and 0.3 < p.coverage < 0.99
    truth = analytic_energy(edges, levels, 5.0, end)
    assert p.energy_j is not None and p.energy_j < truth * 0.99
    assert p.energy_filled_j == pytest.approx(p.avg_w * (end - 5.0))
    full = compute_metrics(powered_run()[0]).power
    assert full.coverage == pytest.approx(1.0, abs=1e-6)


def test_power_without_clock_or_metadata_is_reported_not_guessed() -> None:
    data, *_ = powered_run()
    no_rate = RunData(**{**data.__dict__, "power_rate_hz": math.nan})
    s = compute_metrics(no_rate)
    assert s.power.energy_j is None and any("rate or voltage" in w for w in s.warnings)
    bare = RunData(
        runs=data.runs,
        power_current_a=data.power_current_a,
        power_voltage_v=5.0,
        power_rate_hz=RATE,
        power_blocks=data.power_blocks,
    )
    s2 = compute_metrics(bare)
    assert s2.power.energy_j is None and any("no clock fit" in w for w in s2.warnings)


def test_device_clock_falls_back_to_token_arrivals() -> None:
    data, edges, levels, _, _, end = powered_run()
    no_pings = RunData(**{**data.__dict__, "pings": data.pings[:0]})
    s = compute_metrics(no_pings)
    assert s.device_clock.method == "lower-hull"
    assert any("token arrivals" in w for w in s.warnings)
    truth = analytic_energy(edges, levels, 5.0, end)
    assert s.power.energy_j == pytest.approx(truth, rel=0.02)


def test_tick_hz_recovered_from_tables() -> None:
    data, *_ = powered_run()
    no_attr = RunData(**{**data.__dict__, "attrs": {}})
    assert compute_metrics(no_attr).device_clock.method == "bracket-hull"


# --- never crash --------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    gaps=st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=0, max_size=40),
    n_prefill=st.integers(0, 10),
    begin_offset=st.floats(-1.0, 1.0, allow_nan=False),
    end_offset=st.one_of(st.just(math.nan), st.floats(-1.0, 1.0, allow_nan=False)),
    status=st.sampled_from([-1, 0, 1, 2]),
    with_row=st.booleans(),
)
def test_random_sorted_timings_never_crash(
    gaps: list[float],
    n_prefill: int,
    begin_offset: float,
    end_offset: float,
    status: int,
    with_row: bool,
) -> None:
    times = list(np.cumsum(gaps) + 10.0)
    n_prefill = min(n_prefill, len(times))
    prefill, decode = times[:n_prefill], times[n_prefill:]
    tokens = tokens_for_run(0, 10.0, prefill, decode)
    last = times[-1] if times else 10.0
    runs = (
        run_row(0, 10.0 + begin_offset, last + end_offset, n_prefill, len(decode), status)
        if with_row
        else np.zeros(0, dtype=RUN_DTYPE)
    )
    s = compute_metrics(RunData(attrs={"tick_hz": TICK_HZ}, tokens=tokens, runs=runs))
    for v in (s.ttft_s, s.e2e_s, s.prefill_tok_s, s.decode_tok_s, s.itl.mean, s.itl.max):
        assert v is None or (math.isfinite(v) and v >= 0)
    if len(decode) >= 2 and s.itl.n:
        assert s.itl.max == pytest.approx(max(np.diff(decode)))


def test_unusable_token_indices_fall_back_to_arrival_order() -> None:
    data, _, decode, _ = one_run()
    tokens = data.tokens.copy()
    tokens["index"] = 0  # firmware that does not fill the index
    s = compute_metrics(RunData(attrs=data.attrs, tokens=tokens, runs=data.runs))
    assert s.itl.n == 19
    assert s.decode_tok_s == pytest.approx(19 / (decode[-1] - decode[0]))


def test_truncated_power_table_is_warned_not_fatal() -> None:
    data, *_ = powered_run()
    cut = RunData(**{**data.__dict__, "power_current_a": data.power_current_a[:-500]})
    s = compute_metrics(cut)
    assert any("beyond the" in w for w in s.warnings)
    assert s.power.coverage == pytest.approx(1.0, abs=1e-6)  # the cut is after the run
