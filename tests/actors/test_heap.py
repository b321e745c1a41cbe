"""actors.heap: malloc_trim and mallinfo2 on glibc, None elsewhere, and the trimmer's pacing."""

from __future__ import annotations

import platform

import pytest

from tinytelem.actors import heap
from tinytelem.actors.heap import HeapBytes, HeapTrimmer

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
needs_glibc = pytest.mark.skipif(not GLIBC, reason="malloc_trim / mallinfo2 are glibc's")


@needs_glibc
def test_trim_answers_with_a_bool_on_glibc() -> None:
    blocks = [bytes(1000) for _ in range(20_000)]
    del blocks
    assert isinstance(heap.trim(), bool)
    assert isinstance(heap.trim(), bool)


@needs_glibc
def test_heap_bytes_are_positive_and_in_use_follows_allocations() -> None:
    before = heap.heap_bytes()
    assert isinstance(before, HeapBytes)
    assert before.in_use > 0 and before.free >= 0
    # 1000-byte objects bypass Python's small-object allocator: 20 MB of small malloc chunks.
    blocks = [bytes(1000) for _ in range(20_000)]
    during = heap.heap_bytes()
    assert during is not None
    assert during.in_use - before.in_use > 15_000_000
    big = bytearray(8_000_000)  # one mmapped block counts too
    with_big = heap.heap_bytes()
    assert with_big is not None and with_big.in_use - during.in_use >= 8_000_000
    del blocks, big
    after = heap.heap_bytes()
    assert after is not None and after.in_use < during.in_use - 15_000_000


def test_without_glibc_both_are_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_libc", lambda: None)
    monkeypatch.setattr(heap, "_mallinfo2", lambda: None)
    assert heap.trim() is None
    assert heap.heap_bytes() is None
    trimmer = HeapTrimmer(interval_s=0.0)
    assert trimmer.maybe_trim() is False and trimmer.trims == 0


def test_trimmer_trims_once_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(heap, "trim", lambda: calls.append(1) or True)
    now = [100.0]
    trimmer = HeapTrimmer(interval_s=60.0, clock=lambda: now[0])
    assert not trimmer.maybe_trim()
    now[0] = 159.9
    assert not trimmer.maybe_trim()
    now[0] = 160.0
    assert trimmer.maybe_trim()
    assert not trimmer.maybe_trim()
    now[0] = 219.0
    assert not trimmer.maybe_trim()
    now[0] = 221.0
    assert trimmer.maybe_trim()
    assert len(calls) == 2 and trimmer.trims == 2
