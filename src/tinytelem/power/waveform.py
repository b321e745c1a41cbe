"""Power waveforms: what a device draws over true host time.

:class:`SegmentWaveform` is fed segment by segment from the device twin's power channel
(:mod:`tinytelem.power.twin`); :class:`ConstantWaveform` is the simplest device there is. The
simulated sensor (:mod:`tinytelem.power.simulated`) samples either, vectorised over whole arrays
of sample times.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from tinytelem.errors import ConfigError, SensorError

__all__ = ["ConstantWaveform", "PowerSegment", "SegmentWaveform", "StreamedWaveform", "Waveform"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class PowerSegment:
    """Constant power ``watts`` from ``start_s`` to ``end_s`` (seconds since boot)."""

    start_s: float
    end_s: float
    watts: float


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
        self._prune(t_start)

    def __len__(self) -> int:
        return len(self._segments)

    def _prune(self, now_s: float) -> None:
        if now_s <= self._newest_s:
            return
        self._newest_s = now_s
        cutoff = now_s - self.horizon_s
        segs = self._segments
        # Segments do not overlap and are sorted, so the stale ones are a prefix; pruning
        # often keeps it short. (Filtering the whole list here cost half a core in a soak
        # at the spans trace level, where the twin reports ~2k segments a second.)
        stale = 0
        while stale < len(segs) and segs[stale][1] < cutoff:
            stale += 1
        if stale:
            del segs[:stale]

    def current_at(self, true_times: FloatArray) -> FloatArray:
        power = np.full(true_times.shape, self.idle_w, dtype=np.float64)
        segs = self._segments
        if segs and true_times.size:
            # Only the segments that can cover [min, max] of the block: a slice found by
            # bisection, not the whole horizon (thousands of segments at the spans level).
            lo = bisect.bisect_right(segs, (float(true_times.min()), math.inf, math.inf)) - 1
            hi = bisect.bisect_right(segs, (float(true_times.max()), math.inf, math.inf))
            seg = np.asarray(segs[max(lo, 0):hi], dtype=np.float64).reshape(-1, 3)
            starts, ends, watts = seg[:, 0], seg[:, 1], seg[:, 2]
            if starts.size:
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
