"""The simulated power sensor: a current sampler with its own (drifting) clock.

It stands in for a PPK2 / Joulescope when profiling the device twin, and gives the analysis
code a sensor whose ground truth is known exactly: sample ``i`` is taken at true host time
``t0 + i / (rate_hz * (1 + drift_ppm * 1e-6))``. Like a real sensor it delivers blocks of
samples, some time after they were taken; only the sample index is truth, the block's host
arrival time is merely a hint for clock fitting.

Current comes from a :class:`Waveform` evaluated on whole arrays of true times (vectorised:
1 MS/s has to cost a few percent of a core). :class:`SegmentWaveform` is fed by
:func:`twin_power_client` from the device twin's power channel, a msgpack stream of
``[t_start_s, t_end_s, watts]`` segments in host ``time.monotonic()`` seconds.

Overflow policy (every lost sample is accounted for): blocks go out with ``send_nowait``; when
the channel is full they wait in a bounded backlog; when the backlog overflows the oldest
samples are dropped and a :class:`~tinytelem.records.PowerGap` takes their place.
"""

from __future__ import annotations

import bisect
import math
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

import msgpack
import numpy as np
import numpy.typing as npt
import trio

from tinytelem.errors import ConfigError, SensorError
from tinytelem.records import PowerBlock, PowerGap, Record

__all__ = [
    "ConstantWaveform",
    "PowerStatistics",
    "SegmentWaveform",
    "SimulatedPowerSensor",
    "StreamedWaveform",
    "Waveform",
    "twin_power_client",
]

FloatArray = npt.NDArray[np.float64]
MAX_RATE_HZ = 1_000_000.0


class Waveform(Protocol):
    """Current drawn by the simulated device as a function of true host time."""

    def current_at(self, true_times: FloatArray) -> FloatArray:
        """Amperes at each of ``true_times`` (host monotonic seconds), same shape."""
        ...


@runtime_checkable
class StreamedWaveform(Waveform, Protocol):
    """A waveform that is only known up to some time (it arrives over a stream)."""

    def covered_until(self) -> float:
        """True time up to which the waveform is final (+inf when fully known)."""
        ...


class ConstantWaveform:
    """A device that always draws ``watts`` at ``voltage`` volts."""

    def __init__(self, watts: float, voltage: float) -> None:
        if voltage <= 0:
            raise ConfigError(f"waveform voltage must be positive, got {voltage} V")
        self.watts = watts
        self.voltage = voltage

    def current_at(self, true_times: FloatArray) -> FloatArray:
        return np.full(true_times.shape, self.watts / self.voltage, dtype=np.float64)


class SegmentWaveform:
    """Piecewise-constant power: ``watts`` inside segments, ``idle_w`` outside them.

    Segments are half-open ``[t_start, t_end)`` in true host time and assumed not to overlap
    (the twin reports consecutive phases). They may arrive while the sensor runs, in any
    order; they are kept sorted. Segments that ended more than ``horizon_s`` before the newest
    time seen (queried or reported) are forgotten, which bounds memory on long runs -- keep
    ``horizon_s`` above the sensor's latency plus any backlog it may replay.
    """

    def __init__(self, voltage_v: float = 3.3, idle_w: float = 0.0, horizon_s: float = 10.0):
        self.voltage_v = voltage_v
        self.idle_w = idle_w
        self.horizon_s = horizon_s
        self._check()
        self._segments: list[tuple[float, float, float]] = []
        self._arrays: tuple[FloatArray, FloatArray, FloatArray] | None = None
        self._newest_s = -math.inf
        self._covered_s = -math.inf
        self.streamed = False
        """True once fed by the twin: then :meth:`covered_until` tells the sensor what arrived."""

    def _check(self) -> None:
        if self.voltage_v <= 0:
            raise ConfigError(f"waveform voltage must be positive, got {self.voltage_v} V")
        if self.horizon_s <= 0:
            raise ConfigError(f"segment horizon must be positive, got {self.horizon_s} s")

    def configure(self, voltage_v: float, idle_w: float, *, streamed: bool = True) -> None:
        """Set supply voltage and idle power (from the twin's header).

        ``streamed`` (the default here) makes :meth:`covered_until` report how far segments
        have arrived, so the sensor waits for them instead of filling in idle power.
        """
        self.voltage_v = voltage_v
        self.idle_w = idle_w
        self._check()
        self.streamed = streamed

    def covered_until(self) -> float:
        """End of the latest segment received when streamed, else +inf (fully known).

        The twin sends contiguous segments (idle ones fill the time between runs) only once
        each has finished, so a long active segment arrives late: this is what tells the
        sensor to wait for it.
        """
        return self._covered_s if self.streamed else math.inf

    def add_segment(self, t_start: float, t_end: float, watts: float) -> None:
        """Record that the device drew ``watts`` during ``[t_start, t_end)``."""
        if not t_end >= t_start:  # also rejects NaN
            raise SensorError(
                f"power segment ends before it starts ({t_start} .. {t_end}); "
                "the twin must send [t_start_s, t_end_s, watts] in host monotonic seconds"
            )
        bisect.insort(self._segments, (t_start, t_end, watts))
        self._covered_s = max(self._covered_s, t_end)
        self._arrays = None
        self._prune(t_start)

    def __len__(self) -> int:
        return len(self._segments)

    def _prune(self, now_s: float) -> None:
        if now_s <= self._newest_s:
            return
        self._newest_s = now_s
        cutoff = now_s - self.horizon_s
        segs = self._segments
        if segs and segs[0][1] < cutoff:
            keep = [s for s in segs if s[1] >= cutoff]
            self._segments = keep
            self._arrays = None

    def current_at(self, true_times: FloatArray) -> FloatArray:
        if self._arrays is None:
            seg = np.asarray(self._segments, dtype=np.float64).reshape(-1, 3)
            self._arrays = (seg[:, 0].copy(), seg[:, 1].copy(), seg[:, 2].copy())
        starts, ends, watts = self._arrays
        power = np.full(true_times.shape, self.idle_w, dtype=np.float64)
        if starts.size and true_times.size:
            # The last segment starting at or before t covers t if t is before its end.
            k = np.searchsorted(starts, true_times, side="right") - 1
            valid = k >= 0
            kk = np.where(valid, k, 0)
            inside = valid & (true_times < ends[kk])
            power = np.where(inside, watts[kk], power)
        if true_times.size:
            self._prune(float(true_times[-1]))
        result: FloatArray = power / self.voltage_v
        return result


