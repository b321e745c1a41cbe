"""The C heap of a long recording: give freed memory back, and say how much is in use.

glibc's allocator keeps the memory that Python frees in its arenas (above all in the arenas of
threads other than the main one), so the RSS of a recorder running for days creeps up although
nothing leaks. ``malloc_trim(0)`` hands the free pages back to the kernel; the recorder calls it
through :class:`HeapTrimmer` once a minute. ``mallinfo2`` gives the allocator's own account of
bytes in use and free, which tells a leak (in use grows) from fragmentation (free grows).

Both exist only in glibc (``mallinfo2`` since 2.33). They are looked up once; elsewhere (macOS,
musl, Windows) :func:`trim` and :func:`heap_bytes` return ``None`` and cost nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["HeapBytes", "HeapTrimmer", "heap_bytes", "trim"]


class _Mallinfo2(ctypes.Structure):
    """``struct mallinfo2`` (glibc >= 2.33): every field a ``size_t``."""

    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


@dataclass(frozen=True, slots=True)
class HeapBytes:
    """The C heap as glibc counts it (all arenas).

    Attributes:
        in_use: bytes handed out by malloc and not freed (arena chunks plus mmapped blocks).
        free: bytes free inside the arenas, kept by the allocator (what a trim can return).
    """

    in_use: int
    free: int


@functools.cache
def _libc() -> Any:
    """glibc, or None when this process runs on another C library (looked up once)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only (not musl, not macOS)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return libc


@functools.cache
def _mallinfo2() -> Any:
    libc = _libc()
    fn = getattr(libc, "mallinfo2", None) if libc is not None else None
    if fn is not None:
        fn.argtypes = []
        fn.restype = _Mallinfo2
    return fn


def trim() -> bool | None:
    """Return the free memory at the top of every heap and free pages inside them to the OS.

    Returns:
        glibc's answer (True when some memory was released), or None where there is no
        ``malloc_trim`` (not glibc).
    """
    libc = _libc()
    if libc is None:
        return None
    return bool(libc.malloc_trim(0))


def heap_bytes() -> HeapBytes | None:
    """Bytes in use and free in the C heap, or None where ``mallinfo2`` does not exist."""
    fn = _mallinfo2()
    if fn is None:
        return None
    info = fn()
    return HeapBytes(in_use=int(info.uordblks) + int(info.hblkhd), free=int(info.fordblks))


class HeapTrimmer:
    """Calls :func:`trim` at most once per ``interval_s`` (cheap to ask as often as wanted)."""

    def __init__(self, interval_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last = clock()
        self.trims = 0

    def maybe_trim(self) -> bool:
        """Trim when the interval has passed since the last one; True when it trimmed."""
        now = self._clock()
        if now - self._last < self.interval_s:
            return False
        self._last = now
        if trim() is None:
            return False
        self.trims += 1
        return True
