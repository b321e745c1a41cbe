"""The spine's commands as users run them: subprocesses for profile and record, CliRunner else."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from click.testing import CliRunner

from tinytelem.cli.main import cli
from tinytelem.trace.reader import open_trace

pytestmark = pytest.mark.slow

TINYTELEM = [sys.executable, "-c", "from tinytelem.cli.main import main; main()"]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TINYTELEM, *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    proc = run_cli("profile", "--device", "emu:stm32f4", "--tokens", "16", "--out", str(out),
                   "--overwrite", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["tokens"]["generated"] == 16
    assert summary["platform"] == "stm32f4"
    return out


def test_profile_writes_the_three_files(profiled: Path) -> None:
    for name in ("trace.h5", "summary.json", "raw.ttraw.zst"):
        assert (profiled / name).stat().st_size > 0
    summary = json.loads((profiled / "summary.json").read_text())
    assert summary["latency"]["ttft_s"] > 0 and summary["power"]["energy_per_token_j"] > 0


def test_profile_refuses_to_overwrite(profiled: Path) -> None:
    proc = run_cli("profile", "--device", "emu:stm32f4", "--tokens", "2", "--out", str(profiled))
    assert proc.returncode == 1
    assert "already exists" in proc.stderr and "--overwrite" in proc.stderr


def test_trace_info(profiled: Path) -> None:
    result = CliRunner().invoke(cli, ["trace", "info", str(profiled / "trace.h5"), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["rows"]["tokens"] > 16 and info["rows"]["power_blocks"] > 0
    assert info["link"]["frames"] > 0 and info["link"]["crc_errors"] == 0
    assert info["summary"]["ttft_s"] > 0
    table = CliRunner().invoke(cli, ["trace", "info", str(profiled / "trace.h5")])
    assert table.exit_code == 0 and "tokens" in table.output


def test_replay_reproduces_the_device_tables(profiled: Path, tmp_path: Path) -> None:
    out = tmp_path / "replayed.h5"
    result = CliRunner().invoke(
        cli, ["trace", "replay", str(profiled / "raw.ttraw.zst"), "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    replayed = json.loads(result.output)
    with open_trace(profiled / "trace.h5") as live, open_trace(out) as again:
        for table in ("tokens", "spans", "memory", "runs", "pings"):
            a, b = live.table(table), again.table(table)
            assert len(a) == len(b) > 0, table
            for field in a.dtype.names or ():
                if field == "host_s" or a.dtype[field].kind != "f":
                    np.testing.assert_array_equal(a[field], b[field], err_msg=f"{table}.{field}")
                else:
                    np.testing.assert_allclose(a[field], b[field], err_msg=f"{table}.{field}")
    live_summary = json.loads((profiled / "summary.json").read_text())
    assert replayed["latency"]["ttft_s"] == pytest.approx(live_summary["latency"]["ttft_s"])
    assert replayed["latency"]["itl_s"] == pytest.approx(live_summary["latency"]["itl_s"])
    assert replayed["power"]["energy_j"] is None  # the sensor is not on the link


def test_bad_device_url_is_a_clear_error() -> None:
    result = CliRunner().invoke(cli, ["profile", "--device", "bogus://x", "--out", "unused"])
    assert result.exit_code != 0
    assert "accepted forms" in str(result.exception) + result.output


def test_unknown_platform_names_the_closest() -> None:
    proc = run_cli("profile", "--device", "emu:esp32s4", "--tokens", "2", "--out", "unused-dir")
    assert proc.returncode == 1
    assert "esp32s3" in proc.stderr


def _children_of(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_record_survives_sigkill(tmp_path: Path) -> None:
    """SIGKILL mid-run: the trace opens with everything up to the last flush."""
    out = tmp_path / "killed.h5"
    proc = subprocess.Popen(
        [*TINYTELEM, "record", "--device", "emu:rp2040", "--out", str(out), "--run",
         "--tokens", "150", "--repeat", "forever"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        tokens_seen = 0
        while time.monotonic() < deadline and tokens_seen < 30:
            time.sleep(0.5)
            if proc.poll() is not None:
                pytest.fail(f"record ended early: {proc.stderr.read()}")  # type: ignore[union-attr]
            if out.exists():
                try:
                    with open_trace(out) as tr:
                        tokens_seen = len(tr.tokens)
                except Exception:
                    tokens_seen = 0
        twins_before = _children_of(proc.pid)
        assert twins_before, "record should have spawned the device twin"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    with open_trace(out) as tr:
        n = len(tr.tokens)
        assert n >= tokens_seen >= 30
        assert np.all(np.diff(tr.tokens["device_s"]) > 0)
        assert len(tr.events) >= n
    # The twin the killed recorder spawned notices its parent is gone and exits.
    twins = twins_before
    deadline = time.monotonic() + 10
    while twins and time.monotonic() < deadline:
        twins = [p for p in twins if p.is_running() and p.status() != "zombie"]
        time.sleep(0.1)
    assert not twins, "the device twin outlived its killed parent"


def test_record_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    out = tmp_path / "rec.h5"
    proc = subprocess.Popen(
        [*TINYTELEM, "record", "--device", "emu:esp32", "--out", str(out), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(4)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["link"]["frames"] > 0
    with open_trace(out) as tr:
        assert tr.attrs["complete"]
        assert len(tr.pings) > 0
