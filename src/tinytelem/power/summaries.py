"""Incremental multi-level power summaries: mean, std, min, max per bucket at 1 ms ... 1 s.

A live view (or an analysis tool reading the trace) zooms by choosing a level instead of
rereading raw samples: one hour at 1 MS/s is 3.6 G samples but only 3600 one-second buckets.

How it works, per sample block (``first_index``, ``current_a``):

1. The block is cut at level-1 bucket boundaries (boundaries are multiples of the bucket size
   in *sensor sample index*, so buckets line up across blocks and across runs). One pass over
   each piece gives (count, mean, M2, min, max) -- the "segment kernel".
2. Each level is a :class:`_Combiner`: it merges consecutive rows that fall into the same
   bucket of its level (Chan et al.'s parallel variance formula, so std stays exact and
   numerically stable) and emits a bucket as soon as a row of a later bucket arrives. Level
   ``k+1`` is fed by what level ``k`` emits, never by raw samples.

Samples missing inside a bucket (sensor gaps) just make its ``n`` smaller; a bucket is never
invented for a stretch with no samples. Bucket sizes are whole multiples of the level below
(``samples_per_bucket``), so the real duration of a level is ``samples / sample_rate_hz``.

Two segment kernels exist: numpy (several vectorised passes) and numba (one fused pass, JIT
compiled on first use, ~100 MB of RSS for LLVM). ``bench/streaming.py`` measures both in the
same run; the default backend is numpy because at the rates sensors reach (<= 1 MS/s) it costs
well under 1 % of a core, so numba's memory is not worth paying in every process -- pass
``backend="numba"`` where the benchmark shows it matters (e.g. replaying hours of raw data).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from tinytelem.errors import ConfigError
from tinytelem.records import PowerBlock, Record

__all__ = [
    "DEFAULT_LEVELS_S",
    "STATS_DTYPE",
    "SUMMARY_DTYPE",
    "Level",
    "MultiLevelSummary",
    "PowerSummaryRecorder",
    "level_name",
    "segment_stats_numba",
    "segment_stats_numpy",
    "summary_tables",
]

DEFAULT_LEVELS_S: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0)

SUMMARY_DTYPE = np.dtype([
    ("first_index", "<u8"),
    ("n", "<u4"),
    ("mean", "<f8"),
    ("std", "<f4"),
    ("min", "<f4"),
    ("max", "<f4"),
])
"""One bucket as stored in the trace and sent to clients (std: population, amperes)."""

STATS_DTYPE = np.dtype([
    ("first_index", "<u8"),
    ("n", "<u8"),
    ("mean", "<f8"),
    ("m2", "<f8"),
    ("min", "<f4"),
    ("max", "<f4"),
])
"""Mergeable partial statistics (M2 = sum of squared deviations from the mean)."""

Backend = Literal["numpy", "numba"]
SegmentKernel = Callable[[npt.NDArray[np.float32], npt.NDArray[np.int64]], tuple[Any, ...]]


def level_name(seconds: float) -> str:
    """``0.001`` -> ``"1ms"``, ``1.0`` -> ``"1s"`` (dataset and schema names)."""
    if seconds >= 1.0 and float(seconds).is_integer():
        return f"{int(seconds)}s"
    ms = seconds * 1e3
    if abs(ms - round(ms)) < 1e-9:
        return f"{round(ms)}ms"
    return f"{seconds * 1e6:g}us"


def summary_tables(levels_s: Sequence[float] = DEFAULT_LEVELS_S) -> dict[str, np.dtype[Any]]:
    """Trace datasets the summaries are written to: ``/power/summary/<level>``."""
    return {f"/power/summary/{level_name(s)}": SUMMARY_DTYPE for s in levels_s}


# ---------------------------------------------------------------------------- kernels


def _rows_stats(x2d: npt.NDArray[np.float32]) -> tuple[Any, ...]:
    """(count, mean, M2, min, max) of each row of ``x2d``, without a float64 copy of it.

    Memory traffic, not arithmetic, is the cost here, so every pass reads float32: the mean is
    summed in float64 (exact to ~1e-15), the squared deviations from it in float32 (about 5e-7
    relative error on M2 over a 1000-sample bucket, under the float32 the std is stored as).
    Rows of 64 samples or more take one single-threaded BLAS dot product each through a
    stacked matmul, 3x cheaper than ``einsum`` at 1000; shorter rows are cheaper with
    ``einsum``. Coarser levels merge these in float64.
    """
    n = x2d.shape[1]
    counts = np.full(x2d.shape[0], n, dtype=np.int64)
    means = np.einsum("ij->i", x2d, dtype=np.float64) / n  # 20 % cheaper than sum(axis=1)
    dev = x2d - means.astype(np.float32)[:, None]
    if n >= 64:
        m2 = np.matmul(dev[:, None, :], dev[:, :, None]).reshape(-1).astype(np.float64)
    else:
        m2 = np.einsum("ij,ij->i", dev, dev).astype(np.float64)
    return counts, means, m2, x2d.min(axis=1), x2d.max(axis=1)


def _stats_reduceat(
    x: npt.NDArray[np.float32], starts: npt.NDArray[np.int64]
) -> tuple[Any, ...]:
    counts = np.diff(np.append(starts, x.shape[0]))
    x64 = x.astype(np.float64)
    means = np.add.reduceat(x64, starts) / counts
    dev = x64 - np.repeat(means, counts)
    m2 = np.add.reduceat(dev * dev, starts)
    return counts, means, m2, np.minimum.reduceat(x, starts), np.maximum.reduceat(x, starts)


def segment_stats_numpy(
    x: npt.NDArray[np.float32], starts: npt.NDArray[np.int64]
) -> tuple[Any, ...]:
    """(count, mean, M2, min, max) of ``x[starts[i]:starts[i+1]]`` for each segment (numpy).

    Summaries cut a block at bucket boundaries, so the segments are a partial head, equal
    whole buckets and a partial tail. The whole buckets are reduced as rows of a 2-D view
    (row reductions, no ``reduceat`` or ``repeat``): about 9x cheaper than the general path
    at 1 ms buckets of 1 MS/s (``bench/vs_pyjls.py``). Other layouts take the general path.
    """
    k = int(starts.shape[0])
    total = int(x.shape[0])
    if k < 3:
        return _stats_reduceat(x, starts)
    size = int(starts[2] - starts[1])
    first = int(starts[1])
    uniform = (int(starts[0]) == 0 and size > 0 and k - 1 == -(-(total - first) // size)
               and np.array_equal(starts[1:], first + size * np.arange(k - 1, dtype=np.int64)))
    if not uniform:
        return _stats_reduceat(x, starts)
    return _uniform_stats(x, first, size)


def _uniform_stats(x: npt.NDArray[np.float32], first: int, size: int) -> tuple[Any, ...]:
    """:func:`segment_stats_numpy` of segments ``[0, first)`` then every ``size`` samples."""
    total = int(x.shape[0])
    head = first == size  # the first segment is a whole bucket too
    lo = 0 if head else first
    parts = [] if head else [_rows_stats(x[None, :first])]
    body_end = lo + ((total - lo) // size) * size
    if body_end > lo:
        parts.append(_rows_stats(x[lo:body_end].reshape(-1, size)))
    if body_end < total:
        parts.append(_rows_stats(x[None, body_end:]))
    if len(parts) == 1:
        return parts[0]
    return tuple(np.concatenate(cols) for cols in zip(*parts, strict=True))


_NUMBA_KERNEL: list[SegmentKernel] = []


def _numba_kernel() -> SegmentKernel:
    if _NUMBA_KERNEL:
        return _NUMBA_KERNEL[0]
    try:
        import numba  # lazy: ~100 MB RSS, only paid by who asks for it
    except ImportError as exc:
        raise ConfigError("the numba summary backend needs numba: pip install "
                          "'tinytelem[numba]', or use backend='numpy'") from exc

    @numba.njit(cache=True, nogil=True)  # type: ignore[misc,unused-ignore]
    def kernel(x: Any, starts: Any) -> tuple[Any, ...]:  # pragma: no cover - compiled
        k = starts.shape[0]
        total = x.shape[0]
        counts = np.empty(k, np.int64)
        means = np.empty(k, np.float64)
        m2 = np.empty(k, np.float64)
        mins = np.empty(k, np.float32)
        maxs = np.empty(k, np.float32)
        for i in range(k):
            a = starts[i]
            b = starts[i + 1] if i + 1 < k else total
            mean = 0.0
            acc = 0.0
            lo = x[a]
            hi = x[a]
            for j in range(a, b):  # Welford: one pass, stable
                v = x[j]
                d = v - mean
                mean += d / (j - a + 1)
                acc += d * (v - mean)
                lo = min(lo, v)
                hi = max(hi, v)
            counts[i] = b - a
            means[i] = mean
            m2[i] = acc
            mins[i] = lo
            maxs[i] = hi
        return counts, means, m2, mins, maxs

    _NUMBA_KERNEL.append(kernel)
    return kernel


def segment_stats_numba(
    x: npt.NDArray[np.float32], starts: npt.NDArray[np.int64]
) -> tuple[Any, ...]:
    """Same result as :func:`segment_stats_numpy`, one fused JIT-compiled pass."""
    return _numba_kernel()(np.ascontiguousarray(x, dtype=np.float32),
                           np.ascontiguousarray(starts, dtype=np.int64))


# ---------------------------------------------------------------------------- combining

_Columns = tuple[npt.NDArray[np.int64], npt.NDArray[Any], npt.NDArray[np.float64],
                 npt.NDArray[np.float64], npt.NDArray[np.float32], npt.NDArray[np.float32]]
"""Partial statistics as columns: (first_index, n, mean, M2, min, max), as in STATS_DTYPE.

