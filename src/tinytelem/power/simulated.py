"""The simulated power sensor: a current sampler with its own (drifting) clock.

It stands in for a PPK2 / Joulescope when profiling the device twin, and gives the analysis
code a sensor whose ground truth is known exactly: sample ``i`` is taken at true host time
``t0 + i / (rate_hz * (1 + drift_ppm * 1e-6))``. Like a real sensor it delivers blocks of
samples, some time after they were taken; only the sample index is truth, the block's host
arrival time is merely a hint for clock fitting.

Current comes from a :class:`~tinytelem.power.waveform.Waveform` evaluated on whole arrays of
true times (vectorised: 1 MS/s has to cost a few percent of a core); for the device twin that is
the :class:`~tinytelem.power.waveform.SegmentWaveform` fed from its power channel
(:mod:`tinytelem.power.twin`).

Overflow policy (every lost sample is accounted for): blocks go out with ``send_nowait``; when
the channel is full they wait in a bounded backlog; when the backlog overflows the oldest
samples are dropped and a :class:`~tinytelem.records.PowerGap` takes their place.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import trio

from tinytelem.errors import ConfigError, SensorError
from tinytelem.power.waveform import FloatArray, StreamedWaveform, Waveform
from tinytelem.records import PowerBlock, PowerGap, Record

__all__ = ["MAX_RATE_HZ", "PowerStatistics", "SimulatedPowerSensor"]

MAX_RATE_HZ = 2_000_000.0


@dataclass(frozen=True, slots=True)
class PowerStatistics:
    """Counters of the simulated sensor.

    Invariant: ``samples == delivered_samples + dropped_samples + backlog_samples``.
    """

    samples: int
    """Samples generated."""
    blocks: int
    """PowerBlock records sent."""
    dropped_samples: int
    gaps: int
    """PowerGap records created (contiguous losses are merged into one)."""
    backlog_high_water: int
    """Most samples ever waiting in the backlog."""
    delivered_samples: int = 0
    backlog_samples: int = 0
    uncovered_blocks: int = 0
    """Blocks made before a streamed waveform covered them (waited ``max_wait_s`` in vain)."""


Clock = Callable[[], float]
_BacklogItem = PowerGap | tuple[int, npt.NDArray[np.float32]]
"""A pending gap, or ``(first_index, samples)`` not yet made into a block."""
SleepUntil = Callable[[float], Awaitable[None]]


class SimulatedPowerSensor:
    """Actor producing :class:`PowerBlock` records paced to a simulated sensor clock.

    The sensor lags true time by ``latency_s``: the block covering samples ``[a, b)`` is made
    once true time reaches ``t(b) + latency_s``, so the twin's segments for that interval
    have arrived. If the actor falls behind (a stalled event loop), it catches up with
    several blocks at once, like a real sensor's FIFO.

    ``clock`` and ``sleep_until`` are injectable so tests can drive the sensor with a fake
    clock (trio's autojump clock cannot move ``time.monotonic()``).
    """

    def __init__(
        self,
        waveform: Waveform,
        *,
        rate_hz: float = 100_000.0,
        voltage_v: float = 3.3,
        drift_ppm: float = 0.0,
        noise_a: float = 0.0,
        seed: int = 0,
        block_s: float = 0.05,
        latency_s: float = 0.02,
        max_wait_s: float = 2.0,
        transport_s: float | None = None,
        transport_jitter_s: float = 0.0005,
        backlog_s: float = 1.0,
        max_samples: int | None = None,
        t0: float | None = None,
        clock: Clock = time.monotonic,
        sleep_until: SleepUntil | None = None,
    ) -> None:
        """Configure the sensor.

        Args:
            waveform: Source of the true current.
            rate_hz: Nominal sample rate, up to :data:`MAX_RATE_HZ` (2 MS/s, Joulescope JS220
                class).
            voltage_v: Supply voltage reported in every block.
            drift_ppm: Crystal error; the true rate is ``rate_hz * (1 + drift_ppm * 1e-6)``.
            noise_a: Standard deviation of gaussian current noise (amperes).
            seed: Noise seed, for reproducible runs.
            block_s: Nominal block length; CPU cost scales with blocks per second.
            latency_s: How far the sensor lags true time.
            max_wait_s: With a streamed waveform (twin), how much longer to wait for segments
                covering a block before making it anyway (counted in ``uncovered_blocks``).
            transport_s: None: blocks are stamped with the time they are delivered. A number:
                they are stamped as a real sensor's would arrive, that long after their last
                sample (plus jitter), so the simulation's own lag (``latency_s``, waiting for a
                streamed waveform) does not bias the sensor clock fit.
            transport_jitter_s: Mean of the exponential (one-sided) jitter on that delay.
            backlog_s: Backlog capacity (in nominal seconds of samples) when the channel is full.
            max_samples: Stop after this many samples (None: run until cancelled).
            t0: True time of sample 0; default: the clock when ``run`` starts.
            clock: Truth clock (host monotonic seconds).
            sleep_until: Waits until ``clock()`` reaches a deadline; default sleeps in trio.
        """
        if not 0 < rate_hz <= MAX_RATE_HZ:
            raise ConfigError(f"sensor rate {rate_hz:g} Hz is outside (0, 2 MS/s], the rate the "
                              "recording pipeline is measured to sustain; lower --sensor-rate")
        if not abs(drift_ppm) < 1e5:
            raise ConfigError(f"sensor drift {drift_ppm} ppm is not a crystal error")
        if (
            block_s <= 0
            or latency_s < 0
            or max_wait_s < 0
            or backlog_s < 0
            or noise_a < 0
            or voltage_v <= 0
        ):
            raise ConfigError(
                "sensor needs block_s > 0, latency_s >= 0, max_wait_s >= 0, backlog_s >= 0, "
                f"noise_a >= 0 and voltage_v > 0 (got {block_s}, {latency_s}, {max_wait_s}, "
                f"{backlog_s}, {noise_a}, {voltage_v})"
            )
        self.waveform = waveform
        self.rate_hz = float(rate_hz)
        self.voltage_v = float(voltage_v)
        self.drift_ppm = float(drift_ppm)
        self.true_rate_hz = self.rate_hz * (1.0 + self.drift_ppm * 1e-6)
        self.noise_a = float(noise_a)
        self.block_samples = max(1, round(self.rate_hz * block_s))
        self.latency_s = float(latency_s)
        self.max_wait_s = float(max_wait_s)
        self.transport_s = transport_s
        self.transport_jitter_s = float(transport_jitter_s)
        self.backlog_capacity = round(self.rate_hz * backlog_s)
        self.max_samples = max_samples
        self._t0 = t0
        self._clock = clock
        self._sleep_until = sleep_until or self._default_sleep_until
        self._rng = np.random.default_rng(seed)
        self._backlog: deque[_BacklogItem] = deque()
        self._backlog_samples = 0
        self._samples = 0
        self._blocks = 0
        self._delivered = 0
        self._dropped = 0
        self._gaps = 0
        self._backlog_high_water = 0
        self._uncovered = 0

    async def _default_sleep_until(self, deadline: float) -> None:
        await trio.sleep(max(0.0, deadline - self._clock()))

    # --- ground truth ----------------------------------------------------------------------

    @property
    def t0(self) -> float:
        """True time of sample 0 (known once ``run`` started, or when given)."""
        if self._t0 is None:
            raise SensorError("sensor t0 is unknown until run() starts; pass t0= to fix it")
        return self._t0

    def sample_times(self, indices: npt.ArrayLike) -> FloatArray:
        """True host times at which samples ``indices`` were taken (the ground truth)."""
        idx = np.asarray(indices, dtype=np.float64)
        times: FloatArray = self.t0 + idx / self.true_rate_hz
        return times

    def index_at(self, true_time: float) -> int:
        """Number of samples fully taken by ``true_time`` (samples ``[0, n)`` are done)."""
        # Tolerance of a millionth of a sample absorbs rounding at exact block deadlines.
        return max(0, math.floor((true_time - self.t0) * self.true_rate_hz + 1e-6))

    # --- the actor -------------------------------------------------------------------------

    def _due(self, end_index: int) -> float:
        """True time at which samples before ``end_index`` may be delivered."""
        return self.t0 + end_index / self.true_rate_hz + self.latency_s

    async def run(
        self,
        send_channel: trio.MemorySendChannel[Record],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Produce blocks in real time (per ``clock``) until ``max_samples`` or cancellation.

        On reaching ``max_samples`` the backlog is flushed with waiting sends before the
        channel is closed. If the receiver closes its end, the sensor stops quietly.
        """
        limit = sys.maxsize if self.max_samples is None else self.max_samples
        async with send_channel:
            if self._t0 is None:
                self._t0 = self._clock()
            task_status.started()
            next_index = 0
            try:
                while next_index < limit:
                    target = min(next_index + self.block_samples, limit)
                    await self._sleep_until(self._due(target))
                    await self._wait_for_coverage(target)
                    now = self._clock()
                    self._flush_nowait(send_channel)
                    # Usually one block; several when catching up after a stall. Comparing
                    # with the very deadline we slept for (not a rounded index) means a clock
                    # that wakes exactly on time always gets its block.
                    while (
                        next_index < limit
                        and now >= self._due(target)
                        and self._covered(target, now)
                    ):
                        self._emit(send_channel, next_index, self._generate(next_index, target))
                        next_index = target
                        target = min(next_index + self.block_samples, limit)
                while self._backlog:
                    item = self._backlog[0]
                    await send_channel.send(self._to_record(item))
                    self._sent_from_backlog(item)
            except trio.BrokenResourceError:
                return

    def _covered(self, end_index: int, now: float) -> bool:
        """Whether the block ending at ``end_index`` may be made now (waveform arrived)."""
        wave = self.waveform
        if not isinstance(wave, StreamedWaveform):
            return True
        if wave.covered_until() >= self._due(end_index) - self.latency_s:
            return True
        if now >= self._due(end_index) + self.max_wait_s:
            self._uncovered += 1
            return True
        return False

    async def _wait_for_coverage(self, end_index: int) -> None:
        """Poll (a few ms apart) until the waveform covers the block or ``max_wait_s`` ends."""
        wave = self.waveform
        if not isinstance(wave, StreamedWaveform):
            return
        give_up = self._due(end_index) + self.max_wait_s
        end_s = self._due(end_index) - self.latency_s
        while wave.covered_until() < end_s and (now := self._clock()) < give_up:
            await self._sleep_until(min(now + 0.005, give_up))

    def _generate(self, start: int, end: int) -> npt.NDArray[np.float32]:
        times = self.sample_times(np.arange(start, end, dtype=np.float64))
        current = np.asarray(self.waveform.current_at(times), dtype=np.float32)
        if self.noise_a > 0:
            noise = self._rng.standard_normal(end - start, dtype=np.float32)
            noise *= np.float32(self.noise_a)
            current = current + noise
        self._samples += end - start
        return current

    def _to_record(self, item: _BacklogItem) -> Record:
        now = self._clock()
        if isinstance(item, PowerGap):
            return PowerGap(now, item.first_index, item.n_missing)
        first, samples = item
        if self.transport_s is not None:
            # When a real sensor's block would have reached the host (see transport_s).
            arrival = float(self.sample_times(first + len(samples))) + self.transport_s
            arrival += float(self._rng.exponential(self.transport_jitter_s))
            now = min(now, arrival)
        return PowerBlock(now, first, samples, self.voltage_v, self.rate_hz)

    def _count_sent(self, item: _BacklogItem) -> None:
        if not isinstance(item, PowerGap):
            self._blocks += 1
            self._delivered += item[1].size

    def _flush_nowait(self, channel: trio.MemorySendChannel[Record]) -> None:
        """Send backlog items in order until the channel is full."""
        while self._backlog:
            item = self._backlog[0]
            try:
                channel.send_nowait(self._to_record(item))
            except trio.WouldBlock:
                return
            self._sent_from_backlog(item)

    def _sent_from_backlog(self, item: _BacklogItem) -> None:
        self._backlog.popleft()
        if not isinstance(item, PowerGap):
            self._backlog_samples -= item[1].size
        self._count_sent(item)

    def _emit(
        self, channel: trio.MemorySendChannel[Record], first: int, samples: npt.NDArray[np.float32]
    ) -> None:
        item = (first, samples)
        if not self._backlog:
            try:
                channel.send_nowait(self._to_record(item))
            except trio.WouldBlock:
                pass
            else:
                self._count_sent(item)
                return
        self._backlog.append(item)
        self._backlog_samples += samples.size
        self._trim_backlog()
        self._backlog_high_water = max(self._backlog_high_water, self._backlog_samples)

    def _trim_backlog(self) -> None:
        """Drop the oldest samples beyond capacity; a gap record takes their place."""
        excess = self._backlog_samples - self.backlog_capacity
        if excess <= 0:
            return
        gap: PowerGap | None = None
        head = self._backlog[0]
        if isinstance(head, PowerGap):
            gap = head
            self._backlog.popleft()
        while excess > 0:
            head = self._backlog[0]
            assert not isinstance(head, PowerGap)  # only the front item can be a gap
            first, samples = head
            cut = min(excess, samples.size)
            if cut == samples.size:
                self._backlog.popleft()
            else:
                self._backlog[0] = (first + cut, samples[cut:])
            if gap is None:
                gap = PowerGap(self._clock(), first, cut)
                self._gaps += 1
            else:
                gap = PowerGap(gap.host_s, gap.first_index, gap.n_missing + cut)
            excess -= cut
            self._backlog_samples -= cut
            self._dropped += cut
        assert gap is not None
        self._backlog.appendleft(gap)

    def statistics(self) -> PowerStatistics:
        """Counters: samples generated / delivered / dropped, blocks, gaps, backlog."""
        return PowerStatistics(
            samples=self._samples,
            blocks=self._blocks,
            dropped_samples=self._dropped,
            gaps=self._gaps,
            backlog_high_water=self._backlog_high_water,
            delivered_samples=self._delivered,
            backlog_samples=self._backlog_samples,
            uncovered_blocks=self._uncovered,
        )
