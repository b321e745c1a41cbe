"""A trace names its own codes and fills the groups the docs describe (schema version 2).

Before: ``op`` and ``type`` were bare numbers, ``/clock`` stayed empty although the docs said it
held the clock fit, and ``/session`` was undocumented.
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from tinytelem.protocol.enums import InferStatus, MsgType, Op, Phase
from tinytelem.session.core import write_summary
from tinytelem.trace.reader import open_trace
from tinytelem.trace.schema import (
    EVENT_DTYPE,
    RUN_DTYPE,
    SCHEMA_VERSION,
    SPAN_DTYPE,
    TABLES,
    TOKEN_DTYPE,
)
from tinytelem.trace.store import store_summary
from tinytelem.trace.writer import TraceWriter

ROOT = Path(__file__).resolve().parents[2]


def _write(path: Path) -> None:
    with TraceWriter.create(path, attrs={"platform": "x", "tick_hz": 1_000_000}) as w:
        spans = np.zeros(3, dtype=SPAN_DTYPE)
        spans["op"] = [Op.LAYER, Op.FFN, Op.SAMPLE]
        w.add_spans(spans)
        events = np.zeros(2, dtype=EVENT_DTYPE)
        events["type"] = [MsgType.HELLO, MsgType.TOKEN]
        w.add_events(events)
        tokens = np.zeros(2, dtype=TOKEN_DTYPE)
        tokens["phase"] = [Phase.PREFILL, Phase.DECODE]
        w.add_tokens(tokens)
        w.update_run(1, status=int(InferStatus.OK))
        w.update_run(2)  # never ended: -1


def test_coded_columns_are_enum_types(tmp_path: Path) -> None:
    path = tmp_path / "t.h5"
    _write(path)
    with h5py.File(path, "r") as f:
        assert f.attrs["schema_version"] == SCHEMA_VERSION == 2
        assert h5py.check_enum_dtype(f["spans"].dtype["op"])["FFN"] == 8
        assert h5py.check_enum_dtype(f["events"].dtype["type"])["TOKEN"] == 4
        assert h5py.check_enum_dtype(f["tokens"].dtype["phase"]) == {"PREFILL": 0, "DECODE": 1}
        status = h5py.check_enum_dtype(f["runs"].dtype["status"])
        assert status["NOT_ENDED"] == -1 and status["OK"] == 0
        assert f["spans"]["op"].tolist() == [0, 8, 11]
        assert f["runs"]["status"].tolist() == [0, -1]
        assert "session" in f  # created with the other groups
    with open_trace(path) as tr:  # the reader sees the same integers as before
        assert tr.spans.dtype == SPAN_DTYPE and tr.spans["op"].tolist() == [0, 8, 11]
        assert tr.runs.dtype == RUN_DTYPE


def test_version_1_trace_still_reads(tmp_path: Path) -> None:
    """A version-1 file: bare integer columns, ``tinytelem.trace/1``."""
    path = tmp_path / "v1.h5"
    with h5py.File(path, "w", libver=("v110", "v114")) as f:
        f.attrs["schema"] = "tinytelem.trace/1"
        f.attrs["schema_version"] = 1
        f.attrs["complete"] = True
        for dpath, dtype in TABLES.values():
            f.create_dataset(dpath, shape=(0,), maxshape=(None,), chunks=(64,), dtype=dtype)
        spans = np.zeros(2, dtype=SPAN_DTYPE)
        spans["op"] = [Op.QKV, Op.FFN]
        f["spans"].resize((2,))
        f["spans"][:] = spans
    with open_trace(path) as tr:
        assert tr.attrs["schema_version"] == 1
        assert tr.spans["op"].tolist() == [3, 8]
        assert tr.info()["rows"]["spans"] == 2


def test_clock_group_holds_the_fits(tmp_path: Path) -> None:
    path = tmp_path / "t.h5"
    with TraceWriter.create(path, attrs={}) as w:
        w.set_attrs("clock", {"alignment_method": "gpio", "alignment_offset_s": 0.5})
    summary = {"schema": "tinytelem.summary/1", "clock": {
        "device": {"method": "bracket-hull", "offset_s": -0.03, "drift_ppm": -204.0,
                   "residual_s": 2e-4, "error_bound_s": 4e-4, "n_points": 9},
        "sensor": {"method": "none", "offset_s": 0.0, "drift_ppm": 0.0, "residual_s": None,
                   "error_bound_s": None, "n_points": 0}}}
    store_summary(path, summary)
    store_summary(path, summary)  # storing again replaces, never piles up
    with open_trace(path) as tr:
        clock = tr.clock
    assert clock["device.method"] == "bracket-hull"
    assert clock["device.drift_ppm"] == -204.0 and clock["device.n_points"] == 9
    assert clock["sensor.method"] == "none" and clock["sensor.error_bound_s"] is None
    assert clock["alignment_method"] == "gpio"  # what the sensor alignment wrote stays


@pytest.mark.slow
def test_profiled_trace_has_clock_and_session(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tinytelem.cli.main import cli

    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["profile", "--device", "emu:rp2040", "--tokens", "3",
                                      "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = write_summary(out / "trace.h5")
    with h5py.File(out / "trace.h5", "r") as f:
        clock = dict(f["clock"].attrs)
        assert clock["device.method"] == summary["clock"]["device"]["method"] != "none"
        assert clock["sensor.drift_ppm"] == summary["clock"]["sensor"]["drift_ppm"]
        session = dict(f["session"].attrs)
        assert session["run_status"] == 0 and session["n_generated_seen"] == 3
        assert not session["stopped_early"] and not session["run_end_lost"]


def test_docs_describe_every_group_and_the_plain_example_is_plain() -> None:
    doc = (ROOT / "docs" / "trace-format.md").read_text(encoding="utf-8")
    for group in ("/clock", "/session", "/summary", "/power", "/link"):
        assert re.search(rf"^{group} ", doc, re.MULTILINE), group
    for attr in ("run_status", "stopped_early", "run_end_lost", "n_generated_seen",
                 "device.offset_s"):
        assert f"`{attr}`" in doc, attr
    section = doc[doc.index("## Reading a trace with plain h5py"):]
    example = section[section.index("```python"):]
    code = example.split("```")[1]
    assert not re.search(r"^\s*(import|from) tinytelem", code, re.MULTILINE)
    assert "import h5py" in code
