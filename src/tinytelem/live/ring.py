"""A single-producer/single-consumer ring buffer for power samples.

The streamer keeps the last few seconds of raw current in one of these so that a client can ask
for "the last 0.5 s of raw samples" at any moment without the streamer keeping every block it
ever saw. The producer pushes whole blocks, the consumer pops (or peeks at) whole blocks; both
are plain numpy slice copies, at most two per call (the wrap-around).

Why numpy and not numba here: a ring copy is a ``memcpy``; numpy's slice assignment already
runs at memory speed and ``bench/streaming.py`` measures numba's compiled loop as no faster
(a prototype measured 2.5 GS/s numpy vs 1.4 GS/s numba for 16k blocks). The numba kernel lives in
the benchmark only, as the baseline that keeps this decision honest.

Overflow policy: the ring never refuses a push. When the producer outruns the consumer the
oldest unread samples are overwritten and counted in :attr:`PowerRing.overwritten`; the
consumer learns about them through the sample index of what it pops next (indices are absolute
sensor sample indices, so a jump is a visible gap).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tinytelem.errors import ConfigError

__all__ = ["PowerRing", "RingStatistics"]

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class RingStatistics:
    """Counters of a ring (immutable snapshot)."""

    capacity: int
    pushed: int
    popped: int
    overwritten: int
    """Samples overwritten before the consumer read them."""
    discontinuities: int
    """Pushes whose first index did not follow the previous push (sensor gaps)."""


class PowerRing:
    """Preallocated float32 ring with absolute sample indices (SPSC, no locks needed in trio).

    The ring holds a contiguous run of sample indices ``[start_index, end_index)``. A push whose
    ``first_index`` does not continue the run (a sensor gap) resets the unread region to the new
    block: a ring of *contiguous* samples keeps "index -> position" arithmetic trivial, and the
    samples before a gap are still counted (``discontinuities``, ``overwritten``).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ConfigError(f"ring capacity must be at least 1 sample, got {capacity}")
        self.capacity = int(capacity)
        self._buf: F32 = np.zeros(self.capacity, dtype=np.float32)
        self._write = 0
        """Total samples ever written (position = _write % capacity)."""
        self._read = 0
        """Total samples ever consumed or overwritten."""
        self._origin: int | None = None
        """Sensor index of the sample written at total position 0 (shifted on gaps)."""
        self._valid_start = 0
        """Total position of the oldest sample of the current contiguous run."""
        self._pushed = self._popped = self._overwritten = self._discontinuities = 0

    # ------------------------------------------------------------------ producer

    @property
    def end_index(self) -> int | None:
        """Sensor index one past the newest sample (None before the first push)."""
        return None if self._origin is None else self._origin + self._write

    @property
    def start_index(self) -> int | None:
        """Sensor index of the oldest unread sample (None before the first push)."""
        return None if self._origin is None else self._origin + self._read

    def push(self, first_index: int, samples: npt.ArrayLike) -> int:
        """Append a block; overwrite (and count) the oldest unread samples when full.

        Returns:
            How many unread samples this push overwrote.
        """
        block = np.asarray(samples, dtype=np.float32).reshape(-1)
        n = int(block.shape[0])
        if n == 0:
            return 0
        lost = 0
        if self._origin is None:
            self._origin = int(first_index) - self._write
        elif int(first_index) != self._origin + self._write:
            # A gap (or a counter reset): what is unread no longer continues into this block.
            self._discontinuities += 1
            lost += self._write - self._read
            self._read = self._write
            self._valid_start = self._write
            self._origin = int(first_index) - self._write
        if n > self.capacity:
            # Only the newest `capacity` samples can be kept; the rest are lost on arrival.
            skipped = n - self.capacity
            lost += self._write - self._read + skipped
            block = block[skipped:]
            self._write += skipped
            self._read = self._write
            n = self.capacity
        unread = self._write - self._read
        overflow = unread + n - self.capacity
        if overflow > 0:
            self._read += overflow
            lost += overflow
        pos = self._write % self.capacity
        first = min(n, self.capacity - pos)
        self._buf[pos : pos + first] = block[:first]
        if first < n:
            self._buf[: n - first] = block[first:]
        self._write += n
        self._pushed += int(np.asarray(samples).size)
        self._overwritten += lost
        return lost

    # ------------------------------------------------------------------ consumer

    def __len__(self) -> int:
        """Unread samples."""
        return self._write - self._read

    def _copy(self, start_total: int, n: int) -> F32:
        out = np.empty(n, dtype=np.float32)
        pos = start_total % self.capacity
        first = min(n, self.capacity - pos)
        out[:first] = self._buf[pos : pos + first]
        if first < n:
            out[first:] = self._buf[: n - first]
        return out

    def pop(self, max_samples: int | None = None) -> tuple[int, F32]:
        """Take up to ``max_samples`` of the oldest unread samples.

        Returns:
            ``(first_index, samples)``; an empty array (first_index = end) when nothing waits.
        """
        n = len(self) if max_samples is None else min(len(self), max(0, max_samples))
        first_index = (self._origin or 0) + self._read
        out = self._copy(self._read, n)
        self._read += n
        self._popped += n
        return first_index, out

    def latest(self, n: int) -> tuple[int, F32]:
        """Copy the newest ``n`` samples (or fewer, if fewer are held) without consuming them.

        "Held" means written and not overwritten or invalidated by a gap, read or not: a live
        view asking for the last second wants it whether or not another consumer popped it.
        """
        held = min(self._write - self._valid_start, self.capacity)
        n = min(max(0, int(n)), held)
        start = self._write - n
        return (self._origin or 0) + start, self._copy(start, n)

    def statistics(self) -> RingStatistics:
        """Counters (immutable snapshot)."""
        return RingStatistics(self.capacity, self._pushed, self._popped, self._overwritten,
                              self._discontinuities)
