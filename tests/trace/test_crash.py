"""SIGKILL a writing child process: the file must hold everything up to its last flush."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tinytelem.trace.raw import read_raw_capture
from tinytelem.trace.reader import open_trace

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

SRC = str(Path(__file__).resolve().parents[2] / "src")

TRACE_CHILD = """
import sys, time
import numpy as np
from tinytelem.trace.schema import EVENT_DTYPE
from tinytelem.trace.writer import TraceWriter

w = TraceWriter.create(sys.argv[1], attrs={"device": "child"}, power_chunk=4096,
                       flush_interval_s=0.2)
w.set_attrs("session", {"child": True})
n_events = n_samples = 0
while True:
    ev = np.zeros(50, EVENT_DTYPE)
    ev["seq"] = np.arange(n_events, n_events + 50) % 65536
    ev["host_s"] = np.arange(n_events, n_events + 50)
    w.add_events(ev)
    n_events += 50
    w.add_power(n_samples, np.arange(n_samples, n_samples + 1000, dtype=np.float32), 0.0)
    n_samples += 1000
    w.add_text("logs", float(n_events), 0.0, 1, "line %d" % n_events)
    w.update_run(0, n_generated=n_events)
    if w.maybe_flush():
        print(n_events, n_samples, flush=True)
    time.sleep(0.002)
"""

RAW_CHILD = """
import sys, time
from tinytelem.trace.raw import RawCaptureWriter

w = RawCaptureWriter.create(sys.argv[1], {"url": "emu:child"}, flush_interval_s=0.2)
n = 0
while True:
    w.write(float(n), n % 2, n.to_bytes(4, "little") * (n % 50))
    n += 1
    if w.maybe_flush():
        print(n, flush=True)
    time.sleep(0.0005)
"""


def _run_and_kill(script: str, path: Path, flushes: int = 5) -> list[int]:
    """Start the child, wait for ``flushes`` flush reports, SIGKILL it, return the last one."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, env=env, text=True
    )
    assert proc.stdout is not None
    last: list[int] = []
    deadline = time.monotonic() + 30
    try:
        for _ in range(flushes):
            line = proc.stdout.readline()
            assert line, "child exited early"
            last = [int(x) for x in line.split()]
            assert time.monotonic() < deadline
        time.sleep(0.1)  # kill it mid-way between two flushes
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    # A flush may have finished after the last line was read: lines still buffered count too.
    for line in proc.stdout.read().split("\n"):
        if line.strip():
            last = [int(x) for x in line.split()]
    return last


def test_trace_survives_sigkill_up_to_last_flush(tmp_path: Path) -> None:
    path = tmp_path / "killed.h5"
    n_events, n_samples = _run_and_kill(TRACE_CHILD, path)
    with open_trace(path) as tr:
        assert tr.opened_swmr  # the writer never closed it
        assert tr.attrs["complete"] is False and tr.attrs["device"] == "child"
        assert tr.group_attrs("session") == {"child": True}
        # Guaranteed: everything up to the last flush; rows after it may be partly written.
        events = tr.events
        assert events.shape[0] >= n_events
        np.testing.assert_array_equal(events["host_s"][:n_events], np.arange(n_events))
        samples = tr.power_samples()
        assert samples.shape[0] >= n_samples
        np.testing.assert_array_equal(samples[:n_samples], np.arange(n_samples, dtype=np.float32))
        assert tr.power_gaps.shape == (0,)
        assert tr.logs.shape[0] >= n_events // 50
        assert tr.logs["text"][0] == "line 50"
        assert tr.runs["n_generated"][0] >= n_events
        info = tr.info()
    assert info["complete"] is False and info["opened_swmr"] is True


def test_raw_capture_survives_sigkill_up_to_last_flush(tmp_path: Path) -> None:
    path = tmp_path / "killed.ttraw.zst"
    (n_records,) = _run_and_kill(RAW_CHILD, path)
    cap = read_raw_capture(path)
    assert cap.header["url"] == "emu:child"
    assert len(cap.records) >= n_records
    for i, (host_s, direction, data) in enumerate(cap.records):
        assert (host_s, direction, data) == (float(i), i % 2, i.to_bytes(4, "little") * (i % 50))
