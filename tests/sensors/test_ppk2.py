"""PPK2 driver through the emulator and a real pty."""

from __future__ import annotations

import numpy as np
import pytest
import trio

from tinytelem.errors import SensorError
from tinytelem.records import PowerBlock, PowerGap, Record
from tinytelem.sensors.ppk2 import PPK2Sensor
from tinytelem.sensors.ppk2_decode import (
    SpikeFilterConfig,
)
from tinytelem.sensors.ppk2_emulator import PPK2Emulator, marker_logic
from tinytelem.sensors.ppk2_protocol import (
    convert_reference,
)


async def _drive(emu: PPK2Emulator, seconds: float, **kw: object) -> tuple[
        PPK2Sensor, list[Record]]:
    records: list[Record] = []
    sensor = PPK2Sensor(emu.path, max_samples=int(seconds * 100_000), **kw)  # type: ignore[arg-type]
    send, recv = trio.open_memory_channel[Record](1000)

    async def collect() -> None:
        async with recv:
            async for r in recv:
                records.append(r)

    with trio.fail_after(seconds * 3 + 10):
        async with trio.open_nursery() as nursery:
            await nursery.start(emu.run)
            nursery.start_soon(collect)
            await sensor.run(send)
            nursery.cancel_scope.cancel()
    return sensor, records


