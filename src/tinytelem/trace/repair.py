"""Repair a trace whose recorder was killed: what ``h5clear -s`` does, then a check of the data.

A SWMR writer marks the superblock "open for (SWMR) write" while it runs and clears the mark on
close. A killed writer leaves the mark: the file then opens only with ``swmr=True`` (the
reader does that for you), and not at all in tools that do not ask for SWMR, or for update.
:func:`clear_consistency_flags` resets the mark the way ``h5clear -s`` does, without needing
the HDF5 command-line tools: the superblock (version 2 or 3, the only ones with these flags
and the ones SWMR files have) is rewritten with flags 0 and a fresh Jenkins lookup3 checksum.
Nothing else in the file changes, so the data is exactly what the last flush left.

:func:`repair_trace` does that and then checks what the file holds (:class:`RepairReport`):
every table readable to its end, power blocks consistent with the samples, tokens belonging
to known runs, and the time of the last row (which is where the last flush was).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinytelem.errors import TraceError
from tinytelem.trace._h5 import TraceNeedsRepair

__all__ = [
    "RepairReport", "TraceNeedsRepair", "clear_consistency_flags", "lookup3", "repair_trace",
    "superblock_flags",
]

SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MASK = 0xFFFFFFFF
LIVE_WINDOW_S = 2.0
"""A trace modified this recently may still have its recorder writing it (it flushes at least
every second): repair refuses it unless forced."""


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _MASK


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``: the checksum HDF5 puts on its metadata."""
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & _MASK
    i = 0
    while length > 12:
        a = (a + int.from_bytes(data[i:i + 4], "little")) & _MASK
        b = (b + int.from_bytes(data[i + 4:i + 8], "little")) & _MASK
        c = (c + int.from_bytes(data[i + 8:i + 12], "little")) & _MASK
        a = ((a - c) & _MASK) ^ _rot(c, 4)
        c = (c + b) & _MASK
        b = ((b - a) & _MASK) ^ _rot(a, 6)
        a = (a + c) & _MASK
        c = ((c - b) & _MASK) ^ _rot(b, 8)
        b = (b + a) & _MASK
        a = ((a - c) & _MASK) ^ _rot(c, 16)
        c = (c + b) & _MASK
        b = ((b - a) & _MASK) ^ _rot(a, 19)
        a = (a + c) & _MASK
        c = ((c - b) & _MASK) ^ _rot(b, 4)
        b = (b + a) & _MASK
        length -= 12
        i += 12
    if length == 0:
        return c
    tail = data[i:] + bytes(12 - length)
    a = (a + int.from_bytes(tail[0:4], "little")) & _MASK
    b = (b + int.from_bytes(tail[4:8], "little")) & _MASK
    c = (c + int.from_bytes(tail[8:12], "little")) & _MASK
    c = ((c ^ b) - _rot(b, 14)) & _MASK
    a = ((a ^ c) - _rot(c, 11)) & _MASK
    b = ((b ^ a) - _rot(a, 25)) & _MASK
    c = ((c ^ b) - _rot(b, 16)) & _MASK
    a = ((a ^ c) - _rot(c, 4)) & _MASK
    b = ((b ^ a) - _rot(a, 14)) & _MASK
    c = ((c ^ b) - _rot(b, 24)) & _MASK
    return c


@dataclass(frozen=True)
class _Superblock:
    base: int
    version: int
    flags: int
    size: int
    """Bytes covered by the checksum (the checksum follows them)."""


def _superblock(path: Path) -> _Superblock:
    """Find and parse the superblock (at 0, or after a user block at 512, 1024, 2048, ...)."""
    with path.open("rb") as fh:
        size = path.stat().st_size
        base = 0
        while base + 12 <= size:
            fh.seek(base)
            head = fh.read(12)
            if head[:8] == SIGNATURE:
                version, offsets, flags = head[8], head[9], head[11]
                return _Superblock(base, version, flags, 12 + 4 * offsets)
            base = 512 if base == 0 else base * 2
    raise TraceError(f"{path} is not an HDF5 file (no superblock signature); check the path")


def superblock_flags(path: str | os.PathLike[str]) -> int:
    """The superblock's file-consistency flags: 0 for a closed file; bit 0 "open for write",
    bit 2 "open for SWMR write" (left set by a killed writer)."""
    sb = _superblock(Path(path))
    return sb.flags if sb.version >= 2 else 0


def clear_consistency_flags(path: str | os.PathLike[str]) -> int:
    """Clear the superblock's file-consistency flags in place (``h5clear -s``); return them.

    Raises:
        TraceError: the superblock's checksum is wrong (the file is damaged where repair cannot
            help), or the file cannot be written.
    """
    path = Path(path)
    sb = _superblock(path)
    if sb.version < 2:
        return 0  # versions 0-1 keep no such flags (and SWMR files never use them)
    try:
        with path.open("r+b") as fh:
            fh.seek(sb.base)
            block = bytearray(fh.read(sb.size + 4))
            stored = int.from_bytes(block[sb.size:], "little")
            if lookup3(bytes(block[:sb.size])) != stored:
                raise TraceError(
                    f"{path}: the HDF5 superblock's checksum is wrong, so the file is damaged "
                    "beyond clearing its flags; re-decode the raw capture beside it with "
                    "'tinytelem trace replay'"
                )
            if sb.flags == 0:
                return 0
            block[11] = 0
            block[sb.size:] = lookup3(bytes(block[:sb.size])).to_bytes(4, "little")
            fh.seek(sb.base)
            fh.write(block)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise TraceError(f"cannot repair {path}: {exc.strerror}; check its permissions") from exc
    return sb.flags


