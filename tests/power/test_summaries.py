"""Ring buffer and multi-level summaries: exact against numpy, gaps, trace round trip."""

from __future__ import annotations

import itertools
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinytelem.actors.recorder import TraceRecorder
from tinytelem.errors import ConfigError, TraceError
from tinytelem.live.ring import PowerRing
from tinytelem.power.summaries import (
    MultiLevelSummary,
    PowerSummaryRecorder,
    level_name,
    segment_stats_numba,
    segment_stats_numpy,
    summary_tables,
)
from tinytelem.records import PowerBlock
from tinytelem.trace.writer import TraceWriter


def _feed(s: MultiLevelSummary, x: np.ndarray, block: int, first: int = 0) -> list[np.ndarray]:
    out: list[list[np.ndarray]] = [[] for _ in s.levels]
    for i in range(0, len(x), block):
        for k, rows in enumerate(s.add_block(first + i, x[i : i + block])):
            out[k].append(rows)
    for k, rows in enumerate(s.finish()):
        out[k].append(rows)
    return [np.concatenate(parts) for parts in out]


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 30_000), block=st.integers(1, 7000), first=st.integers(0, 10**6))
def test_summaries_match_numpy_reference(n: int, block: int, first: int) -> None:
    x = np.random.default_rng(n).normal(0.1, 0.02, n).astype(np.float32)
    s = MultiLevelSummary(10_000.0)  # 1 ms = 10 samples ... 1 s = 10000
    levels = _feed(s, x, block, first)
    for level, rows in zip(s.levels, levels, strict=True):
        size = level.samples
        idx = np.arange(first, first + n)
        keys = idx // size
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        ref = np.split(x, starts[1:])
        assert rows["first_index"].tolist() == (keys[starts] * size).tolist()
        assert rows["n"].tolist() == [len(r) for r in ref]
        np.testing.assert_allclose(rows["mean"], [r.mean(dtype=np.float64) for r in ref],
                                   rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(rows["std"], [r.std(dtype=np.float64) for r in ref],
                                   rtol=1e-4, atol=1e-7)
        assert rows["min"].tolist() == [r.min() for r in ref]
        assert rows["max"].tolist() == [r.max() for r in ref]


def test_levels_and_gaps() -> None:
    s = MultiLevelSummary(1_000_000.0)
    assert [(lv.name, lv.samples) for lv in s.levels] == [
        ("1ms", 1000), ("10ms", 10_000), ("100ms", 100_000), ("1s", 1_000_000)]
    assert s.level_index("10ms") == 1 and s.level_index(1.0) == 3
    with pytest.raises(ConfigError, match="levels are"):
        s.level_index("3ms")
    # A gap inside a bucket makes it smaller; a bucket with no samples is never invented.
    x = np.ones(500, dtype=np.float32)
    s.add_block(0, x)
    first = s.add_block(2500, x)  # samples 500..2499 missing
    assert first[0]["n"].tolist() == [500]
    tail = s.finish()
    assert tail[0]["first_index"].tolist() == [2000]
    assert tail[0]["n"].tolist() == [500]
    assert tail[3]["n"].tolist() == [1000]
    # Odd rates: each level is a whole multiple of the one below.
    odd = MultiLevelSummary(3333.0)
    sizes = [lv.samples for lv in odd.levels]
    assert all(b % a == 0 for a, b in itertools.pairwise(sizes))
    assert level_name(0.0005) == "500us" and level_name(2.0) == "2s"
    with pytest.raises(ConfigError):
        MultiLevelSummary(0)
    with pytest.raises(ConfigError):
        MultiLevelSummary(1000, (0.01, 0.001))
    with pytest.raises(ConfigError):
        MultiLevelSummary(1000, backend="cuda")  # type: ignore[arg-type]
    assert [r.shape[0] for r in s.add_block(0, np.zeros(0, np.float32))] == [0, 0, 0, 0]


def test_numba_kernel_matches_numpy() -> None:
    x = np.random.default_rng(3).random(10_007).astype(np.float32)
    starts = np.array([0, 5, 1000, 1001, 9000], dtype=np.int64)
    for a, b in zip(segment_stats_numpy(x, starts), segment_stats_numba(x, starts),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9)
    fast = _feed(MultiLevelSummary(1000.0, backend="numba"), x, 999)
    slow = _feed(MultiLevelSummary(1000.0), x, 999)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_allclose(a["std"], b["std"], rtol=1e-5)


@pytest.mark.parametrize(("n", "starts"), [
    (10_000, list(range(0, 10_000, 1000))),            # aligned whole buckets
    (10_500, [0, 300, *range(1300, 10_500, 1000)]),   # partial head and tail
    (999, [0, 5, 15, 25]),                             # ends inside a bucket
    (100, [0, 7, 50]),                                 # uneven: the general path
    (100, [0, 10, 20, 35]),                            # uneven: the general path
])
def test_bucket_kernel_matches_a_float64_reference(n: int, starts: list[int]) -> None:
    x = np.random.default_rng(n).normal(0.05, 0.004, n).astype(np.float32)
    idx = np.asarray(starts, dtype=np.int64)
    counts, means, m2, mins, maxs = segment_stats_numpy(x, idx)
    parts = np.split(x.astype(np.float64), idx[1:])
    assert counts.tolist() == [p.size for p in parts]
    np.testing.assert_allclose(means, [p.mean() for p in parts], rtol=1e-12)
    np.testing.assert_allclose(m2, [((p - p.mean()) ** 2).sum() for p in parts], rtol=2e-6)
    assert mins.tolist() == [np.float32(p.min()) for p in parts]
    assert maxs.tolist() == [np.float32(p.max()) for p in parts]


def test_staged_blocks_drain_to_the_same_buckets() -> None:
    x = np.random.default_rng(9).normal(0.1, 0.01, 55_555).astype(np.float32)
    direct = _feed(MultiLevelSummary(10_000.0), x, 1234, first=77)
    staged = MultiLevelSummary(10_000.0)
    out: list[list[np.ndarray]] = [[] for _ in staged.levels]
    for i in range(0, x.size, 1234):
        staged.stage_block(77 + i, x[i : i + 1234])
        if (i // 1234) % 8 == 7:  # drained once per "flush"
            for k, rows in enumerate(staged.drain()):
                out[k].append(rows)
    for k, rows in enumerate(staged.finish()):
        out[k].append(rows)
    for a, b in zip(direct, (np.concatenate(p) for p in out), strict=True):
        assert np.array_equal(a, b)


def test_ring_push_pop_wrap_overflow_and_gaps() -> None:
    ring = PowerRing(10)
    assert ring.start_index is None and ring.end_index is None
    assert ring.push(100, np.arange(6)) == 0
    first, got = ring.pop(4)
    assert first == 100 and got.tolist() == [0, 1, 2, 3]
    assert ring.push(106, np.arange(6, 14)) == 0  # wraps around
    assert len(ring) == 10 and ring.start_index == 104 and ring.end_index == 114
    assert ring.push(114, np.arange(14, 17)) == 3  # oldest unread overwritten
    first, got = ring.pop()
    assert first == 107 and got.tolist() == list(range(7, 17))
    first, last = ring.latest(4)
    assert first == 113 and last.tolist() == [13, 14, 15, 16]  # peek does not consume
    assert ring.push(200, [1.0, 2.0]) == 0  # a gap: the run restarts at 200
    assert ring.latest(10)[0] == 200 and ring.latest(10)[1].tolist() == [1.0, 2.0]
    assert ring.push(202, np.arange(25)) == 2 + 15  # bigger than the ring: keeps the newest
    first, got = ring.pop()
    assert first == 217 and got.tolist() == list(range(15, 25))
    stats = ring.statistics()
    assert stats.overwritten == 3 + 2 + 15 and stats.discontinuities == 1
    assert stats.pushed == 6 + 8 + 3 + 2 + 25 and stats.popped == 4 + 10 + 10
    assert ring.push(227, []) == 0
    with pytest.raises(ConfigError):
        PowerRing(0)


def test_summaries_written_into_trace(tmp_path: Path) -> None:
    path = tmp_path / "t.h5"
    writer = TraceWriter.create(path, attrs={}, extra_tables=summary_tables())
    recorder = TraceRecorder(writer, extensions=[PowerSummaryRecorder(writer)])
    x = np.random.default_rng(0).normal(0.05, 0.001, 250_000).astype(np.float32)
    for i in range(0, len(x), 10_000):
        recorder.handle(PowerBlock(0.0, i, x[i : i + 10_000], 3.3, 100_000.0))
    recorder.finish()
    with pytest.raises(TraceError, match="extra_tables"):
        writer.add_rows("/nope", np.zeros(1))
    writer.close()
    with h5py.File(path, "r") as f:
        group = f["power/summary"]
        assert group.attrs["levels"] == "1ms,10ms,100ms,1s"
        assert list(group.attrs["samples_per_bucket"]) == [100, 1000, 10_000, 100_000]
        one_s = group["1s"][:]
        ten_ms = group["10ms"][:]
    assert one_s["n"].tolist() == [100_000, 100_000, 50_000]
    np.testing.assert_allclose(one_s["mean"][0], x[:100_000].mean(dtype=np.float64))
    assert ten_ms.shape == (250,)
    np.testing.assert_allclose(ten_ms["max"], x.reshape(250, -1).max(axis=1))
