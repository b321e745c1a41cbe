"""Segment rotation: when segments switch, and that every row lands in exactly one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinytelem.errors import ConfigError
from tinytelem.session.rotate import (
    RotatingRaw,
    RotatingSink,
    Rotation,
    parse_rotate,
    segment_path,
    segment_paths,
)
from tinytelem.trace.raw import RawCaptureWriter, read_raw_capture
from tinytelem.trace.reader import open_trace
from tinytelem.trace.schema import EVENT_DTYPE
from tinytelem.trace.writer import TraceWriter


@pytest.mark.parametrize("text, rotation", [
    ("1h", Rotation(every_s=3600.0)), ("30m", Rotation(every_s=1800.0)),
    ("90s", Rotation(every_s=90.0)), ("1.5d", Rotation(every_s=129600.0)),
    ("2GB", Rotation(max_bytes=2 * 10**9)), ("500MB", Rotation(max_bytes=500 * 10**6)),
    ("1GiB", Rotation(max_bytes=2**30)),
])
def test_parse_rotate(text: str, rotation: Rotation) -> None:
    assert parse_rotate(text) == rotation


@pytest.mark.parametrize("text", ["", "1", "2 parsecs", "-1h", "0s", "h"])
def test_parse_rotate_refuses_with_the_forms(text: str) -> None:
    with pytest.raises(ConfigError, match="90s, 30m, 1h"):
        parse_rotate(text)


def test_segments_switch_on_time_and_keep_every_row_once(tmp_path: Path) -> None:
    now = [0.0]
    out = tmp_path / "rec.h5"
    ended: list[Path] = []

    def create(path: Path) -> TraceWriter:
        return TraceWriter.create(path, attrs={"host_t0": 0.0})

    def create_raw(path: Path) -> RawCaptureWriter:
        return RawCaptureWriter.create(path, {"url": "test"})

    raw = RotatingRaw(create_raw, tmp_path / "rec-0001.ttraw.zst")
    sink = RotatingSink(create, out, Rotation(every_s=10.0), raw=raw,
                        raw_path=lambda p: p.with_suffix(".ttraw.zst"),
                        on_segment_end=lambda w: ended.append(w.path), clock=lambda: now[0])
    for i in range(25):
        ev = np.zeros(1, EVENT_DTYPE)
        ev["host_s"] = float(i)
        sink.add_events(ev)
        sink.add_power(i * 100, np.full(100, i, dtype=np.float32), float(i))
        raw.write(float(i), 0, bytes([i]))
        now[0] = float(i + 1)
        sink.flush()
    sink.close()
    raw.close()
    assert sink.segments == [segment_path(out, k) for k in (1, 2, 3)]
    assert segment_paths(out) == sink.segments
    segment_path(out, 5).touch()  # after a hole: not part of this recording
    assert segment_paths(out) == sink.segments
    assert ended == sink.segments[:2]
    host_s: list[float] = []
    first_index: list[int] = []
    for path in sink.segments:
        with open_trace(path) as tr:
            assert tr.attrs["complete"]
            host_s += tr.events["host_s"].tolist()
            first_index += tr.power_blocks["first_index"].tolist()
            assert tr.power_gaps.size == 0  # a new segment does not see a gap
    assert host_s == [float(i) for i in range(25)]
    assert first_index == [i * 100 for i in range(25)]
    raw_bytes = [rec[2] for path in sink.segments
                 for rec in read_raw_capture(path.with_suffix(".ttraw.zst")).records]
    assert raw_bytes == [bytes([i]) for i in range(25)]


def test_segments_switch_on_size(tmp_path: Path) -> None:
    sink = RotatingSink(lambda p: TraceWriter.create(p, attrs={}), tmp_path / "big.h5",
                        Rotation(max_bytes=200_000))
    for i in range(20):
        sink.add_power(i * 20_000, np.zeros(20_000, dtype=np.float32), float(i))
        sink.flush()
    sink.close()
    assert len(sink.segments) >= 3
    for path in sink.segments[:-1]:
        assert path.stat().st_size >= 200_000


def test_a_switch_due_at_the_last_flush_opens_no_empty_segment(tmp_path: Path) -> None:
    """The recorder's final flush writes its last rows and attributes, then flushes: a switch
    due then waits for a next write that never comes, so the recording ends in the segment that
    holds them (an empty trailing segment hid the summary levels' description from readers)."""
    now = [0.0]
    sink = RotatingSink(lambda p: TraceWriter.create(p, attrs={}), tmp_path / "r.h5",
                        Rotation(every_s=10.0), clock=lambda: now[0])
    ev = np.zeros(1, EVENT_DTYPE)
    sink.add_events(ev)
    now[0] = 11.0
    sink.flush()
    assert sink.segments == [segment_path(tmp_path / "r.h5", 1)]
    sink.add_events(ev)  # a write after the due flush starts the next segment
    assert sink.segments == [segment_path(tmp_path / "r.h5", k) for k in (1, 2)]
    now[0] = 30.0
    sink.flush()  # due again, but nothing follows
    sink.close()
    assert segment_paths(tmp_path / "r.h5") == sink.segments
    with open_trace(sink.segments[-1]) as tr:
        assert tr.events.size == 1
