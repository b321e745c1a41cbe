"""``trace repair``: clear a killed writer's consistency flags, then check the file."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from tests.trace.test_crash import TRACE_CHILD, _run_and_kill
from tinytelem.cli.main import cli
from tinytelem.errors import TraceError
from tinytelem.trace import reader
from tinytelem.trace.repair import (
    TraceNeedsRepair,
    clear_consistency_flags,
    lookup3,
    repair_trace,
    superblock_flags,
)
from tinytelem.trace.store import LIBVER, store_summary

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    path = tmp_path_factory.mktemp("killed") / "killed.h5"
    n_events, n_samples = _run_and_kill(TRACE_CHILD, path)
    return path, n_events, n_samples


def _copy(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes())
    os.utime(dst, (0, 0))  # an old file: its writer is long gone
    return dst


def test_lookup3_matches_the_checksum_hdf5_writes(tmp_path: Path) -> None:
    assert lookup3(b"") == 0xDEADBEEF
    path = tmp_path / "clean.h5"
    h5py.File(path, "w", libver=LIBVER).close()
    head = path.read_bytes()[:48]
    assert head[8] == 3  # superblock version 3
    assert lookup3(head[:44]) == int.from_bytes(head[44:48], "little")
    assert superblock_flags(path) == 0
    assert clear_consistency_flags(path) == 0
    assert path.read_bytes()[:48] == head  # a clean file is left as it was


def test_repair_makes_a_killed_trace_open_in_plain_h5py(
    killed: tuple[Path, int, int], tmp_path: Path
) -> None:
    src, n_events, n_samples = killed
    path = _copy(src, tmp_path / "t.h5")
    assert superblock_flags(path) & 1
    with pytest.raises(OSError, match="consistency flags"):
        h5py.File(path, "r")
    report = repair_trace(path)
    assert report.flags_cleared & 1 and report.opens and report.ok, report
    assert report.complete is False
    assert report.rows["events"] >= n_events and report.power_samples >= n_samples
    assert report.last_host_s is not None and report.last_host_s >= n_events - 1
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["events"]["host_s"][:n_events], np.arange(n_events))
    again = repair_trace(path)
    assert again.flags_cleared == 0 and again.ok


def test_repair_refuses_a_file_written_just_now(killed: tuple[Path, int, int],
                                               tmp_path: Path) -> None:
    path = tmp_path / "fresh.h5"
    path.write_bytes(killed[0].read_bytes())
    with pytest.raises(TraceError, match="--force"):
        repair_trace(path)
    assert repair_trace(path, force=True).opens


def test_cli_repair_json(killed: tuple[Path, int, int], tmp_path: Path) -> None:
    path = _copy(killed[0], tmp_path / "c.h5")
    result = CliRunner().invoke(cli, ["trace", "repair", str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["ok"] and data["flags_cleared"] and data["raw_capture"] is None
    text = CliRunner().invoke(cli, ["trace", "repair", str(path)])
    assert text.exit_code == 0 and "already clear" in text.output


def test_info_on_a_killed_trace_names_repair(killed: tuple[Path, int, int]) -> None:
    result = CliRunner().invoke(cli, ["trace", "info", str(killed[0]), "--json"])
    assert result.exit_code == 0, result.output
    assert "tinytelem trace repair" in json.loads(result.output)["hint"]


def test_store_summary_on_a_killed_trace_names_repair(killed: tuple[Path, int, int],
                                                      tmp_path: Path) -> None:
    path = _copy(killed[0], tmp_path / "s.h5")
    with pytest.raises(TraceNeedsRepair, match=f"tinytelem trace repair {path}"):
        store_summary(path, {"x": 1})
    repair_trace(path)
    store_summary(path, {"x": 1})


def test_readers_name_repair_when_hdf5_refuses_the_flags(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "flagged.h5"
    path.write_bytes(b"x")

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("Unable to synchronously open file (file is already open for write "
                      "(may use <h5clear file> to clear file consistency flags))")

    monkeypatch.setattr(h5py, "File", refuse)
    with pytest.raises(TraceNeedsRepair, match="tinytelem trace repair"):
        reader.open_trace(path)
    result = CliRunner().invoke(cli, ["trace", "info", str(path)])
    assert isinstance(result.exception, TraceNeedsRepair)
