"""A PPK2 emulator speaking the PPK2's USB-serial protocol over a pseudo-terminal.

It answers GET_META_DATA with a metadata text block, obeys the mode / regulator / DUT power
commands, and after AVERAGE_START streams 4-byte sample words at 100 kS/s paced in real time
(in chunks of ``chunk_s``). Every word is a pure function of its sample index -- the current
waveform picks the range and ADC value (the published conversion, inverted and quantised),
the counter is ``index mod 64``, the logic byte comes from a marker schedule -- so a test can
rebuild exactly what was sent. ``drop`` ranges are left out of the stream (the counter still
advances, as when USB loses a packet); :meth:`PPK2Emulator.unplug` closes the pty mid-run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import trio

from tinytelem.sensors.ppk2_protocol import (
    ADC_MULT,
    COMMAND_LENGTHS,
    N_RANGES,
    POWER_MODE_SOURCE,
    SAMPLE_RATE_HZ,
    Cmd,
    PPK2Metadata,
    format_metadata,
    pack_words,
    regulator_mv,
)
from tinytelem.sensors.pty import PtyPort

__all__ = ["EmulatorStatistics", "PPK2Emulator", "default_waveform", "marker_logic"]

IntArray = npt.NDArray[np.int64]
CurrentFn = Callable[[IntArray], npt.NDArray[np.float64]]
LogicFn = Callable[[IntArray], npt.NDArray[np.uint8]]

EXAMPLE_METADATA = PPK2Metadata(
    r=(1030.2, 101.3, 10.18, 0.938, 0.0431), gs=(0.001, 0.0, 0.02, 0.0, 0.0),
    gi=(1.002, 0.998, 1.001, 1.0, 0.997), o=(52.0, 61.5, 70.1, 83.0, 99.4),
    s=(1e-8, 2e-8, 0.0, 0.0, 0.0), i=(2e-8, -1e-8, 0.0, 1e-6, 0.0), ug=(1.0,) * 5,
    calibrated=True, values={"hw": "13371337", "ia": "56", "mode": "2"},
)
"""A plausible calibrated unit (non-trivial modifiers so tests exercise every term)."""


def default_waveform(indices: IntArray) -> npt.NDArray[np.float64]:
    """200 uA idle with 5 ms bursts of 12 mA every 20 ms and a 300 mA spike each 100 ms."""
    phase = indices % 2000
    out = np.where(phase < 500, 12e-3, 200e-6)
    out = np.where(indices % 10000 < 20, 0.3, out)
    return np.asarray(out, dtype=np.float64)


def marker_logic(edges: Sequence[int], bit: int = 0) -> LogicFn:
    """Logic inputs driven by a GPIO that toggles at each of ``edges`` (sample indices)."""
    e = np.asarray(sorted(edges), dtype=np.int64)

    def logic(indices: IntArray) -> npt.NDArray[np.uint8]:
        toggles = np.searchsorted(e, indices, side="right")
        return np.asarray((toggles & 1) << bit, dtype=np.uint8)

    return logic


def _range_for(current: npt.NDArray[np.float64], meta: PPK2Metadata) -> IntArray:
    """The lowest range whose shunt keeps the ADC under 90% of full scale."""
    full_v = 16383 * 4 * ADC_MULT * 0.9
    limits = np.array([full_v / r for r in meta.r])
    rng = np.searchsorted(limits, np.abs(current), side="left")
    return np.minimum(rng, N_RANGES - 1).astype(np.int64)


def current_to_words(current: npt.NDArray[np.float64], indices: IntArray, logic: npt.NDArray[
        np.uint8], meta: PPK2Metadata, vdd_mv: float) -> npt.NDArray[np.uint32]:
    """Invert the published conversion: the words a PPK2 would send for ``current``."""
    rng = _range_for(current, meta)
    m = meta.arrays()
    r, gs, gi, o, s, i_off, ug = (m[k][rng] for k in range(7))
    c = current / ug - (s * (vdd_mv / 1000.0) + i_off)
    safe_gs = np.where(gs == 0.0, 1.0, gs)
    quad = (-gi + np.sqrt(np.maximum(gi * gi + 4.0 * gs * c, 0.0))) / (2.0 * safe_gs)
    x = np.where(gs == 0.0, c / gi, quad)
    adc = np.clip(np.rint((x * r / ADC_MULT + o) / 4.0), 0, 16383)
    return pack_words(adc.astype(np.uint32), rng, indices & 0x3F, logic)


@dataclass(frozen=True)
class EmulatorStatistics:
    """What the emulator did (the truth a test compares the driver with)."""

    produced: int
    """Samples that happened while streaming (sent + dropped)."""
    sent: int
    dropped: int
    commands: int
    metadata_requests: int
    starts: int
    plugs: int


@dataclass
class PPK2Emulator:
    """The emulated unit; run :meth:`run` in a nursery, open :attr:`path` with the driver."""

    waveform: CurrentFn = default_waveform
    logic: LogicFn | None = None
    metadata: PPK2Metadata = EXAMPLE_METADATA
    rate_hz: float = SAMPLE_RATE_HZ
    chunk_s: float = 0.01
    drop: Sequence[tuple[int, int]] = ()
    """(first_index, n) ranges left out of the stream."""
    clock: Callable[[], float] = time.monotonic
    port: PtyPort = field(default_factory=PtyPort)
    vdd_mv: int = 3300
    power_mode: int = 0
    dut_on: bool = False
    streaming: bool = False
    log: list[bytes] = field(default_factory=list)
    """Every command received."""

    def __post_init__(self) -> None:
        self.path = self.port.path
        self._t_origin = math.nan
        self._next_index = 0
        self._stream_start = 0
        self._sent = 0
        self._dropped = 0
        self._meta_requests = 0
        self._starts = 0
        self._plugged = trio.Event()
        self._plugged.set()
        self._scope: trio.CancelScope | None = None

    # --- truth -----------------------------------------------------------------------------

    def words(self, first: int, stop: int) -> npt.NDArray[np.uint32]:
        """The words for sample indices ``[first, stop)`` (whether sent or dropped)."""
        idx = np.arange(first, stop, dtype=np.int64)
        logic = (self.logic(idx) if self.logic is not None
                 else np.zeros(idx.size, dtype=np.uint8))
        return current_to_words(self.waveform(idx), idx, logic, self.metadata, self.vdd_mv)

    def _dropped_mask(self, first: int, stop: int) -> npt.NDArray[np.bool_]:
        keep = np.ones(stop - first, dtype=bool)
        for a, n in self.drop:
            lo, hi = max(a, first), min(a + n, stop)
            if lo < hi:
                keep[lo - first : hi - first] = False
        return keep

    def statistics(self) -> EmulatorStatistics:
        return EmulatorStatistics(self._sent + self._dropped, self._sent, self._dropped,
                                  len(self.log), self._meta_requests, self._starts,
                                  self.port.plugs)

    # --- faults ----------------------------------------------------------------------------

    def unplug(self) -> None:
        """Pull the cable: the pty closes and streaming stops until :meth:`replug`."""
        self._plugged = trio.Event()
        self.streaming = False
        if self._scope is not None:
            self._scope.cancel()
        self.port.unplug()

    def replug(self) -> None:
        """Plug back in: a fresh pty behind the same path, idle until AVERAGE_START."""
        self.port.replug()
        self._plugged.set()

    # --- the actor -------------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the pty until cancelled (surviving unplug / replug)."""
        self._t_origin = self.clock()
        task_status.started()
        try:
            while True:
                await self._plugged.wait()
                with trio.CancelScope() as scope:
                    self._scope = scope
                    try:
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(self._commands)
                            nursery.start_soon(self._stream)
                    except (trio.ClosedResourceError, trio.BrokenResourceError, OSError):
                        pass
                self._scope = None
                if self._plugged.is_set():  # the stream failed on its own: wait for replug
                    self._plugged = trio.Event()
        finally:
            self.port.close()

    async def _commands(self) -> None:
        buf = b""
        while True:
            master = self.port.master
            assert master is not None
            data = await master.receive_some(4096)
            if not data:
                raise trio.BrokenResourceError("pty closed")
            buf += data
            while buf:
                n = COMMAND_LENGTHS.get(buf[0], 1)
                if len(buf) < n:
                    break
                cmd, buf = buf[:n], buf[n:]
                self.log.append(cmd)
                await self._handle(cmd)

    async def _handle(self, cmd: bytes) -> None:
        op = cmd[0]
        if op == Cmd.GET_META_DATA:
            self._meta_requests += 1
            master = self.port.master
            assert master is not None
            await master.send_all(format_metadata(self.metadata).encode("ascii"))
        elif op == Cmd.AVERAGE_START:
            self._starts += 1
            self._next_index = max(self._next_index,
                                   math.floor((self.clock() - self._t_origin) * self.rate_hz))
            self._stream_start = self._next_index
            self.streaming = True
        elif op == Cmd.AVERAGE_STOP:
            self.streaming = False
        elif op == Cmd.REGULATOR_SET:
            self.vdd_mv = regulator_mv(cmd[1], cmd[2])
        elif op == Cmd.SET_POWER_MODE:
            self.power_mode = cmd[1]
        elif op == Cmd.DEVICE_RUNNING_SET:
            self.dut_on = bool(cmd[1])

    @property
    def source_mode(self) -> bool:
        return self.power_mode == POWER_MODE_SOURCE

    async def _stream(self) -> None:
        while True:
            await trio.sleep(self.chunk_s)
            if not self.streaming:
                continue
            target = math.floor((self.clock() - self._t_origin) * self.rate_hz)
            if target <= self._next_index:
                continue
            first, stop = self._next_index, target
            words = self.words(first, stop)
            keep = self._dropped_mask(first, stop)
            self._next_index = stop
            self._dropped += int(np.count_nonzero(~keep))
            out = words[keep]
            master = self.port.master
            assert master is not None
            await master.send_all(out.tobytes())
            self._sent += out.size