The levels pass columns, not STATS_DTYPE rows: concatenating and reducing fields of a
structured array cost more per flush than the arithmetic on them (``bench/vs_pyjls.py``).
"""


def _empty_columns() -> _Columns:
    return (np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.float64),
            np.empty(0, np.float64), np.empty(0, np.float32), np.empty(0, np.float32))


def _concat_columns(parts: Sequence[_Columns]) -> _Columns:
    if len(parts) == 1:
        return parts[0]
    fi, n, mean, m2, lo, hi = (np.concatenate(col) for col in zip(*parts, strict=True))
    return fi, n, mean, m2, lo, hi


def _merge_groups(cols: _Columns, starts: npt.NDArray[np.int64], size: int) -> _Columns:
    """Merge each group ``cols[starts[i]:starts[i+1]]`` into one bucket (Chan's formula)."""
    fi, n_in, mean_in, m2_in, lo, hi = cols
    counts_per_group = np.diff(np.append(starts, fi.shape[0]))
    n = n_in.astype(np.float64)
    total = np.add.reduceat(n, starts)
    mean = np.add.reduceat(n * mean_in, starts) / total
    dev = mean_in - np.repeat(mean, counts_per_group)
    m2 = np.add.reduceat(m2_in + n * dev * dev, starts)
    return ((fi[starts] // size) * size, total, mean, m2,
            np.minimum.reduceat(lo, starts), np.maximum.reduceat(hi, starts))


class _Combiner:
    """One level: merges rows of the same bucket, emits a bucket once a later one starts."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pending: _Columns = _empty_columns()

    def feed(self, cols: _Columns) -> _Columns:
        if cols[0].shape[0] == 0:
            return cols
        if self.pending[0].shape[0]:
            cols = _concat_columns((self.pending, cols))
        bucket = cols[0] // self.size
        change = np.flatnonzero(bucket[1:] != bucket[:-1]) + 1
        last = int(change[-1]) if change.shape[0] else 0
        fi, n, mean, m2, lo, hi = cols
        self.pending = (fi[last:].copy(), n[last:].copy(), mean[last:].copy(),
                        m2[last:].copy(), lo[last:].copy(), hi[last:].copy())
        if last == 0:
            return _empty_columns()
        starts = np.concatenate((np.zeros(1, np.int64), change[:-1]))
        return _merge_groups((fi[:last], n[:last], mean[:last], m2[:last], lo[:last], hi[:last]),
                             starts, self.size)

    def finish(self) -> _Columns:
        cols, self.pending = self.pending, _empty_columns()
        if cols[0].shape[0] == 0:
            return cols
        return _merge_groups(cols, np.zeros(1, dtype=np.int64), self.size)


def _summary_rows(cols: _Columns) -> np.ndarray:
    """Columns -> SUMMARY rows (std = sqrt(M2 / n))."""
    fi, n, mean, m2, lo, hi = cols
    out = np.empty(fi.shape[0], dtype=SUMMARY_DTYPE)
    out["first_index"] = fi
    out["n"] = n
    out["mean"] = mean
    with np.errstate(invalid="ignore", divide="ignore"):
        out["std"] = np.sqrt(np.maximum(m2, 0.0) / n)
    out["min"] = lo
    out["max"] = hi
    return out


def to_summary(stats: np.ndarray) -> np.ndarray:
    """STATS rows -> SUMMARY rows (std = sqrt(M2 / n))."""
    return _summary_rows((stats["first_index"], stats["n"], stats["mean"], stats["m2"],
                          stats["min"], stats["max"]))


@dataclass(frozen=True, slots=True)
class Level:
    """One zoom level."""

    name: str
    """``"1ms"``, ``"10ms"``, ... (as requested, also the dataset name)."""
    requested_s: float
    samples: int
    """Samples per bucket (a multiple of the level below)."""
    seconds: float
    """Actual bucket duration: ``samples / sample_rate_hz``."""


class MultiLevelSummary:
    """Incremental summaries of one power stream at several levels (see module docstring)."""

    def __init__(
        self,
        sample_rate_hz: float,
        levels_s: Sequence[float] = DEFAULT_LEVELS_S,
        *,
        backend: Backend = "numpy",
    ) -> None:
        if sample_rate_hz <= 0:
            raise ConfigError(f"sample rate must be positive, got {sample_rate_hz}")
        if not levels_s or list(levels_s) != sorted(set(levels_s)) or levels_s[0] <= 0:
            raise ConfigError(f"summary levels must be increasing and positive: {levels_s}")
        if backend not in ("numpy", "numba"):
            raise ConfigError(f"summary backend must be 'numpy' or 'numba', not {backend!r}")
        self.sample_rate_hz = float(sample_rate_hz)
        self.backend = backend
        self._kernel: SegmentKernel = (
            segment_stats_numba if backend == "numba" else segment_stats_numpy
        )
        levels: list[Level] = []
        below = 1
        for s in levels_s:
            want = max(1, round(s * sample_rate_hz))
            samples = max(below, below * round(want / below))
            levels.append(Level(level_name(s), float(s), samples, samples / sample_rate_hz))
            below = samples
        self.levels: tuple[Level, ...] = tuple(levels)
        self._combiners = [_Combiner(level.samples) for level in self.levels]
        self.samples_in = 0
        self.buckets_out = [0] * len(self.levels)
        self._staged: list[_Columns] = []

    def add_block(self, first_index: int, current_a: npt.ArrayLike) -> list[np.ndarray]:
        """Feed a block; return, per level, the buckets it completed (SUMMARY_DTYPE rows)."""
        self.stage_block(first_index, current_a)
        return self.drain()

    def stage_block(self, first_index: int, current_a: npt.ArrayLike) -> None:
        """Reduce a block to its finest buckets now; merge them into the levels at :meth:`drain`.

        The reduction is per sample, the merging per call: a writer that stores buckets at
        each flush anyway stages every block and drains once per flush (one merge of ~1000
        rows instead of ten merges of ~100).
        """
        x = np.ascontiguousarray(current_a, dtype=np.float32).reshape(-1)
        m = int(x.shape[0])
        if m == 0:
            return
        size = self.levels[0].samples
        first_index = int(first_index)
        b0 = (-first_index) % size
        starts = np.arange(b0, m, size, dtype=np.int64)
        if starts.shape[0] == 0 or starts[0] != 0:
            starts = np.concatenate((np.zeros(1, dtype=np.int64), starts))
        # The cuts are uniform by construction: no need for the numpy kernel to check them.
        stats = (_uniform_stats(x, int(starts[1]), size)
                 if self._kernel is segment_stats_numpy and starts.shape[0] >= 3
                 else self._kernel(x, starts))
        # Columns now, one table of rows per drain: filling a structured array field by field
        # costs more per block than the numbers in it.
        self._staged.append((first_index + starts, *stats))
        self.samples_in += m

    def drain(self) -> list[np.ndarray]:
        """Merge the staged blocks; return, per level, the buckets they completed."""
        return self._cascade(self._take_staged(), final=False)

    def finish(self) -> list[np.ndarray]:
        """Emit every partly filled bucket (end of stream); the summary can be fed again after."""
        return self._cascade(self._take_staged(), final=True)

    def _take_staged(self) -> _Columns:
        staged, self._staged = self._staged, []
        return _concat_columns(staged) if staged else _empty_columns()

    def _cascade(self, cols: _Columns, *, final: bool) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for i, combiner in enumerate(self._combiners):
            done = combiner.feed(cols)
            if final:
                done = _concat_columns((done, combiner.finish()))
            out.append(_summary_rows(done))
            self.buckets_out[i] += int(done[0].shape[0])
            cols = done
        return out

    def level_index(self, seconds_or_name: float | str) -> int:
        """The index of a level by name (``"10ms"``) or by requested seconds."""
        for i, level in enumerate(self.levels):
            if seconds_or_name in (level.name, level.requested_s):
                return i
        known = ", ".join(level.name for level in self.levels)
        raise ConfigError(f"no summary level {seconds_or_name!r}; levels are {known}")


class PowerSummaryRecorder:
    """Writes the summaries of every power block into the trace (a recorder extension).

    The trace writer must have been created with ``extra_tables=summary_tables(levels)``:
    HDF5 SWMR files get all their datasets before SWMR mode starts.
    """

    def __init__(
        self, writer: Any, levels_s: Sequence[float] = DEFAULT_LEVELS_S,
        *, backend: Backend = "numpy",
    ) -> None:
        self.writer = writer
        self.levels_s = tuple(levels_s)
        self.backend: Backend = backend
        self.summary: MultiLevelSummary | None = None

    def handle(self, record: Record) -> None:
        """Summarise power blocks; other records are ignored."""
        if not isinstance(record, PowerBlock):
            return
        if self.summary is None:
            self.summary = MultiLevelSummary(record.sample_rate_hz, self.levels_s,
                                             backend=self.backend)
        self.summary.stage_block(record.first_index, record.current_a)

    def _write(self, per_level: list[np.ndarray]) -> None:
        assert self.summary is not None
        for level, rows in zip(self.summary.levels, per_level, strict=True):
            if rows.shape[0]:
                self.writer.add_rows(f"/power/summary/{level.name}", rows)

    def flush(self) -> None:
        """Merge the blocks staged since the last flush and hand the buckets to the writer.

        The recorder calls this just before it flushes the writer, so the buckets reach the
        file at the same flush as the samples they summarise.
        """
        if self.summary is not None:
            self._write(self.summary.drain())

    def finish(self) -> None:
        """Write the partly filled last buckets and describe the levels in attributes."""
        if self.summary is None:
            return
        self._write(self.summary.finish())
        s = self.summary
        self.writer.set_attrs("/power/summary", {
            "sample_rate_hz": s.sample_rate_hz,
            "levels": ",".join(level.name for level in s.levels),
            "level_seconds": [level.seconds for level in s.levels],
            "samples_per_bucket": [level.samples for level in s.levels],
            "std": "population",
        })