async def twin_power_client(
    url: str,
    waveform: SegmentWaveform,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    *,
    header_timeout_s: float = 5.0,
) -> None:
    """Feed ``waveform`` from the device twin's power channel until the twin closes it.

    The stream is msgpack: a header map ``{"voltage_v": .., "idle_w": ..}`` then arrays
    ``[t_start_s, t_end_s, watts]``. ``task_status.started()`` fires once the header has
    configured the waveform, so a sensor started afterwards sees the right voltage.

    Args:
        url: ``tcp://host:port`` (or ``host:port``) of the twin's power channel.
        waveform: Receives the header and every segment.
        task_status: For ``nursery.start``.
        header_timeout_s: How long to wait for the header before giving up.

    Raises:
        SensorError: cannot connect, no header in time, or the stream is not the expected
            msgpack format.
    """
    host, port = _parse_tcp_url(url)
    try:
        stream = await trio.open_tcp_stream(host, port)
    except OSError as exc:
        raise SensorError(
            f"cannot connect to the twin power channel at {url}: {exc} -- "
            "is the device twin running with its power channel on that port?"
        ) from exc
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=1 << 20)
    async with stream:
        with trio.move_on_after(header_timeout_s) as scope:
            header = await _next_object(stream, unpacker, url)
        if scope.cancelled_caught:
            raise SensorError(
                f"no header from the twin power channel at {url} within {header_timeout_s} s "
                "-- is that port really the twin's power channel?"
            )
        if header is None:
            raise SensorError(f"twin power channel at {url} closed before sending its header")
        _apply_header(header, waveform, url)
        task_status.started()
        while (obj := await _next_object(stream, unpacker, url)) is not None:
            if (
                not isinstance(obj, list | tuple)
                or len(obj) != 3
                or not all(isinstance(v, int | float) for v in obj)
            ):
                raise SensorError(
                    f"twin power channel at {url} sent {obj!r}; expected "
                    "[t_start_s, t_end_s, watts] -- is the twin's protocol version the same?"
                )
            waveform.add_segment(float(obj[0]), float(obj[1]), float(obj[2]))


def _parse_tcp_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "tcp" or not parts.hostname or port is None:
        raise ConfigError(f"twin power channel URL {url!r} must look like tcp://127.0.0.1:5556")
    return parts.hostname, port


async def _next_object(
    stream: trio.abc.ReceiveStream, unpacker: msgpack.Unpacker, url: str
) -> object:
    """Next msgpack object from ``stream``, or None at a clean end of stream."""
    while True:
        try:
            return next(unpacker)
        except StopIteration:
            pass
        except (ValueError, msgpack.exceptions.UnpackException) as exc:
            raise SensorError(
                f"twin power channel at {url} sent bytes that are not msgpack"
            ) from exc
        try:
            data = await stream.receive_some(65536)
        except trio.BrokenResourceError as exc:
            raise SensorError(f"twin power channel at {url} broke: {exc.__cause__}") from exc
        if not data:
            return None
        try:
            unpacker.feed(data)
        except msgpack.exceptions.BufferFull as exc:
            raise SensorError(f"twin power channel at {url} sent an oversized object") from exc


def _apply_header(header: object, waveform: SegmentWaveform, url: str) -> None:
    try:
        assert isinstance(header, dict)
        voltage_v = float(header["voltage_v"])
        idle_w = float(header["idle_w"])
    except (AssertionError, KeyError, TypeError, ValueError) as exc:
        raise SensorError(
            f"twin power channel at {url} sent header {header!r}; expected a map with "
            "voltage_v and idle_w"
        ) from exc
    try:
        waveform.configure(voltage_v, idle_w)
    except ConfigError as exc:
        raise SensorError(f"twin power channel at {url}: bad header: {exc}") from exc


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
            rate_hz: Nominal sample rate, up to 1 MS/s.
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
            raise ConfigError(f"sensor rate must be in (0, 1e6] Hz, got {rate_hz}")
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