@pytest.mark.parametrize("seconds", [3.0, pytest.param(60.0, marks=pytest.mark.slow)])
async def test_sensors_ppk2_driver_through_emulator(seconds: float) -> None:
    n = int(seconds * 100_000)
    drops = [(n // 3, 17), (n // 2, 1), (2 * n // 3, 63)]
    edges = list(range(5000, n, 7919))
    emu = PPK2Emulator(drop=drops, logic=marker_logic(edges, bit=2))
    sensor, records = await _drive(emu, seconds, spike=SpikeFilterConfig(enabled=False))
    start = emu._stream_start
    # the emulator drops by absolute index; shift the expectation to the driver's indices
    expected = [(a - start, k) for a, k in drops if a >= start]
    blocks = [r for r in records if isinstance(r, PowerBlock)]
    gaps = [(g.first_index, g.n_missing) for g in records if isinstance(g, PowerGap)]
    assert gaps == expected
    idx = np.concatenate([np.arange(b.first_index, b.first_index + b.current_a.size)
                          for b in blocks])
    assert idx[0] == 0 and np.all(np.diff(idx) >= 1)
    assert idx.size == sensor.statistics().samples
    cur = np.concatenate([b.current_a for b in blocks])
    words = emu.words(start, start + int(idx[-1]) + 1)
    ref = convert_reference(words, emu.metadata, emu.vdd_mv).astype(np.float32)
    np.testing.assert_array_equal(cur, ref[idx])
    st = sensor.statistics()
    assert st.samples + st.missing == int(idx[-1]) + 1  # no unexplained loss
    assert st.missing == sum(k for a, k in expected)
    assert emu.vdd_mv == 3300 and emu.dut_on and emu.source_mode
    e_idx, e_val = sensor.logic_edges()
    truth = [e - start for e in edges if start < e <= start + idx[-1]]
    lost = np.zeros(int(idx[-1]) + 1, dtype=bool)
    for a, k in expected:
        lost[a:a + k] = True
    assert list(e_idx) == [e for e in truth if not lost[e]]
    assert set(np.unique(e_val)) <= {0, 4}
    assert len(records) < seconds * 30  # blocks of ~50 ms, not one record per read


async def test_sensors_ppk2_unplug_reconnect() -> None:
    emu = PPK2Emulator()
    records: list[Record] = []
    sensor = PPK2Sensor(emu.path, reconnect_delay_s=0.05,
                        spike=SpikeFilterConfig(enabled=False))
    send, recv = trio.open_memory_channel[Record](10000)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(emu.run)
            await nursery.start(sensor.run, send)
            while sensor.statistics().samples < 20_000:  # streaming, and the host keeps up
                await trio.sleep(0.01)
            first_start = emu._stream_start
            emu.unplug()
            sent_before = emu.statistics().sent
            await trio.sleep(0.4)  # the outage itself: its length is what the gap must measure
            emu.replug()
            while sensor.statistics().reconnects < 1 or sensor.statistics().samples < (
                    sent_before + 20000):
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    while True:
        try:
            records.append(recv.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    gaps = [r for r in records if isinstance(r, PowerGap)]
    assert len(gaps) == 1
    gap = gaps[0]
    blocks = [r for r in records if isinstance(r, PowerBlock)]
    before = [b for b in blocks if b.first_index < gap.first_index]
    after = [b for b in blocks if b.first_index > gap.first_index]
    # Nothing lost before the outage: the samples before it are contiguous from 0 to the gap,
    # and they are everything the emulator wrote except what was in flight in the pty when
    # it was closed (a real unplug loses that too; it is inside the gap).
    n_before = sum(b.current_a.size for b in before)
    assert n_before == gap.first_index
    assert sent_before - 5000 <= n_before <= sent_before
    cur = np.concatenate([b.current_a for b in before])
    ref = convert_reference(emu.words(first_start, first_start + n_before), emu.metadata,
                            emu.vdd_mv).astype(np.float32)
    np.testing.assert_array_equal(cur, ref)
    # The outage is measured on the host clock: close to the emulator's truth.
    truth_missing = emu._stream_start - (first_start + n_before)
    assert abs(gap.n_missing - truth_missing) < 0.05 * 100_000
    assert after and after[0].first_index == gap.first_index + gap.n_missing
    st = sensor.statistics()
    assert st.reconnects == 1 and st.outage_gaps == 1
    assert emu.statistics().metadata_requests == 2


async def test_sensors_ppk2_missing_port_is_a_sensor_error(tmp_path: object) -> None:
    sensor = PPK2Sensor("/nonexistent/ttyACM9")
    send, _recv = trio.open_memory_channel[Record](1)
    with trio.fail_after(5), pytest.raises(SensorError, match="no such serial port"):
        await sensor.run(send)


async def test_sensors_ppk2_session_recorded_in_trace(tmp_path: object) -> None:
    from pathlib import Path

    import h5py

    from tinytelem.analysis.alignment import align_markers
    from tinytelem.sensors.calibration import Calibration, fit_linear
    from tinytelem.sensors.open import record_sensor
    from tinytelem.trace.writer import TraceWriter

    # GPIO toggles every 20 ms; the device saw them at sample_time * (1 + 50 ppm) + 7 s.
    edges = list(range(2000, 200_000, 2000))
    cal = Calibration("ppk2", "13371337", "2025-01-31",
                      fit_linear([0.0, 0.1, 0.2], [1e-6, 0.1002, 0.2004]))
    emu = PPK2Emulator(logic=marker_logic(edges))
    records: list[Record] = []
    sensor = PPK2Sensor(emu.path, max_samples=150_000, calibration=cal,
                        spike=SpikeFilterConfig(enabled=False))
    send, recv = trio.open_memory_channel[Record](1000)

    async def collect() -> None:
        async with recv:
            async for r in recv:
                records.append(r)

    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            await nursery.start(emu.run)
            nursery.start_soon(collect)
            await sensor.run(send)
            nursery.cancel_scope.cancel()
    blocks = [r for r in records if isinstance(r, PowerBlock)]
    cur = np.concatenate([b.current_a for b in blocks])
    words = emu.words(emu._stream_start, emu._stream_start + cur.size)
    raw = convert_reference(words, emu.metadata, emu.vdd_mv)
    np.testing.assert_allclose(cur, cal.current.gain * raw + cal.current.offset, rtol=1e-5,
                               atol=1e-9)  # calibration applied in the sensor path
    e_idx, _ = sensor.logic_edges()
    start = emu._stream_start
    truth_edges = np.array([e - start for e in edges if start < e < start + cur.size])
    device_s = (truth_edges - 0.5) / 100_000 * (1 + 50e-6) + 7.0
    al = align_markers(device_s, e_idx, 100_000.0)
    assert list(e_idx) == list(truth_edges)
    assert al.method == "gpio-markers" and al.n_points == truth_edges.size
    path = Path(str(tmp_path)) / "t.h5"
    writer = TraceWriter.create(path, attrs={"sensor": "ppk2"})
    try:
        record_sensor(writer, sensor, cal, al)
    finally:
        writer.close()
    with h5py.File(path, "r") as f:
        assert f.attrs["calibration_id"] == "ppk2-13371337-2025-01-31"
        assert f["calibration"].attrs["current_gain"] == pytest.approx(cal.current.gain)
        assert f["clock"].attrs["alignment_method"] == "gpio-markers"
        assert f["power"].attrs["unit_serial"] == "13371337"
        assert f["power"].attrs["stat_samples"] == cur.size
        assert list(f["power"].attrs["logic_edge_index"]) == list(e_idx)
