"""INA219 / INA226 power bridge: host driver and emulator.

The bridge (firmware/ina_bridge: an STM32 reading the chip over I2C at its fastest conversion
time) streams protocol-v1 frames: HELLO at boot, then POWER_SAMPLES carrying raw register
pairs. The host converts with the datasheet LSBs:

========  ======================  =====================================
chip      shunt-voltage register  bus-voltage register
========  ======================  =====================================
INA219    i16, 10 uV / LSB        bits 15..3, 4 mV / LSB (bits 2..0 flags)
INA226    i16, 2.5 uV / LSB       u16, 1.25 mV / LSB
========  ======================  =====================================

Current is shunt voltage over the shunt resistance (``shunt_ohm``, a property of the board, so
it is the host's to know, and what calibration corrects). A jump in ``first_index`` is a gap
the bridge announced (its transmit buffer overflowed); a lost frame shows the same way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import trio

from tinytelem.errors import ConfigError, LinkBroken, SensorError
from tinytelem.protocol.codec import NEED_DATA, FrameDecoder, encode_frame
from tinytelem.protocol.messages import Hello, PowerChip, PowerSamples
from tinytelem.records import PowerBlock, PowerGap, Record

__all__ = ["InaBridgeEmulator", "InaBridgeSensor", "convert_ina"]

SHUNT_LSB_V = {PowerChip.INA219: 10e-6, PowerChip.INA226: 2.5e-6}


def convert_ina(chip: int, shunt: npt.ArrayLike, bus: npt.ArrayLike, shunt_ohm: float
                ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(current A, bus voltage V) from raw register values."""
    s = np.asarray(shunt, dtype=np.int64).astype(np.float64)
    b = np.asarray(bus, dtype=np.int64)
    if chip == PowerChip.INA219:
        volts = (b >> 3).astype(np.float64) * 4e-3
    elif chip == PowerChip.INA226:
        volts = b.astype(np.float64) * 1.25e-3
    else:
        raise SensorError(f"unknown power chip id {chip} in POWER_SAMPLES (0 INA219, 1 INA226)")
    return s * SHUNT_LSB_V[PowerChip(chip)] / shunt_ohm, volts


def raw_from_physical(chip: int, current_a: npt.NDArray[np.float64], bus_v: float,
                      shunt_ohm: float) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.uint16]]:
    """Register values a chip would read (the emulator's encoder)."""
    lsb = SHUNT_LSB_V[PowerChip(chip)]
    shunt = np.clip(np.rint(current_a * shunt_ohm / lsb), -32768, 32767).astype(np.int16)
    # INA219: value in bits 15..3 with the CNVR flag (bit 1) set, as the chip reads.
    bus = ((round(bus_v / 4e-3) << 3) | 0x2 if chip == PowerChip.INA219
           else round(bus_v / 1.25e-3))
    return shunt, np.full(current_a.shape, bus & 0xFFFF, dtype=np.uint16)


@dataclass(frozen=True, slots=True)
class InaStatistics:
    samples: int
    blocks: int
    gaps: int
    missing: int
    frames: int
    bad_frames: int
    reconnects: int


