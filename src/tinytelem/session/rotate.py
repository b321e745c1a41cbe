"""Segment rotation for long recordings (``record --rotate 1h|2GB``).

A recording that never ends would otherwise grow one file without bound, and a file is only
marked complete (and given its summary) when it is closed. With rotation the recorder starts a
new trace segment, and a new raw capture beside it, once the current one is old or big enough:
``run.h5`` becomes ``run-0001.h5``, ``run-0002.h5``, ... (``run-0001.ttraw.zst``, ...). A
segment is switched at a flush, so every row goes to exactly one segment; each closed segment
is complete and carries the device's HELLO facts and the sensor's facts, so it reads on its own.
``host_s`` keeps counting from the recording's start in every segment (one ``host_t0``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinytelem.errors import ConfigError
from tinytelem.trace.reader import segment_path, segment_paths

__all__ = [
    "RotatingRaw", "RotatingSink", "Rotation", "parse_rotate", "segment_path", "segment_paths",
]

_UNITS_S = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_UNITS_B = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
            "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_ROTATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*$")


@dataclass(frozen=True)
class Rotation:
    """When to start a new segment: after ``every_s`` seconds, or at ``max_bytes`` (either)."""

    every_s: float | None = None
    max_bytes: int | None = None


def parse_rotate(text: str) -> Rotation:
    """``1h``, ``30m``, ``90s``, ``1d`` (time) or ``2GB``, ``500MB``, ``1GiB`` (size)."""
    match = _ROTATE_RE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or (unit not in _UNITS_S and unit not in _UNITS_B):
        raise ConfigError(f"--rotate {text!r}: give a time (90s, 30m, 1h, 1d) or a size "
                          "(500MB, 2GB, 1GiB)")
    value = float(match.group(1))
    if value <= 0:
        raise ConfigError(f"--rotate {text!r}: give a positive time (90s, 30m, 1h) or size (2GB)")
    if unit in _UNITS_S:
        return Rotation(every_s=value * _UNITS_S[unit])
    return Rotation(max_bytes=int(value * _UNITS_B[unit]))


class RotatingRaw:
    """The raw capture of the current segment, for the link actor (write / maybe_flush)."""

    def __init__(self, create: Callable[[Path], Any], path: Path) -> None:
        self._create = create
        self.current = create(path)

    def write(self, host_s: float, direction: int, data: bytes | bytearray | memoryview) -> None:
        self.current.write(host_s, direction, data)

    def maybe_flush(self, now: float | None = None) -> bool:
        return bool(self.current.maybe_flush(now))

    def flush(self) -> None:
        self.current.flush()

    def rotate(self, path: Path) -> None:
        """Close the current capture and continue in a new one at ``path``."""
        self.current.close()
        self.current = self._create(path)

    def close(self) -> None:
        self.current.close()


class RotatingSink:
    """A trace sink (what the recorder writes to) that switches segments at flushes.

    Args:
        create: makes the trace writer of a segment path.
        out: the name the user gave; segments are :func:`segment_path` of it.
        rotation: when to switch.
        raw: the raw capture to switch at the same moment (None: no capture).
        raw_path: segment trace path -> its raw capture path.
        on_segment_end: called with a segment's writer just before it is closed (the session
            stores the HELLO and sensor facts there).
        segments: a list that receives every segment path as it is created.
    """

    def __init__(
        self,
        create: Callable[[Path], Any],
        out: Path,
        rotation: Rotation,
        *,
        raw: RotatingRaw | None = None,
        raw_path: Callable[[Path], Path] | None = None,
        on_segment_end: Callable[[Any], None] | None = None,
        segments: list[Path] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._create = create
        self.out = out
        self.rotation = rotation
        self.raw = raw
        self._raw_path = raw_path
        self._on_segment_end = on_segment_end
        self._clock = clock
        self.segments = segments if segments is not None else []
        self.index = 1
        self.path = segment_path(out, 1)
        self.writer = create(self.path)
        self.segments.append(self.path)
        self._started = clock()
        self._switch_pending = False

    # The recorder's TraceSink calls, forwarded to the current segment.
    def add_events(self, rows: np.ndarray) -> None:
        self._current().add_events(rows)

    def add_tokens(self, rows: np.ndarray) -> None:
        self._current().add_tokens(rows)

    def add_spans(self, rows: np.ndarray) -> None:
        self._current().add_spans(rows)

    def add_memory(self, rows: np.ndarray) -> None:
        self._current().add_memory(rows)

    def add_pings(self, rows: np.ndarray) -> None:
        self._current().add_pings(rows)

    def add_runs(self, rows: np.ndarray) -> None:
        self._current().add_runs(rows)

    def add_power(self, first_index: int, current_a: np.ndarray, host_s: float) -> None:
        self._current().add_power(first_index, current_a, host_s)

    def add_power_gap(self, first_index: int, n_missing: int, host_s: float) -> None:
        self._current().add_power_gap(first_index, n_missing, host_s)

    def add_link_gap(self, lost_host_s: float, restored_host_s: float) -> None:
        self._current().add_link_gap(lost_host_s, restored_host_s)

    def add_text(self, table: Any, host_s: float, device_s: float, code: int, text: str) -> None:
        self._current().add_text(table, host_s, device_s, code, text)

    def add_rows(self, dpath: str, rows: np.ndarray) -> None:
        self._current().add_rows(dpath, rows)

    def set_attrs(self, group: str, attrs: dict[str, Any]) -> None:
        self._current().set_attrs(group, attrs)

    def flush(self) -> None:
        """Flush the current segment; when a switch is due, the next write starts the next
        segment (not this flush: the recorder's final flush must not leave an empty segment
        behind the one that got the recording's last rows and attributes)."""
        self.writer.flush()
        if self._due():
            self._switch_pending = True

    def _current(self) -> Any:
        """The writer of the segment the next rows go to (switching first when due)."""
        if self._switch_pending:
            self.rotate()
        return self.writer

    def _due(self) -> bool:
        r = self.rotation
        if r.every_s is not None and self._clock() - self._started >= r.every_s:
            return True
        return r.max_bytes is not None and self.path.stat().st_size >= r.max_bytes

    def rotate(self) -> None:
        """Close the current segment (and raw capture) and continue in the next."""
        self._switch_pending = False
        if self._on_segment_end is not None:
            self._on_segment_end(self.writer)
        self.writer.close()
        self.index += 1
        self.path = segment_path(self.out, self.index)
        self.writer = self._create(self.path)
        self.segments.append(self.path)
        if self.raw is not None and self._raw_path is not None:
            self.raw.rotate(self._raw_path(self.path))
        self._started = self._clock()

    def close(self) -> None:
        self.writer.close()

    @property
    def closed(self) -> bool:
        return bool(self.writer.closed)
