"""What ``profile`` leaves in ``--out``: the documented names, and nothing empty after a failure.

Before: a failed ``profile`` left an empty ``--out`` directory (or a 0-byte trace.h5), and the
raw capture was ``raw.zst`` where docs/trace-format.md says ``*.ttraw.zst``.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import trio
from click.testing import CliRunner

from tinytelem.actors.supervisor import RunTimeout
from tinytelem.cli.main import cli
from tinytelem.errors import TinyTelemError
from tinytelem.session.options import ProfileOptions
from tinytelem.session.profile import (
    RAW_NAME,
    SUMMARY_NAME,
    TRACE_NAME,
    remove_empty_outputs,
    run_profile,
)
from tinytelem.session.record import raw_path_for
from tinytelem.trace.raw import RawCaptureWriter
from tinytelem.trace.schema import EVENT_DTYPE
from tinytelem.trace.writer import TraceWriter

ROOT = Path(__file__).resolve().parents[2]


def test_raw_capture_name_matches_the_docs() -> None:
    assert RAW_NAME.endswith(".ttraw.zst")
    assert raw_path_for(Path("runs/a.h5")) == Path("runs/a.ttraw.zst")
    documented = (ROOT / "docs" / "trace-format.md").read_text(encoding="utf-8")
    assert "(`*.ttraw.zst`)" in documented
    for doc in (ROOT / "README.md", ROOT / "docs" / "quickstart.md", ROOT / "scripts" / "demo.sh"):
        text = doc.read_text(encoding="utf-8")
        assert not re.search(r"(?<!tt)raw\.zst", text), f"{doc.name} names the old raw.zst"
        assert RAW_NAME in text, doc.name


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_failed_profile_removes_the_out_dir_it_created(tmp_path: Path) -> None:
    out = tmp_path / "new" / "run"
    options = ProfileOptions(device=f"tcp://127.0.0.1:{_closed_port()}", out_dir=out,
                             sensor="none", n_tokens=2)
    with pytest.raises(TinyTelemError):
        trio.run(run_profile, options)
    assert not out.exists()


def test_failed_profile_keeps_an_out_dir_that_existed(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    options = ProfileOptions(device=f"tcp://127.0.0.1:{_closed_port()}", out_dir=out,
                             sensor="none", n_tokens=2)
    with pytest.raises(TinyTelemError):
        trio.run(run_profile, options)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_remove_empty_outputs_keeps_what_holds_data(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    trace, summary, raw = out / TRACE_NAME, out / SUMMARY_NAME, out / RAW_NAME
    with TraceWriter.create(trace, attrs={}) as w:
        w.add_events(np.zeros(3, dtype=EVENT_DTYPE))
    RawCaptureWriter.create(raw, header={"url": "x"}).close()  # header only: no link bytes
    assert remove_empty_outputs(out, (trace, summary, raw), created_dir=True) == [raw]
    assert trace.is_file() and out.is_dir()

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / TRACE_NAME).write_bytes(b"")  # what a failed create leaves on a full disk
    with TraceWriter.create(empty / "header-only.h5", attrs={}):
        pass
    paths = (empty / TRACE_NAME, empty / "header-only.h5", empty / RAW_NAME)
    remove_empty_outputs(empty, paths, created_dir=True)
    assert not empty.exists()


@pytest.mark.slow
def test_power_store_stats_keeps_statistics_and_the_energy(tmp_path: Path) -> None:
    import h5py

    energy = {}
    for store in ("all", "stats"):
        out = tmp_path / store
        result = CliRunner().invoke(cli, ["profile", "--device", "emu:stm32f4", "--tokens", "4",
                                          "--power-store", store, "--out", str(out), "--json"])
        assert result.exit_code == 0, result.output
        summary = json.loads(result.output)
        energy[store] = summary["power"]["energy_j"]
        with h5py.File(out / TRACE_NAME, "r") as f:
            power = f["power"]
            assert power.attrs["store"] == store
            assert power["summary/1ms"].shape[0] > 0  # min/mean/max per ms either way
            if store == "stats":
                assert power["current_a"].shape[0] == 0
                assert power.attrs["n_received"] == power["blocks"]["n"].sum() > 0
                assert any("statistics only" in w for w in summary["warnings"])
            else:
                assert power["current_a"].shape[0] == power["blocks"]["n"].sum()
    # The twin runs the same inference; energy from 1 ms means matches energy from samples.
    assert energy["stats"] == pytest.approx(energy["all"], rel=0.02)


def test_replay_reads_a_capture_under_the_old_name(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["profile", "--device", "emu:stm32f4", "--tokens", "4",
                                      "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted([TRACE_NAME, SUMMARY_NAME, RAW_NAME])
    old = tmp_path / "raw.zst"
    shutil.copy(out / RAW_NAME, old)
    replayed = CliRunner().invoke(cli, ["trace", "replay", str(old), "--out",
                                        str(tmp_path / "again.h5"), "--json"])
    assert replayed.exit_code == 0, replayed.output


def test_run_timeout_is_a_typed_error_and_the_trace_keeps_what_arrived(tmp_path: Path) -> None:
    """Before: a run slower than the timeout ended with a raw TooSlowError traceback group,
    and the tokens still queued for the recorder were lost with the cancelled session."""
    import h5py

    out = tmp_path / "slow"
    result = CliRunner().invoke(cli, ["profile", "--device", "emu:rp2040", "--tokens", "300",
                                      "--run-timeout", "0.5", "--out", str(out)])
    # A typed error: the console entry point prints it as one line and exits 1.
    assert isinstance(result.exception, RunTimeout), result.exception
    text = str(result.exception)
    assert "did not end within 0.5 s" in text and "--run-timeout" in text
    replayed = tmp_path / "replay.h5"
    again = CliRunner().invoke(cli, ["trace", "replay", str(out / RAW_NAME), "--out",
                                     str(replayed)])
    assert again.exit_code == 0, again.output
    with h5py.File(out / TRACE_NAME, "r") as f, h5py.File(replayed, "r") as g:
        tokens = f["tokens"][:]
        assert tokens.size >= 1
        assert tokens["index"].tolist() == g["tokens"][:]["index"].tolist()
        assert "did not end within" in f["session"].attrs["error"]
        assert bool(f["session"].attrs["stopped_early"])
