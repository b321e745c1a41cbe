"""TraceWriter -> open_trace round trips, format properties, and error translation."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

import tinytelem
from tinytelem.errors import TraceError
from tinytelem.trace.reader import open_trace
from tinytelem.trace.schema import (
    EVENT_DTYPE,
    MEMORY_DTYPE,
    PING_DTYPE,
    RUN_DTYPE,
    SCHEMA,
    SCHEMA_VERSION,
    SPAN_DTYPE,
    TABLES,
    TOKEN_DTYPE,
)
from tinytelem.trace.writer import TraceWriter

ATTRS = {"platform": "stm32h7", "device": "emu:stm32h7", "tick_hz": 25_000_000, "cpu_hz": 4.8e8}


def _rows(dtype: np.dtype[Any], n: int, seed: int = 0) -> np.ndarray:
    """Deterministic rows where every field differs from row to row."""
    rng = np.random.default_rng(seed)
    out = np.zeros(n, dtype=dtype)
    for name in dtype.names or ():
        kind = dtype[name].kind
        if kind == "f":
            out[name] = rng.random(n) * 100
        else:
            out[name] = rng.integers(0, 120, n)
    return out


def _write_full(path: Path) -> dict[str, np.ndarray]:
    data = {
        "events": _rows(EVENT_DTYPE, 5000, 1),
        "tokens": _rows(TOKEN_DTYPE, 300, 2),
        "spans": _rows(SPAN_DTYPE, 9000, 3),
        "memory": _rows(MEMORY_DTYPE, 50, 4),
        "pings": _rows(PING_DTYPE, 7, 5),
        "runs": _rows(RUN_DTYPE, 3, 6),
    }
    data["runs"]["run_id"] = [2, 0, 1]
    with TraceWriter.create(path, attrs={**ATTRS, "extra": {"a": [1, "x"]}}) as w:
        w.add_events(data["events"][:100])
        w.add_events(data["events"][100:])
        w.add_tokens(data["tokens"])
        w.add_spans(data["spans"])
        w.add_memory(data["memory"])
        w.add_pings(data["pings"])
        w.add_runs(data["runs"])
        w.add_power(0, np.arange(1000, dtype=np.float32), host_s=1.0)
        w.add_power_gap(1000, 10, host_s=1.5)
        w.add_power(1010, np.ones(500, dtype=np.float32), host_s=2.0)
        w.add_link_gap(3.0)
        w.add_link_gap(3.0, 4.5)
        w.add_link_gap(7.0)
        w.add_text("errors", 1.25, math.nan, 3, "crc mismatch")
        w.add_text("logs", 2.5, 0.75, 1, "héllo ✓")
        w.set_attrs("link", {"frames": 123, "url": "emu:stm32h7", "drops": [0, 1]})
        w.set_attrs("clock", {"offset_s": 0.25, "drift_ppm": -3.5, "fit": None})
        w.set_summary({"energy": {"total_j": 1.5, "per_token_j": 0.01}, "name": "x", "ok": True})
    return data


def test_round_trip_every_table_and_attr(tmp_path: Path) -> None:
    path = tmp_path / "t.h5"
    data = _write_full(path)
    with open_trace(path) as tr:
        assert not tr.opened_swmr
        for name in ("events", "tokens", "spans", "memory", "pings"):
            np.testing.assert_array_equal(tr.table(name), data[name])
        np.testing.assert_array_equal(tr.runs["run_id"], [0, 1, 2])
        np.testing.assert_array_equal(np.sort(tr.runs, order="run_id"), tr.runs)
        assert tr.events.dtype == EVENT_DTYPE
        assert tr.tokens.shape == (300,) and tr.spans.shape == (9000,)
        assert tr.memory.shape == (50,) and tr.pings.shape == (7,)
        assert tr.attrs["schema"] == SCHEMA
        assert tr.attrs["schema_version"] == SCHEMA_VERSION == 2
        assert tr.attrs["tool_version"] == tinytelem.__version__
        assert tr.attrs["created"].endswith("+00:00")
        assert tr.attrs["complete"] is True
        assert isinstance(tr.attrs["host_t0"], float)
        assert tr.attrs["platform"] == "stm32h7" and tr.attrs["tick_hz"] == 25_000_000
        assert tr.attrs["extra"] == {"a": [1, "x"]}
        samples = tr.power_samples()
        assert samples.dtype == np.float32 and samples.shape == (1500,)
        np.testing.assert_array_equal(samples[:1000], np.arange(1000))
        np.testing.assert_array_equal(tr.power_samples(999, 1001), [999.0, 1.0])
        assert tr.n_power_samples == 1500
        assert tr.power_blocks.tolist() == [(0, 1000, 1.0, 0), (1010, 500, 2.0, 1000)]
        assert tr.power_gaps.tolist() == [(1000, 10, 1.5)]
        gaps = tr.link_gaps
        assert gaps["lost_host_s"].tolist() == [3.0, 7.0]
        assert gaps["restored_host_s"][0] == 4.5 and math.isnan(gaps["restored_host_s"][1])
        assert tr.errors["text"].tolist() == ["crc mismatch"]
        assert tr.errors["code"].tolist() == [3] and math.isnan(tr.errors["device_s"][0])
        assert tr.logs["text"].tolist() == ["héllo ✓"]
        assert tr.link_stats["frames"] == 123 and tr.link_stats["url"] == "emu:stm32h7"
        assert tr.link_stats["drops"].tolist() == [0, 1]
        assert tr.clock == {"offset_s": 0.25, "drift_ppm": -3.5, "fit": None}
        assert tr.summary == {
            "energy": {"total_j": 1.5, "per_token_j": 0.01},
            "name": "x",
            "ok": True,
        }
        summary_attrs = tr.group_attrs("summary")
        assert summary_attrs["energy.total_j"] == 1.5 and "name" not in summary_attrs
        power = tr.group_attrs("power")
        assert power["n_samples"] == 1500 and power["n_missing"] == 10 and power["n_gaps"] == 1
        assert tr.group_attrs("/")["platform"] == "stm32h7"
        assert tr.group_attrs("nope") == {}
        info = tr.info()
    assert info["rows"]["events"] == 5000 and info["rows"]["runs"] == 3
    assert info["power"] == {
        "store": "all",
        "samples": 1500,
        "received": 1500,
        "blocks": 2,
        "gaps": 1,
        "missing_samples": 10,
        "first_index": 0,
        "end_index": 1510,
    }
    assert info["complete"] is True and info["platform"] == "stm32h7"
    assert info["file_bytes"] == path.stat().st_size
    assert info["storage_bytes"]["power_samples"] >= 1500 * 4
    expected_lo = min(
        float(data[n][f].min())
        for n, f in [
            ("events", "host_s"),
            ("tokens", "host_s"),
            ("pings", "send_host_s"),
            ("pings", "recv_host_s"),
        ]
    )
    assert info["duration_s"] > 0 and info["duration_s"] <= 100 - expected_lo
    json.dumps(info)  # the CLI prints it as JSON


def test_every_dataset_is_chunked_resizable_and_checksummed(tmp_path: Path) -> None:
    path = tmp_path / "t.h5"
    _write_full(path)
    seen: list[str] = []

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            seen.append(name)
            assert obj.fletcher32, name
            assert obj.chunks is not None and obj.maxshape == (None,), name
            assert obj.compression is None, name

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    assert len(seen) == len(TABLES) + 1


def _layout_versions(path: Path) -> dict[str, int]:
    """Parse each dataset's v2 object header and return its data-layout message version.

    HDF5 1.10-1.14 write layout message version 3 or 4; HDF5 2.0 with libver='latest' writes
    version 5 for filtered chunked datasets, which 1.10-era tools cannot read.
    """
    raw = path.read_bytes()
    out: dict[str, int] = {}

    def visit(name: str, obj: object) -> None:
        if not isinstance(obj, h5py.Dataset):
            return
        addr = h5py.h5o.get_info(obj.id).addr
        assert raw[addr : addr + 4] == b"OHDR", name
        flags = raw[addr + 5]
        pos = addr + 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
        size_len = 1 << (flags & 0x03)
        chunk_size = int.from_bytes(raw[pos : pos + size_len], "little")
        pos += size_len
        end = pos + chunk_size
        while pos + 4 <= end:
            mtype, msize, _mflags = struct.unpack_from("<BHB", raw, pos)
            pos += 4 + (2 if flags & 0x04 else 0)
            if mtype == 8:
                out[name] = raw[pos]
                return
            pos += msize
        raise AssertionError(f"no layout message in the first header chunk of {name}")

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


def test_file_uses_hdf5_1_10_compatible_structures(tmp_path: Path) -> None:
    path = tmp_path / "t.h5"
    _write_full(path)
    assert path.read_bytes()[8] <= 3  # superblock version 3 is HDF5 1.10's
    versions = _layout_versions(path)
    assert len(versions) == len(TABLES) + 1
    assert max(versions.values()) <= 4, versions


def test_layout_check_catches_libver_latest(tmp_path: Path) -> None:
    """The check above can fail: a 'latest' file carries HDF5 2.0 layout messages."""
    path = tmp_path / "latest.h5"
    with h5py.File(path, "w", libver="latest") as f:
        f.create_dataset(
            "x", shape=(0,), maxshape=(None,), chunks=(8,), dtype="<f4", fletcher32=True
        )
    if h5py.version.hdf5_version_tuple < (2, 0, 0):
        pytest.skip("HDF5 < 2.0 writes no layout v5")
    assert _layout_versions(path)["x"] == 5


def test_power_gap_detection_and_resets(tmp_path: Path) -> None:
    path = tmp_path / "p.h5"
    with TraceWriter.create(path, attrs={}) as w:
        w.add_power(100, np.zeros(10, np.float32), 0.1)  # first block: no gap before it
        w.add_power(110, np.zeros(10, np.float32), 0.2)  # contiguous
        w.add_power(125, np.zeros(5, np.float32), 0.3)  # 5 missing: 120..124
        w.add_power_gap(130, 20, 0.35)  # explicit drop
        w.add_power(150, np.zeros(5, np.float32), 0.4)  # after the explicit gap: contiguous
        w.add_power(0, np.zeros(5, np.float32), 0.5)  # sensor restarted
        w.add_power(7, np.zeros(1, np.float32), 0.6)  # 2 missing after the restart
        stats = w.statistics()
    assert stats.power_gaps == 3 and stats.power_missing == 27 and stats.power_samples == 36
    assert not stats.closed and stats.rows["power_blocks"] == 6
    assert w.statistics().closed and w.statistics().flushes >= 1
    with open_trace(path) as tr:
        assert tr.power_gaps.tolist() == [(120, 5, 0.3), (130, 20, 0.35), (5, 2, 0.6)]
        assert tr.power_blocks["offset"].tolist() == [0, 10, 20, 25, 30, 35]
        assert tr.group_attrs("power")["index_resets"] == 1
        assert tr.group_attrs("power")["units"] == "A"


def test_whole_chunks_are_written_and_partial_ones_wait_for_flush(tmp_path: Path) -> None:
    path = tmp_path / "c.h5"
    w = TraceWriter.create(path, attrs={}, power_chunk=1000, flush_interval_s=10.0)
    try:
        dset = w._file["/power/current_a"]
        w.add_power(0, np.zeros(600, np.float32), 0.0)
        assert dset.shape == (0,)  # buffered
        w.add_power(600, np.zeros(3000, np.float32), 0.0)
        assert dset.shape == (0,)  # 3 whole chunks: samples wait for 4
        w.add_power(3600, np.zeros(600, np.float32), 0.0)
        assert dset.shape == (4000,)  # 4 whole chunks in one write
        assert not w.maybe_flush()
        assert w.maybe_flush(now=w._last_flush + 10.0)
        assert dset.shape == (4200,)  # partial chunk out at flush time
        w.add_power(4200, np.zeros(3700, np.float32), 0.0)
        assert dset.shape == (4200,)  # 3 whole chunks from the partial one's start
        w.add_power(7900, np.zeros(200, np.float32), 0.0)
        assert dset.shape == (8000,)  # realigned to the chunk boundary
    finally:
        w.close()
    w.close()  # idempotent
    assert w.closed


def test_flushed_partial_chunk_is_rewritten_whole(tmp_path: Path) -> None:
    # After a flush the rows of the partly filled chunk stay in memory, so the next write
    # covers the chunk from its start (HDF5 never merges into a checksummed chunk), and every
    # sample still reads back in place however blocks and flushes interleave.
    path = tmp_path / "p.h5"
    rng = np.random.default_rng(5)
    x = rng.random(7_777, dtype=np.float32)
    pos = 0
    with TraceWriter.create(path, attrs={}, power_chunk=1000) as w:
        for i, size in enumerate(rng.integers(1, 900, 1000)):
            if pos >= x.size:
                break
            part = x[pos : pos + int(size)]
            w.add_power(pos, part, 0.0)
            pos += part.size
            if i % 3 == 0:
                w.flush()
                assert w._samples.written % 1000 == 0  # the tail waits for its chunk
                assert w._samples.rows == pos
        w.flush()
    with open_trace(path) as tr:
        assert np.array_equal(tr.power_samples(), x)
        assert tr.power_blocks["n"].sum() == x.size


def test_stats_store_keeps_blocks_but_no_samples(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    with TraceWriter.create(path, attrs={}, power_samples=False) as w:
        w.add_power(0, np.ones(500, np.float32), 0.1)
        w.add_power(700, np.ones(500, np.float32), 0.2)  # 200 missing: a gap row
        w.flush()
    with open_trace(path) as tr:
        assert tr.n_power_samples == 0
        assert tr.power_blocks["n"].tolist() == [500, 500]
        assert tr.power_gaps["n_missing"].tolist() == [200]
        power = tr.group_attrs("power")
        assert power["store"] == "stats" and power["n_received"] == 1000
        assert power["n_samples"] == 0
        assert tr.info()["power"]["store"] == "stats" and tr.info()["power"]["received"] == 1000


def test_update_run_and_rows_with_other_field_order(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    with TraceWriter.create(path, attrs={}) as w:
        w.update_run(5, n_prompt=3, begin_s=1.0)
        w.flush()
        w.update_run(5, n_generated=10, status=0, end_s=2.0)
        reordered = np.zeros(
            2, dtype=[(n, EVENT_DTYPE[n]) for n in reversed(EVENT_DTYPE.names or ())]
        )
        reordered["seq"] = [7, 8]
        w.add_events(reordered)
        with pytest.raises(TraceError, match="unknown runs fields"):
            w.update_run(5, bogus=1)
        with pytest.raises(TraceError, match="schema dtype"):
            w.add_tokens(np.zeros(3, dtype=[("x", "<f8")]))
        with pytest.raises(TraceError, match="errors' or 'logs"):
            w.add_text("nope", 0.0, 0.0, 0, "x")  # type: ignore[arg-type]
    with open_trace(path) as tr:
        run = tr.runs[0]
        assert (run["run_id"], run["n_prompt"], run["n_generated"], run["status"]) == (5, 3, 10, 0)
        assert (run["begin_s"], run["end_s"]) == (1.0, 2.0)
        assert tr.events["seq"].tolist() == [7, 8]


def test_closed_writer_refuses_work(tmp_path: Path) -> None:
    w = TraceWriter.create(tmp_path / "x.h5", attrs={})
    w.close()
    with pytest.raises(TraceError, match="closed"):
        w.add_events(np.zeros(1, EVENT_DTYPE))
    with pytest.raises(TraceError, match="closed"):
        w.flush()


def test_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "t.h5"
    path.write_bytes(b"precious")
    with pytest.raises(TraceError, match=r"already exists.*overwrite"):
        TraceWriter.create(path, attrs={})
    assert path.read_bytes() == b"precious"
    TraceWriter.create(path, attrs={}, overwrite=True).close()
    with open_trace(path) as tr:
        assert tr.events.shape == (0,) and tr.summary == {} and tr.info()["duration_s"] == 0.0


def test_create_in_missing_directory_names_the_remedy(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="does not exist; create it") as info:
        TraceWriter.create(tmp_path / "no" / "t.h5", attrs={})
    assert isinstance(info.value.__cause__, OSError)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="positive"):
        TraceWriter.create(tmp_path / "t.h5", attrs={}, power_chunk=0)


def test_non_hdf5_file_is_rejected_with_cause(tmp_path: Path) -> None:
    path = tmp_path / "junk.h5"
    path.write_bytes(b"this is not HDF5 at all" * 100)
    with pytest.raises(TraceError, match="not a tinytelem trace or is damaged") as info:
        open_trace(path)
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(TraceError, match="does not exist"):
        open_trace(tmp_path / "missing.h5")


def test_foreign_hdf5_and_newer_schema(tmp_path: Path) -> None:
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(TraceError, match="not a tinytelem trace"):
        open_trace(other)
    newer = tmp_path / "newer.h5"
    TraceWriter.create(newer, attrs={}).close()
    with h5py.File(newer, "r+") as f:
        f.attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(TraceError, match=r"newer tinytelem.*upgrade"):
        open_trace(newer)
    with h5py.File(newer, "r+") as f:
        f.attrs["schema_version"] = "one"
    with pytest.raises(TraceError, match="schema_version"):
        open_trace(newer)


def test_unknown_table_name(tmp_path: Path) -> None:
    TraceWriter.create(tmp_path / "t.h5", attrs={}).close()
    with open_trace(tmp_path / "t.h5") as tr, pytest.raises(TraceError, match="unknown trace"):
        tr.table("nope")


def test_attr_encoding_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "a.h5"
    values = {
        "flag": True,
        "n": 3,
        "x": 2.5,
        "s": "text",
        "arr": np.arange(3),
        "list": [1, 2.5],
        "none": None,
        "mixed": [1, "a"],
        "nested": {"k": [1, 2]},
        "empty": [],
        "blob": b"\x00\x01",
        "path": Path("/tmp/x"),
    }
    with TraceWriter.create(path, attrs={}) as w:
        w.set_attrs("clock", values)
        w.set_attrs("clock", {"none": 1.0})  # a JSON attr replaced by a native one
        w.set_attrs("/", {"site": "lab"})
    with open_trace(path) as tr:
        got = tr.clock
        assert tr.attrs["site"] == "lab"
    assert got["flag"] is True and got["n"] == 3 and got["x"] == 2.5 and got["s"] == "text"
    assert got["arr"].tolist() == [0, 1, 2] and got["list"].tolist() == [1.0, 2.5]
    assert got["none"] == 1.0 and got["mixed"] == [1, "a"] and got["nested"] == {"k": [1, 2]}
    assert got["empty"] == [] and got["blob"] == b"\x00\x01" and got["path"] == "/tmp/x"


@pytest.mark.parametrize(
    ("exc", "remedy"),
    [
        (OSError(28, "No space left on device"), "disk is full"),
        (OSError("Unable to create file (errno = 28, error message = 'x')"), "disk is full"),
        (PermissionError(13, "Permission denied"), "permission denied"),
        (FileExistsError(17, "File exists"), "pass overwrite=True"),
        (OSError("unable to lock file, errno = 11"), "HDF5_USE_FILE_LOCKING"),
        (OSError("something else"), "HDF5 message"),
    ],
)
def test_error_translation_names_the_remedy(exc: OSError, remedy: str) -> None:
    from tinytelem.trace._h5 import translate_error

    err = translate_error(exc, "/x/t.h5", "create")
    assert isinstance(err, TraceError)
    assert remedy in str(err) and "/x/t.h5" in str(err)


def test_store_summary_into_a_closed_trace(tmp_path: Path) -> None:
    from tinytelem.trace.store import store_summary

    path = tmp_path / "s.h5"
    with TraceWriter.create(path, attrs={}) as w:
        w.set_summary({"old": 1})
    store_summary(path, {"tokens_per_s": 12.5, "nested": {"n": 2}})
    with open_trace(path) as tr:
        assert tr.summary == {"tokens_per_s": 12.5, "nested": {"n": 2}}
        assert "old" not in tr.group_attrs("summary")
        assert tr.group_attrs("summary")["nested.n"] == 2
    with pytest.raises(TraceError, match="does not exist"):
        store_summary(tmp_path / "missing.h5", {})


def test_damaged_chunk_leaves_the_good_prefix_readable(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    with TraceWriter.create(path, attrs={}, power_chunk=1000) as w:
        events = np.zeros(3 * 4096, EVENT_DTYPE)
        events["host_s"] = np.arange(events.shape[0])
        w.add_events(events)
        w.add_power(0, np.arange(3000, dtype=np.float32), 0.0)
    with h5py.File(path, "r") as f:
        ev_off = f["events"].id.get_chunk_info(1).byte_offset
        pw_off = f["power/current_a"].id.get_chunk_info(2).byte_offset
    raw = bytearray(path.read_bytes())
    for off in (ev_off, pw_off):
        raw[off + 8 : off + 16] = b"\xab" * 8
    path.write_bytes(bytes(raw))
    with open_trace(path) as tr:
        got = tr.events
        np.testing.assert_array_equal(got["host_s"], np.arange(4096))
        assert tr.damaged == {"/events": 4096}
        np.testing.assert_array_equal(tr.power_samples(), np.arange(2000, dtype=np.float32))
        np.testing.assert_array_equal(tr.power_samples(10, 20), np.arange(10, 20))
        np.testing.assert_array_equal(tr.power_samples(2500, 2600), [])
        assert tr.damaged["/power/current_a"] == 2000
        assert tr.info()["damaged"]["/events"] == 4096
