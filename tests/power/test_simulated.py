"""Simulated power sensor: clock truth, pacing, energy, overflow accounting, twin client."""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt
import pytest
import trio
import trio.testing

from tinytelem.errors import ConfigError, SensorError
from tinytelem.power.simulated import SimulatedPowerSensor
from tinytelem.power.twin import twin_power_client
from tinytelem.power.waveform import ConstantWaveform, SegmentWaveform
from tinytelem.records import PowerBlock, PowerGap, Record


class FakeClock:
    """A truth clock that jumps straight to every deadline (plus an optional one-off stall)."""

    def __init__(self, start: float = 987_654.321) -> None:  # a long-uptime monotonic clock
        self.now = start
        self.stall_s = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep_until(self, deadline: float) -> None:
        self.now = max(self.now, deadline) + self.stall_s
        self.stall_s = 0.0
        await trio.lowlevel.checkpoint()


class RampWaveform:
    """Current equal to milliseconds since ``t0``: reveals the exact time each sample used."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0

    def current_at(self, true_times: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        result: npt.NDArray[np.float64] = (true_times - self.t0) * 1e3
        return result


async def collect(sensor: SimulatedPowerSensor, buffer: int = 1_000_000) -> list[Record]:
    """Run ``sensor`` (which must have max_samples) to the end and return what it sent."""
    send, receive = trio.open_memory_channel[Record](buffer)
    async with trio.open_nursery() as nursery:
        await nursery.start(sensor.run, send)
        async with receive:
            return [r async for r in receive]


def check_contiguous(records: Sequence[Record], total: int) -> tuple[int, int]:
    """Assert blocks and gaps tile [0, total) exactly; return (samples delivered, missing)."""
    nxt = delivered = missing = 0
    for r in records:
        assert isinstance(r, PowerBlock | PowerGap)
        assert r.first_index == nxt
        if isinstance(r, PowerBlock):
            assert r.current_a.dtype == np.float32
            nxt += r.current_a.size
            delivered += r.current_a.size
        else:
            assert r.n_missing > 0
            nxt += r.n_missing
            missing += r.n_missing
    assert nxt == total
    return delivered, missing


def test_index_to_true_time_follows_configured_drift_exactly() -> None:
    sensor = SimulatedPowerSensor(
        ConstantWaveform(1.0, 3.3), rate_hz=1000.0, drift_ppm=-250.0, t0=10.0
    )
    idx = np.array([0, 1, 1000, 3_600_000])
    expected = 10.0 + idx / (1000.0 * (1 - 250e-6))
    np.testing.assert_array_equal(sensor.sample_times(idx), expected)
    # After an hour the drifting sensor is 0.9 s behind the nominal one.
    assert sensor.sample_times(3_600_000) - (10.0 + 3600.0) == pytest.approx(0.9, rel=1e-3)
    assert sensor.index_at(float(sensor.sample_times(12345))) == 12345
    assert sensor.index_at(0.0) == 0


async def test_samples_are_taken_at_the_drifting_true_times() -> None:
    clock = FakeClock()
    t0 = clock.now
    sensor = SimulatedPowerSensor(
        RampWaveform(t0),
        rate_hz=10_000.0,
        drift_ppm=80.0,
        block_s=0.01,
        latency_s=0.003,
        max_samples=25_050,
        clock=clock,
        sleep_until=clock.sleep_until,
    )
    with trio.fail_after(5):
        records = await collect(sensor)
    assert sensor.t0 == t0
    assert check_contiguous(records, 25_050) == (25_050, 0)
    blocks = [r for r in records if isinstance(r, PowerBlock)]
    assert [b.current_a.size for b in blocks] == [100] * 250 + [50]
    for b in blocks[::37]:
        idx = np.arange(b.first_index, b.first_index + b.current_a.size)
        want = (sensor.sample_times(idx) - t0) * 1e3
        np.testing.assert_allclose(b.current_a, want, rtol=1e-6, atol=1e-4)
        # Delivered once the block's interval is over, plus the latency.
        end = b.first_index + b.current_a.size
        assert b.host_s == pytest.approx(float(sensor.sample_times(end)) + 0.003, abs=1e-9)
        assert b.voltage_v == 3.3 and b.sample_rate_hz == 10_000.0
    stats = sensor.statistics()
    assert (stats.samples, stats.blocks, stats.dropped_samples, stats.gaps) == (25_050, 251, 0, 0)
    assert stats.delivered_samples == 25_050 and stats.backlog_samples == 0


async def test_catches_up_after_a_stall_with_whole_blocks() -> None:
    clock = FakeClock()
    sensor = SimulatedPowerSensor(
        ConstantWaveform(0.5, 5.0),
        rate_hz=1000.0,
        block_s=0.1,
        max_samples=2000,
        clock=clock,
        sleep_until=clock.sleep_until,
        voltage_v=5.0,
    )
    clock.stall_s = 0.75  # the first wake-up comes 0.75 s late: 7 blocks are due at once
    with trio.fail_after(5):
        records = await collect(sensor)
    check_contiguous(records, 2000)
    blocks = [r for r in records if isinstance(r, PowerBlock)]
    assert all(b.current_a.size == 100 for b in blocks)
    assert len({b.host_s for b in blocks[:8]}) == 1  # delivered together
    np.testing.assert_allclose(blocks[0].current_a, 0.1)


async def test_real_time_pacing_at_100ks() -> None:
    rate, n = 100_000.0, 50_000
    sensor = SimulatedPowerSensor(
        ConstantWaveform(0.33, 3.3), rate_hz=rate, block_s=0.01, latency_s=0.005, max_samples=n
    )
    start = time.monotonic()
    with trio.fail_after(5):
        records = await collect(sensor)
    elapsed = time.monotonic() - start
    assert check_contiguous(records, n) == (n, 0)
    last = records[-1]
    assert isinstance(last, PowerBlock)
    # Samples per second of true time, as seen by the consumer, within 2% of the rate.
    assert n / (last.host_s - sensor.t0 - 0.005) == pytest.approx(rate, rel=0.02)
    assert 0.5 <= elapsed < 1.0  # never faster than real time


async def test_energy_of_segment_waveform_matches_analytic() -> None:
    clock = FakeClock()
    t0 = clock.now
    wave = SegmentWaveform(voltage_v=3.3, idle_w=0.05)
    # Added out of order, as a twin with reordered packets might.
    wave.add_segment(t0 + 0.35, t0 + 0.37, 2.5)
    wave.add_segment(t0 + 0.10, t0 + 0.30, 1.0)
    wave.add_segment(t0 + 0.40, t0 + 0.4015, 0.8)
    sensor = SimulatedPowerSensor(
        wave,
        rate_hz=100_000.0,
        voltage_v=3.3,
        noise_a=0.002,
        seed=42,
        max_samples=50_000,
        clock=clock,
        sleep_until=clock.sleep_until,
    )
    with trio.fail_after(5):
        records = await collect(sensor)
    current = np.concatenate([r.current_a for r in records if isinstance(r, PowerBlock)])
    energy = float(current.astype(np.float64).sum()) * 3.3 / 100_000.0
    analytic = 0.05 * 0.5 + (1.0 - 0.05) * 0.2 + (2.5 - 0.05) * 0.02 + (0.8 - 0.05) * 0.0015
    assert energy == pytest.approx(analytic, rel=0.01)
    assert current.std() > 0.001  # noise really is there
    # Same seed, same samples.
    clock2 = FakeClock()
    again = SimulatedPowerSensor(
        ConstantWaveform(0.0, 3.3),
        noise_a=0.002,
        seed=42,
        max_samples=10,
        clock=clock2,
        sleep_until=clock2.sleep_until,
    )
    first = await collect(again)
    assert isinstance(first[0], PowerBlock)
    np.testing.assert_allclose(first[0].current_a, current[:10] - 0.05 / 3.3, atol=1e-6)


class LateWaveform(SegmentWaveform):
    """Segments known in advance but "arriving" ``delay_s`` after they end (long segments)."""

    def __init__(self, clock: FakeClock, delay_s: float) -> None:
        super().__init__(voltage_v=2.0, idle_w=0.0)
        self.clock = clock
        self.delay_s = delay_s
        self.streamed = True

    def covered_until(self) -> float:
        return min(super().covered_until(), self.clock.now - self.delay_s)


async def test_sensor_waits_for_late_segments_of_a_streamed_waveform() -> None:
    clock = FakeClock()
    wave = LateWaveform(clock, delay_s=0.15)
    wave.add_segment(clock.now, clock.now + 0.3, 1.0)
    wave.add_segment(clock.now + 0.3, clock.now + 1.0, 0.2)
    sensor = SimulatedPowerSensor(
        wave,
        rate_hz=10_000.0,
        voltage_v=2.0,
        max_samples=5000,
        clock=clock,
        sleep_until=clock.sleep_until,
    )
    with trio.fail_after(5):
        records = await collect(sensor)
    blocks = [r for r in records if isinstance(r, PowerBlock)]
    current = np.concatenate([b.current_a for b in blocks])
    assert float(current.sum()) * 2.0 / 10_000 == pytest.approx(0.3 + 0.2 * 0.2, rel=1e-4)
    for b in blocks:  # each block waited for its segments, not just the 20 ms latency
        end_s = float(sensor.sample_times(b.first_index + b.current_a.size))
        assert b.host_s >= end_s + 0.15 - 1e-9
        assert b.host_s <= end_s + 0.15 + 0.006  # polled every 5 ms
    assert sensor.statistics().uncovered_blocks == 0


async def test_sensor_gives_up_waiting_after_max_wait() -> None:
    clock = FakeClock()
    wave = SegmentWaveform()
    wave.configure(2.0, 0.4)  # streamed, but no segment ever arrives
    sensor = SimulatedPowerSensor(
        wave,
        rate_hz=1000.0,
        voltage_v=2.0,
        max_wait_s=0.5,
        max_samples=300,
        clock=clock,
        sleep_until=clock.sleep_until,
    )
    with trio.fail_after(5):
        records = await collect(sensor)
    blocks = [r for r in records if isinstance(r, PowerBlock)]
    np.testing.assert_allclose(np.concatenate([b.current_a for b in blocks]), 0.2)
    end_s = float(sensor.sample_times(50))
    assert blocks[0].host_s == pytest.approx(end_s + 0.02 + 0.5)
    assert sensor.statistics().uncovered_blocks == len(blocks) == 6


async def test_overflow_becomes_one_gap_with_exact_count() -> None:
    clock = FakeClock()
    # 10-sample blocks, 45-sample backlog, a channel of one record nobody reads until the end.
    sensor = SimulatedPowerSensor(
        ConstantWaveform(1.0, 3.3),
        rate_hz=1000.0,
        block_s=0.01,
        backlog_s=0.045,
        max_samples=200,
        clock=clock,
        sleep_until=clock.sleep_until,
    )
    send, receive = trio.open_memory_channel[Record](1)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(sensor.run, send)
            await trio.testing.wait_all_tasks_blocked()
            mid = sensor.statistics()
            async with receive:
                records = [r async for r in receive]
    # Block 0..10 went out; 150+5..200 stayed in the backlog; everything between was dropped.
    assert mid.samples == 200 and mid.dropped_samples == 145 and mid.gaps == 1
    assert mid.backlog_high_water == 45
    assert mid.samples == mid.delivered_samples + mid.dropped_samples + mid.backlog_samples
    assert check_contiguous(records, 200) == (55, 145)
    gaps = [r for r in records if isinstance(r, PowerGap)]
    assert [(g.first_index, g.n_missing) for g in gaps] == [(10, 145)]
    assert isinstance(records[2], PowerBlock) and records[2].current_a.size == 5  # trimmed
    end = sensor.statistics()
    assert (end.delivered_samples, end.dropped_samples, end.backlog_samples) == (55, 145, 0)
    assert end.blocks == 6  # 0..10, 155..160 (trimmed), then four whole blocks


async def test_intermittent_reader_sees_separate_gaps_and_no_backlog_drops_all() -> None:
    clock = FakeClock()
    sensor = SimulatedPowerSensor(
        ConstantWaveform(1.0, 3.3),
        rate_hz=1000.0,
        block_s=0.01,
        backlog_s=0.0,
        max_samples=1000,
        clock=clock,
        sleep_until=clock.sleep_until,
    )
    send, receive = trio.open_memory_channel[Record](2)
    got: list[Record] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(sensor.run, send)
            async with receive:
                i = 0
                async for r in receive:
                    got.append(r)
                    i += 1
                    if i % 5 == 0:  # a slow reader: let the sensor overrun now and then
                        for _ in range(30):
                            await trio.lowlevel.checkpoint()
    delivered, missing = check_contiguous(got, 1000)
    stats = sensor.statistics()
    assert missing == stats.dropped_samples > 0
    assert delivered == stats.delivered_samples
    assert stats.gaps == len([r for r in got if isinstance(r, PowerGap)]) > 1
    assert stats.backlog_high_water == 0


async def test_sensor_stops_quietly_when_receiver_closes() -> None:
    clock = FakeClock()
    sensor = SimulatedPowerSensor(
        ConstantWaveform(1.0, 3.3), rate_hz=1000.0, clock=clock, sleep_until=clock.sleep_until
    )
    send, receive = trio.open_memory_channel[Record](4)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(sensor.run, send)
            await receive.receive()
            await receive.aclose()
    assert sensor.statistics().blocks >= 1


async def test_default_clock_cancellation() -> None:
    sensor = SimulatedPowerSensor(ConstantWaveform(1.0, 3.3), rate_hz=1000.0, block_s=0.01)
    send, receive = trio.open_memory_channel[Record](100)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(sensor.run, send)
            first = await receive.receive()
            nursery.cancel_scope.cancel()
    assert isinstance(first, PowerBlock) and first.first_index == 0
    assert first.host_s >= sensor.t0 + 0.01


def test_bad_configuration_is_rejected() -> None:
    wave = ConstantWaveform(1.0, 3.3)
    SimulatedPowerSensor(wave, rate_hz=2e6)  # Joulescope JS220 class: measured to keep up
    with pytest.raises(ConfigError, match="2 MS/s"):
        SimulatedPowerSensor(wave, rate_hz=2e6 + 1)
    with pytest.raises(ConfigError, match="drift"):
        SimulatedPowerSensor(wave, drift_ppm=1e6)
    with pytest.raises(ConfigError, match="block_s"):
        SimulatedPowerSensor(wave, block_s=0)
    with pytest.raises(SensorError, match="t0"):
        SimulatedPowerSensor(wave).sample_times(0)
    with pytest.raises(ConfigError, match="voltage"):
        ConstantWaveform(1.0, 0.0)
    with pytest.raises(ConfigError, match="voltage"):
        SegmentWaveform(voltage_v=-1.0)
    with pytest.raises(ConfigError, match="horizon"):
        SegmentWaveform(horizon_s=0.0)


def test_segment_waveform_edges_and_pruning() -> None:
    wave = SegmentWaveform(voltage_v=2.0, idle_w=0.2, horizon_s=5.0)
    t = np.array([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0])
    np.testing.assert_allclose(wave.current_at(t), 0.1)  # no segments: idle
    wave.add_segment(3.0, 3.5, 4.0)
    wave.add_segment(1.0, 2.0, 1.0)
    np.testing.assert_allclose(wave.current_at(t), [0.1, 0.5, 0.5, 0.1, 0.1, 2.0, 0.1])
    assert wave.current_at(np.array([])).shape == (0,)
    with pytest.raises(SensorError, match="ends before"):
        wave.add_segment(2.0, 1.0, 1.0)
    with pytest.raises(SensorError, match="ends before"):
        wave.add_segment(float("nan"), 1.0, 1.0)
    assert len(wave) == 2
    wave.current_at(np.array([7.5]))  # 2.0 < 7.5 - 5: the first segment is forgotten
    assert len(wave) == 1
    wave.add_segment(20.0, 21.0, 1.0)  # news from the future prunes too
    assert len(wave) == 1
    np.testing.assert_allclose(wave.current_at(np.array([20.5, 21.0])), [0.5, 0.1])
    wave.configure(4.0, 0.4)
    np.testing.assert_allclose(wave.current_at(np.array([0.0, 20.5])), [0.1, 0.25])


# --- twin power channel -------------------------------------------------------------------


async def serve_once(
    nursery: trio.Nursery, payload: bytes, *, chunk: int = 7, hold_open: bool = False
) -> str:
    """Serve ``payload`` to the first client in small chunks, then close (or hang)."""

    async def handler(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                for i in range(0, len(payload), chunk):
                    await stream.send_all(payload[i : i + chunk])
            except trio.BrokenResourceError:
                return  # the client gave up on a bad stream: that is what it should do
            if hold_open:
                await trio.sleep_forever()

    listeners: list[Any] = await nursery.start(
        functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


def pack(*objs: object) -> bytes:
    return b"".join(msgpack.packb(o) for o in objs)


async def test_twin_client_feeds_segment_waveform() -> None:
    wave = SegmentWaveform()
    payload = pack(
        {"voltage_v": 5.0, "idle_w": 0.5},
        [100.0, 101.0, 2.0],
        [101.0, 101.5, 3],
        [99.0, 99.5, 1.5],
    )
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            url = await serve_once(nursery, payload)
            await twin_power_client(url, wave)
            nursery.cancel_scope.cancel()
    assert (wave.voltage_v, wave.idle_w, len(wave)) == (5.0, 0.5, 3)
    t = np.array([99.2, 99.7, 100.5, 101.2, 102.0])
    np.testing.assert_allclose(wave.current_at(t), [0.3, 0.1, 0.4, 0.6, 0.1])


async def test_twin_client_started_after_header_then_drives_sensor() -> None:
    wave = SegmentWaveform()
    clock = FakeClock(100.0)
    payload = pack({"voltage_v": 2.0, "idle_w": 0.0}, [100.0, 100.1, 1.0])
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            url = await serve_once(nursery, payload, chunk=1, hold_open=True)
            await nursery.start(twin_power_client, url.removeprefix("tcp://"), wave)
            assert wave.voltage_v == 2.0
            await trio.testing.wait_all_tasks_blocked()
            sensor = SimulatedPowerSensor(
                wave,
                rate_hz=1000.0,
                voltage_v=2.0,
                max_samples=200,
                clock=clock,
                sleep_until=clock.sleep_until,
            )
            records = await collect(sensor)
            nursery.cancel_scope.cancel()
    current = np.concatenate([r.current_a for r in records if isinstance(r, PowerBlock)])
    assert float(current.sum()) * 2.0 / 1000.0 == pytest.approx(0.1, rel=0.01)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"", "closed before"),
        (pack({"voltage": 1.0}), "expected a map"),
        (pack([1, 2, 3]), "expected a map"),
        (pack({"voltage_v": 0.0, "idle_w": 0.0}), "bad header"),
        (pack({"voltage_v": 3.3, "idle_w": 0.0}, [1.0, 2.0]), r"\[t_start_s"),
        (pack({"voltage_v": 3.3, "idle_w": 0.0}, [1.0, 2.0, "x"]), r"\[t_start_s"),
        (pack({"voltage_v": 3.3, "idle_w": 0.0}) + b"\xc1", "not msgpack"),
        (pack({"voltage_v": 3.3, "idle_w": 0.0}, [2.0, 1.0, 1.0]), "ends before"),
        (pack({"voltage_v": 3.3, "idle_w": 0.0}, b"x" * (2 << 20)), "oversized"),
    ],
    ids=[
        "empty",
        "no-keys",
        "not-map",
        "zero-volt",
        "short",
        "text",
        "garbage",
        "reversed",
        "huge",
    ],
)
async def test_twin_client_rejects_bad_streams(payload: bytes, match: str) -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            url = await serve_once(nursery, payload, chunk=65536)
            with pytest.raises(SensorError, match=match):
                await twin_power_client(url, SegmentWaveform())
            nursery.cancel_scope.cancel()


async def test_twin_client_header_timeout_and_connection_errors() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            url = await serve_once(nursery, b"", hold_open=True)
            with pytest.raises(SensorError, match="no header"):
                await twin_power_client(url, SegmentWaveform(), header_timeout_s=0.05)
            nursery.cancel_scope.cancel()
        # A port nobody listens on: bind one, remember it, close it.
        sock = trio.socket.socket()
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        with pytest.raises(SensorError, match="cannot connect") as info:
            await twin_power_client(f"tcp://127.0.0.1:{port}", SegmentWaveform())
        assert isinstance(info.value.__cause__, OSError)
    for bad in ("udp://127.0.0.1:1", "tcp://127.0.0.1", "tcp://127.0.0.1:notaport"):
        with pytest.raises(ConfigError, match="tcp://"):
            await twin_power_client(bad, SegmentWaveform())


async def test_modelled_arrival_is_after_the_block_and_free_of_simulation_lag() -> None:
    sensor = SimulatedPowerSensor(
        ConstantWaveform(0.5, 3.3), rate_hz=10_000, latency_s=0.05, transport_s=0.001,
        max_samples=5000,
    )
    send, recv = trio.open_memory_channel[object](100)
    blocks: list[PowerBlock] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            await n.start(sensor.run, send)
            async for b in recv:
                assert isinstance(b, PowerBlock)
                blocks.append(b)
    for b in blocks:
        last = float(sensor.sample_times(b.first_index + len(b.current_a)))
        # Stamped 1 ms (+ small one-sided jitter) after its last sample, not 50 ms later.
        assert last + 0.001 <= b.host_s < last + 0.02