@dataclass(frozen=True)
class RepairReport:
    """What :func:`repair_trace` did and found."""

    path: str
    flags_cleared: int
    """The consistency flags that were set (0: the file was already clean)."""
    complete: bool
    """The recorder closed the file (False: it was killed; data ends at its last flush)."""
    opens: bool
    """A plain ``h5py.File(path, "r")`` opens it now."""
    rows: Mapping[str, int]
    power_samples: int
    damaged: Mapping[str, int]
    """Datasets whose tail is unreadable -> rows readable before it."""
    last_host_s: float | None
    """The latest host time in any table: the data goes up to here (the last flush)."""
    problems: list[str] = field(default_factory=list)
    raw_capture: Mapping[str, Any] | None = None
    """The raw capture beside the trace: records and the host time it reaches."""

    @property
    def ok(self) -> bool:
        """The file opens and nothing inconsistent was found."""
        return self.opens and not self.problems

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``trace repair --json``)."""
        return {**asdict(self), "ok": self.ok}


def repair_trace(path: str | os.PathLike[str], *, force: bool = False) -> RepairReport:
    """Clear a killed recorder's consistency flags on ``path``, then check what it holds.

    Raises:
        TraceError: ``path`` is missing, not HDF5, modified within the last
            :data:`LIVE_WINDOW_S` (its recorder may still run; ``force`` skips that check),
            or damaged beyond clearing flags.
    """
    import h5py  # lazy: h5py costs 35 MB; only trace users pay

    from tinytelem.trace.reader import open_trace

    path = Path(path)
    if not path.is_file():
        raise TraceError(f"trace {path} does not exist (or is not a file); check the path")
    age = time.time() - path.stat().st_mtime
    if superblock_flags(path) and age < LIVE_WINDOW_S and not force:
        raise TraceError(
            f"{path} was written {age:.1f} s ago and is still flagged open: its recorder may "
            "still be running. Stop it first (Ctrl-C finishes the file), or pass --force if "
            "it is dead"
        )
    cleared = clear_consistency_flags(path)
    try:
        h5py.File(path, "r").close()
        opens = True
    except OSError:
        opens = False
    problems: list[str] = []
    with open_trace(path) as tr:
        info = tr.info()  # reads every row table, noting damaged tails
        rows = dict(info["rows"])
        n_samples = int(info["power"]["samples"])
        blocks, tokens, runs = tr.power_blocks, tr.tokens, tr.runs
        problems += _check_power(blocks, n_samples)
        if tokens.size and runs.size:
            unknown = sorted(set(np.unique(tokens["run_id"]).tolist())
                             - set(runs["run_id"].tolist()))
            if unknown:
                problems.append(f"tokens of runs {unknown} that the runs table lacks")
        if tokens.size > info["rows"]["events"]:
            problems.append("more tokens than events: the events table lost rows")
        damaged = dict(tr.damaged)
        last = _last_host_s(tr)
        complete = bool(tr.attrs.get("complete", False))
    if not opens:
        problems.append("a plain HDF5 open still fails after clearing the flags")
    for name, readable in damaged.items():
        problems.append(f"{name}: rows after {readable} are unreadable (written after the last "
                        "flush)")
    return RepairReport(str(path), cleared, complete, opens, rows, n_samples, damaged, last,
                        problems, _raw_beside(path))


def _check_power(blocks: np.ndarray, n_samples: int) -> list[str]:
    if not blocks.size:
        return []
    out = []
    offsets = blocks["offset"].astype(np.int64)
    counts = blocks["n"].astype(np.int64)
    expected = np.concatenate([[0], np.cumsum(counts)[:-1]]) + offsets[0]
    if offsets[0] != 0 or not np.array_equal(offsets, expected):
        out.append("power blocks are not back to back in /power/current_a")
    end = int(offsets[-1] + counts[-1])
    if end > n_samples:
        out.append(f"power blocks index {end} samples but /power/current_a holds {n_samples}")
    return out


def _last_host_s(tr: Any) -> float | None:
    last = -math.inf
    for name in ("events", "tokens", "pings", "power_blocks"):
        table = tr.table(name)
        column = "recv_host_s" if name == "pings" else "host_s"
        if table.size:
            values = table[column][np.isfinite(table[column])]
            if values.size:
                last = max(last, float(values.max()))
    return None if last == -math.inf else last


def _raw_beside(path: Path) -> dict[str, Any] | None:
    raw = path.with_suffix(".ttraw.zst")
    if not raw.is_file():
        return None
    from tinytelem.trace.raw import RawCaptureReader

    try:
        reader = RawCaptureReader(raw)
        records, last = 0, -math.inf
        for host_s, _direction, _data in reader:
            records += 1
            last = max(last, host_s)
    except TraceError as exc:
        return {"path": str(raw), "error": str(exc)}
    t0 = reader.header.get("host_t0")
    # Capture records carry host monotonic seconds; the trace counts from host_t0.
    last_s = None if not records else last - t0 if isinstance(t0, int | float) else last
    return {"path": str(raw), "records": records, "truncated": reader.truncated,
            "last_host_s": last_s}
