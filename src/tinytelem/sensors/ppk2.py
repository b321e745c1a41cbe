"""The PPK2 driver actor: serial port -> :class:`PPK2Decoder` -> PowerBlock / PowerGap records.

Session: open the port (pyserial + FdStream, :func:`tinytelem.transports.serial.open_serial`),
ask for the metadata, choose source- or ampere-meter mode, set the regulator voltage, power the
DUT, start averaging; then decode whatever arrives. Samples leave in blocks of ``block_s``;
counter jumps become :class:`~tinytelem.records.PowerGap` records (exact up to 63 samples).
If the port goes away (unplugged, reset) the samples received so far are flushed, the driver
reopens the same path until it is back, and the outage becomes one gap whose length is
measured on the host clock (the counter cannot see it). Every change of the digital inputs is
kept as a logic edge (sample index, new byte) for marker-based clock alignment.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import trio

from tinytelem.errors import ConfigError, LinkBroken, SensorError
from tinytelem.records import PowerBlock, PowerGap, Record
from tinytelem.sensors.ppk2_decode import (
    PPK2Decoder,
    PPK2Gap,
    PPK2MetadataEvent,
    PPK2Samples,
    SpikeFilterConfig,
)
from tinytelem.sensors.ppk2_protocol import (
    POWER_MODE_AMPERE,
    POWER_MODE_SOURCE,
    SAMPLE_RATE_HZ,
    Cmd,
    PPK2Metadata,
    regulator_command,
)

if TYPE_CHECKING:
    from tinytelem.sensors.calibration import Calibration
    from tinytelem.transports.serial import SerialStream

__all__ = ["PPK2Sensor", "PPK2Statistics"]


@dataclass(frozen=True, slots=True)
class PPK2Statistics:
    """Counters of one driver run. ``samples + missing`` is the sensor time covered."""

    samples: int
    blocks: int
    gaps: int
    missing: int
    """Samples recorded as lost (counter gaps + outages)."""
    counter_gaps: int
    outage_gaps: int
    reconnects: int
    edges: int
    bytes: int


class PPK2Sensor:
    """Actor for a Nordic PPK2 on ``port`` (``run`` / ``statistics`` like the simulated one)."""

    def __init__(
        self,
        port: str,
        *,
        voltage_mv: int = 3300,
        mode: str = "source",
        block_s: float = 0.05,
        reconnect: bool = True,
        reconnect_delay_s: float = 0.2,
        metadata_timeout_s: float = 3.0,
        calibration: Calibration | None = None,
        spike: SpikeFilterConfig | None = None,
        backend: str = "auto",
        max_samples: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode not in ("source", "ampere"):
            raise ConfigError(f"PPK2 mode must be 'source' or 'ampere', got {mode!r}")
        regulator_command(voltage_mv)  # validates the range
        if block_s <= 0:
            raise ConfigError(f"block_s must be positive, got {block_s}")
        self.port = port
        self.voltage_mv = int(voltage_mv)
        self.mode = mode
        self.rate_hz = SAMPLE_RATE_HZ
        self.block_samples = max(1, round(SAMPLE_RATE_HZ * block_s))
        self.reconnect = reconnect
        self.reconnect_delay_s = reconnect_delay_s
        self.metadata_timeout_s = metadata_timeout_s
        self.calibration = calibration
        self.max_samples = max_samples
        self.decoder = PPK2Decoder(vdd_mv=voltage_mv, spike=spike, backend=backend)
        self.metadata: PPK2Metadata | None = None
        self._clock = clock
        self._pending: list[npt.NDArray[np.float32]] = []
        self._pending_first = 0
        self._pending_n = 0
        self._blocks = 0
        self._counter_gaps = 0
        self._outage_gaps = 0
        self._reconnects = 0
        self._bytes = 0
        self._last_logic: int | None = None
        self._edge_idx: list[npt.NDArray[np.int64]] = []
        self._edge_val: list[npt.NDArray[np.uint8]] = []
        self._last_data_s = math.nan

    @property
    def voltage_v(self) -> float:
        return self.voltage_mv / 1000.0

    # --- the actor -------------------------------------------------------------------------

    async def run(
        self,
        send: trio.MemorySendChannel[Record],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Stream until cancelled or ``max_samples``; reconnect when the port goes away."""
        started = False
        await trio.to_thread.run_sync(self.decoder.warm_up)
        async with send:
            try:
                while True:
                    try:
                        stream = await self._open_session()
                    except (LinkBroken, ConfigError, SensorError) as exc:
                        if not started or not self.reconnect:
                            raise SensorError(f"PPK2 on {self.port}: {exc}") from exc
                        await trio.sleep(self.reconnect_delay_s)
                        continue
                    if not started:
                        started = True
                        task_status.started()
                    else:
                        self._reconnects += 1
                        await self._outage_gap(send)
                    try:
                        done = await self._pump(stream, send)
                    except LinkBroken:
                        done = False
                        await self._flush(send)
                    finally:
                        with trio.CancelScope(shield=True):
                            await stream.aclose()
                    if done or not self.reconnect:
                        return
                    await trio.sleep(self.reconnect_delay_s)
            except trio.BrokenResourceError:
                return  # the receiver went away: nothing left to do
            finally:
                self._flush_nowait(send)

    async def _open_session(self) -> SerialStream:
        from tinytelem.transports.serial import open_serial

        stream = await open_serial(self.port, 115200)
        try:
            self.decoder.expect_metadata()
            await stream.send_all(bytes([Cmd.GET_META_DATA]))
            with trio.move_on_after(self.metadata_timeout_s):
                while self.decoder.awaiting_metadata:
                    for ev in self.decoder.receive_data(await stream.receive_some(65536)):
                        if isinstance(ev, PPK2MetadataEvent):
                            self.metadata = ev.metadata
            if self.decoder.awaiting_metadata:
                raise SensorError(
                    f"no metadata from {self.port} within {self.metadata_timeout_s} s; "
                    "is it a PPK2 (nRF Connect closed)? replug it and retry")
            pm = POWER_MODE_SOURCE if self.mode == "source" else POWER_MODE_AMPERE
            await stream.send_all(bytes([Cmd.SET_POWER_MODE, pm]))
            await stream.send_all(regulator_command(self.voltage_mv))
            if self.mode == "source":
                await stream.send_all(bytes([Cmd.DEVICE_RUNNING_SET, 1]))
            self.decoder.start()
            await stream.send_all(bytes([Cmd.AVERAGE_START]))
            return stream
        except BaseException:
            with trio.CancelScope(shield=True):
                await stream.aclose()
            raise

    async def _pump(self, stream: SerialStream, send: trio.MemorySendChannel[Record]) -> bool:
        """Decode until the port breaks (LinkBroken) or ``max_samples``; True when done."""
        limit = self.max_samples
        while True:
            data = await stream.receive_some(65536)
            now = self._clock()
            self._last_data_s = now
            self._bytes += len(data)
            for ev in self.decoder.receive_data(data):
                if isinstance(ev, PPK2Samples):
                    self._take(ev)
                elif isinstance(ev, PPK2Gap):
                    await self._flush(send)
                    self._counter_gaps += 1
                    await send.send(PowerGap(now, ev.first_index, ev.n_missing))
            if limit is not None and self.decoder.samples >= limit:
                await self._flush(send)
                with trio.CancelScope(shield=True):
                    await stream.send_all(bytes([Cmd.AVERAGE_STOP]))
                return True
            if self._pending_n >= self.block_samples:
                await self._flush(send)

    async def _outage_gap(self, send: trio.MemorySendChannel[Record]) -> None:
        """After a reconnect: the samples the sensor took while away, on the host clock."""
        lost = self._clock() - self._last_data_s
        n = max(0, round(lost * self.rate_hz)) if math.isfinite(lost) else 0
        gap = self.decoder.skip(n)
        self._outage_gaps += 1
        self._last_logic = None
        await send.send(PowerGap(self._clock(), gap.first_index, gap.n_missing))

    def _take(self, ev: PPK2Samples) -> None:
        current = ev.current_a
        if self.calibration is not None:
            current = self.calibration.apply_current(current)
        if self._pending_n == 0:
            self._pending_first = ev.first_index
        self._pending.append(current)
        self._pending_n += current.size
        logic = ev.logic
        if logic.size:
            prev = logic[0] if self._last_logic is None else self._last_logic
            changes = np.flatnonzero(np.diff(logic, prepend=np.uint8(prev)))
            if changes.size:
                self._edge_idx.append(ev.first_index + changes.astype(np.int64))
                self._edge_val.append(logic[changes].copy())
            self._last_logic = int(logic[-1])

    def _make_block(self) -> PowerBlock | None:
        if self._pending_n == 0:
            return None
        samples = (self._pending[0] if len(self._pending) == 1
                   else np.concatenate(self._pending))
        block = PowerBlock(self._clock(), self._pending_first, samples.astype(np.float32),
                           self.voltage_v, self.rate_hz)
        self._pending = []
        self._pending_n = 0
        self._blocks += 1
        return block

    async def _flush(self, send: trio.MemorySendChannel[Record]) -> None:
        block = self._make_block()
        if block is not None:
            await send.send(block)

    def _flush_nowait(self, send: trio.MemorySendChannel[Record]) -> None:
        """On the way out (cancelled): hand over what is pending if the channel has room."""
        block = self._make_block()
        if block is not None:
            try:
                send.send_nowait(block)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self._blocks -= 1

    # --- results ---------------------------------------------------------------------------

    def logic_edges(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
        """Sample indices where the digital inputs changed, and the byte from then on."""
        if not self._edge_idx:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint8)
        return np.concatenate(self._edge_idx), np.concatenate(self._edge_val)

    def trace_attrs(self) -> dict[str, object]:
        """What to store in the trace's /power group."""
        meta = self.metadata
        return {
            "sensor": "ppk2", "port": self.port, "mode": self.mode,
            "sample_rate_hz": self.rate_hz, "voltage_v": self.voltage_v,
            "unit_serial": meta.hw if meta else "", "ppk2_calibrated": bool(meta and
                                                                          meta.calibrated),
            "spike_filter": self.decoder.spike.enabled,
        }

    def statistics(self) -> PPK2Statistics:
        d = self.decoder
        edges = sum(a.size for a in self._edge_idx)
        return PPK2Statistics(d.samples, self._blocks, d.gaps, d.missing, self._counter_gaps,
                              self._outage_gaps, self._reconnects, edges, self._bytes)
