"""Raw link capture: round trip, truncation tolerance, and refusal of foreign files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import zstandard as zstd

import tinytelem
from tinytelem.errors import TraceError
from tinytelem.trace.raw import (
    DEVICE_TO_HOST,
    HOST_TO_DEVICE,
    MAGIC,
    RawCaptureReader,
    RawCaptureWriter,
    read_raw_capture,
)

RECORDS = [(0.5 * i, i % 2, bytes(range(i % 256)) * (1 + i // 256)) for i in range(600)]


def _write(path: Path, flush_every: int = 100) -> None:
    with RawCaptureWriter.create(path, {"url": "tcp://dev:1234", "baud": 921600}) as w:
        for i, (host_s, direction, data) in enumerate(RECORDS):
            w.write(host_s, direction, data)
            if i % flush_every == flush_every - 1:
                w.flush()
        assert w.records == len(RECORDS)
        assert w.bytes_in == sum(len(r[2]) for r in RECORDS)


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "cap.zst"
    _write(path)
    cap = read_raw_capture(path)
    assert cap.records == RECORDS
    assert not cap.truncated
    assert cap.header["url"] == "tcp://dev:1234" and cap.header["baud"] == 921600
    assert cap.header["tool_version"] == tinytelem.__version__ and "created" in cap.header
    assert path.stat().st_size < sum(len(r[2]) for r in RECORDS)  # it does compress


def test_content_matches_the_documented_format(tmp_path: Path) -> None:
    path = tmp_path / "cap.zst"
    with RawCaptureWriter.create(path, {"url": "x"}) as w:
        w.write(1.5, HOST_TO_DEVICE, b"\x01\x02")
        w.write(2.0, DEVICE_TO_HOST, b"")
    with path.open("rb") as fh:
        content = zstd.ZstdDecompressor().stream_reader(fh, read_across_frames=True).read()
    assert content.startswith(MAGIC)
    header_end = content.index(b"\n", len(MAGIC))
    assert json.loads(content[len(MAGIC) : header_end])["url"] == "x"
    body = content[header_end + 1 :]
    assert body == struct.pack("<dBI", 1.5, 1, 2) + b"\x01\x02" + struct.pack("<dBI", 2.0, 0, 0)


@pytest.mark.parametrize("cut", [1, 5, 13, 200, 1000])
def test_truncated_file_gives_complete_records_up_to_the_damage(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "cap.zst"
    _write(path)
    data = path.read_bytes()
    # Everything up to the 5th flush is in frames that end before the last 1/6 of the file.
    short = tmp_path / "short.zst"
    short.write_bytes(data[:-cut])
    cap = read_raw_capture(short)
    assert cap.truncated
    assert cap.records == RECORDS[: len(cap.records)]
    assert len(cap.records) >= 500


def test_a_record_cut_in_half_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "half.zst"
    cctx = zstd.ZstdCompressor()
    whole = struct.pack("<dBI", 1.0, 0, 3) + b"abc"
    half = struct.pack("<dBI", 2.0, 0, 10) + b"abc"
    path.write_bytes(cctx.compress(MAGIC + b'{"url": "u"}\n' + whole + half))
    reader = RawCaptureReader(path)
    assert list(reader) == [(1.0, 0, b"abc")]
    assert reader.truncated


def test_garbage_in_the_middle_stops_there(tmp_path: Path) -> None:
    path = tmp_path / "cap.zst"
    _write(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    cap = read_raw_capture(path)
    assert cap.truncated
    assert 0 < len(cap.records) < len(RECORDS)
    assert cap.records == RECORDS[: len(cap.records)]


def test_not_a_capture(tmp_path: Path) -> None:
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"hello, not zstd at all")
    with pytest.raises(TraceError, match="not a tinytelem raw capture"):
        read_raw_capture(plain)
    other = tmp_path / "other.zst"
    other.write_bytes(zstd.ZstdCompressor().compress(b"some other zstd content\n"))
    with pytest.raises(TraceError, match="not a tinytelem raw capture"):
        read_raw_capture(other)
    empty = tmp_path / "empty.zst"
    empty.write_bytes(b"")
    with pytest.raises(TraceError, match="not a tinytelem raw capture"):
        read_raw_capture(empty)
    with pytest.raises(TraceError, match="cannot open"):
        read_raw_capture(tmp_path / "missing.zst")


def test_damaged_header(tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.zst"
    bad_json.write_bytes(zstd.ZstdCompressor().compress(MAGIC + b"{nope\n"))
    with pytest.raises(TraceError, match="not JSON"):
        read_raw_capture(bad_json)
    no_newline = tmp_path / "nonl.zst"
    no_newline.write_bytes(zstd.ZstdCompressor().compress(MAGIC + b'{"url": '))
    with pytest.raises(TraceError, match="header is incomplete"):
        read_raw_capture(no_newline)


def test_writer_rules(tmp_path: Path) -> None:
    path = tmp_path / "cap.zst"
    path.write_bytes(b"precious")
    with pytest.raises(TraceError, match=r"exists.*overwrite"):
        RawCaptureWriter.create(path, {})
    assert path.read_bytes() == b"precious"
    w = RawCaptureWriter.create(path, {}, overwrite=True, flush_interval_s=5.0)
    with pytest.raises(TraceError, match="direction"):
        w.write(0.0, 3, b"x")
    w.write(0.0, 0, memoryview(b"xyz"))
    assert not w.maybe_flush()
    assert w.maybe_flush(now=1e12)
    w.close()
    w.close()  # idempotent
    with pytest.raises(TraceError, match="closed"):
        w.write(0.0, 0, b"x")
    with pytest.raises(TraceError, match="closed"):
        w.flush()
    assert read_raw_capture(path).records == [(0.0, 0, b"xyz")]
    with pytest.raises(TraceError, match="does not exist"):
        RawCaptureWriter.create(tmp_path / "no" / "cap.zst", {})