class InaBridgeSensor:
    """Actor reading an INA bridge at a device URL (``serial:///dev/ttyACM0``, ``tcp://..``)."""

    def __init__(self, url: str, *, shunt_ohm: float = 0.1, block_s: float = 0.05,
                 reconnect: bool = True, reconnect_delay_s: float = 0.2,
                 calibration: object | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not shunt_ohm > 0:
            raise ConfigError(f"shunt resistance must be positive, got {shunt_ohm} ohm")
        self.url = url
        self.shunt_ohm = shunt_ohm
        self.block_s = block_s
        self.reconnect = reconnect
        self.reconnect_delay_s = reconnect_delay_s
        self.calibration = calibration
        self.rate_hz = math.nan
        self.voltage_v = math.nan
        self.chip: int | None = None
        self._clock = clock
        self._next: int | None = None
        self._base = 0  # extends the u32 first_index
        self._pending: list[npt.NDArray[np.float32]] = []
        self._pending_first = 0
        self._pending_n = 0
        self._volts: list[float] = []
        self._samples = 0
        self._blocks = 0
        self._gaps = 0
        self._missing = 0
        self._frames = 0
        self._bad = 0
        self._reconnects = 0

    async def run(self, send: trio.MemorySendChannel[Record],
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        from tinytelem.transports.opener import open_stream

        started = False
        async with send:
            while True:
                try:
                    stream = await open_stream(self.url)
                except (LinkBroken, ConfigError) as exc:
                    if not started or not self.reconnect:
                        raise SensorError(f"INA bridge at {self.url}: {exc}") from exc
                    await trio.sleep(self.reconnect_delay_s)
                    continue
                if started:
                    self._reconnects += 1
                else:
                    started = True
                    task_status.started()
                try:
                    async with stream:
                        await self._pump(stream, send)
                except LinkBroken:
                    await self._flush(send)
                if not self.reconnect:
                    return
                await trio.sleep(self.reconnect_delay_s)

    async def _pump(self, stream: trio.abc.ReceiveStream,
                    send: trio.MemorySendChannel[Record]) -> None:
        dec = FrameDecoder()
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            dec.receive_data(bytes(data))
            while (ev := dec.next_event()) is not NEED_DATA:
                msg = getattr(ev, "message", None)
                if msg is None:
                    self._bad += 1
                    continue
                self._frames += 1
                if isinstance(msg, Hello):
                    self._next = None  # bridge rebooted: its index restarts
                elif isinstance(msg, PowerSamples):
                    await self._samples_frame(msg, send)
            if self._pending_n and self._pending_n >= self.block_s * self.rate_hz:
                await self._flush(send)

    async def _samples_frame(self, msg: PowerSamples, send: trio.MemorySendChannel[Record]
                             ) -> None:
        self.chip = msg.chip
        if msg.period_ns:
            self.rate_hz = 1e9 / msg.period_ns
        first = msg.first_index + self._base
        if self._next is not None:
            if first < self._next - (1 << 31):  # u32 wrap
                self._base += 1 << 32
                first += 1 << 32
            if first > self._next:
                await self._flush(send)
                n = first - self._next
                self._gaps += 1
                self._missing += n
                await send.send(PowerGap(self._clock(), self._next, n))
            elif first < self._next:
                self._bad += 1  # duplicate or out of order
                return
        current, volts = convert_ina(msg.chip, msg.shunt, msg.bus, self.shunt_ohm)
        cur32 = current.astype(np.float32)
        apply = getattr(self.calibration, "apply_current", None)
        if apply is not None:
            cur32 = apply(cur32)
        if self._pending_n == 0:
            self._pending_first = first
        self._pending.append(cur32)
        self._pending_n += cur32.size
        if volts.size:
            self._volts.append(float(volts.mean()))
        self._next = first + cur32.size
        self._samples += cur32.size

    async def _flush(self, send: trio.MemorySendChannel[Record]) -> None:
        if not self._pending_n:
            return
        samples = np.concatenate(self._pending)
        self.voltage_v = float(np.mean(self._volts)) if self._volts else math.nan
        await send.send(PowerBlock(self._clock(), self._pending_first, samples,
                                   self.voltage_v, self.rate_hz))
        self._blocks += 1
        self._pending, self._pending_n, self._volts = [], 0, []

    def statistics(self) -> InaStatistics:
        return InaStatistics(self._samples, self._blocks, self._gaps, self._missing,
                             self._frames, self._bad, self._reconnects)


class InaBridgeEmulator:
    """Speaks what the bridge firmware sends, over a pty: HELLO, then POWER_SAMPLES frames
    at ``rate_hz`` paced in real time; ``drop`` ranges are skipped (announced as a jump in
    ``first_index``, as the firmware does when its buffer overflows)."""

    def __init__(self, current: Callable[[npt.NDArray[np.int64]], npt.NDArray[np.float64]],
                 *, chip: int = PowerChip.INA226, rate_hz: float = 2000.0, bus_v: float = 3.3,
                 shunt_ohm: float = 0.1, per_frame: int = 50,
                 drop: tuple[tuple[int, int], ...] = ()) -> None:
        from tinytelem.sensors.pty import PtyPort

        self.current = current
        self.chip = int(chip)
        self.rate_hz = rate_hz
        self.bus_v = bus_v
        self.shunt_ohm = shunt_ohm
        self.per_frame = per_frame
        self.drop = drop
        self.port = PtyPort()
        self.path = self.port.path
        self.url = f"serial://{self.path}?baud=1000000"
        self.sent = 0

    def raw(self, first: int, stop: int) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.uint16]]:
        idx = np.arange(first, stop, dtype=np.int64)
        return raw_from_physical(self.chip, self.current(idx), self.bus_v, self.shunt_ohm)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        master = self.port.master
        assert master is not None
        seq = 0
        t0 = time.monotonic()
        period_ns = round(1e9 / self.rate_hz)
        hello = Hello(72_000_000, 1_000_000, 131072, 524288, 0, 0, bytes(32), "stm32f4",
                      "ina-bridge-emu", "")
        task_status.started()
        try:
            await master.send_all(b"\x00" + encode_frame(hello, seq, 0))
            seq += 1
            nxt = 0
            while True:
                await trio.sleep(self.per_frame / self.rate_hz)
                target = math.floor((time.monotonic() - t0) * self.rate_hz)
                out = bytearray()
                while nxt + self.per_frame <= target:
                    stop = nxt + self.per_frame
                    skip = next((n for a, n in self.drop if a == nxt), 0)
                    if skip:
                        nxt += skip
                        continue
                    shunt, bus = self.raw(nxt, stop)
                    msg = PowerSamples(nxt & 0xFFFFFFFF, period_ns, self.chip,
                                       tuple(int(v) for v in shunt), tuple(int(v) for v in bus))
                    ticks = round((time.monotonic() - t0) * 1e6) & 0xFFFFFFFF
                    out += encode_frame(msg, seq & 0xFFFF, ticks)
                    seq += 1
                    self.sent += self.per_frame
                    nxt = stop
                if out:
                    await master.send_all(bytes(out))
        finally:
            self.port.close()
