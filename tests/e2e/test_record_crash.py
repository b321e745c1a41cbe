"""SIGKILL a ``record`` of the device twin mid-run; ``trace repair`` gives back all but the
last second, as the raw capture beside the trace proves."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest

from tinytelem.replay import replay_capture
from tinytelem.trace.reader import open_trace

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")]

TINYTELEM = [sys.executable, "-c", "from tinytelem.cli.main import main; main()"]


def _kill_mid_run(out: Path, min_tokens: int) -> float:
    """Start the recording, SIGKILL it once ``min_tokens`` are in the file; return when
    (host monotonic seconds) it was killed."""
    proc = subprocess.Popen(
        [*TINYTELEM, "record", "--device", "emu:rp2040", "--sensor", "sim", "--run",
         "--tokens", "150", "--repeat", "forever", "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    twins: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 90
        seen = 0
        while seen < min_tokens:
            assert time.monotonic() < deadline, "record never got going"
            time.sleep(0.3)
            if proc.poll() is not None:
                pytest.fail(f"record ended early: {proc.stderr.read()}")  # type: ignore[union-attr]
            try:
                with open_trace(out) as tr:
                    seen = len(tr.tokens)
            except Exception:
                seen = 0
        twins = psutil.Process(proc.pid).children(recursive=True)
        killed_at = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    for twin in twins:  # the twin exits when it notices its parent died
        with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
            twin.wait(timeout=10)
    return killed_at


def test_killed_record_is_repaired_with_all_but_the_last_second(tmp_path: Path) -> None:
    out = tmp_path / "rec.h5"
    killed_at = _kill_mid_run(out, min_tokens=20)
    with pytest.raises(OSError, match="consistency flags"):
        h5py.File(out, "r")
    proc = subprocess.run([*TINYTELEM, "trace", "repair", str(out), "--force", "--json"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and report["flags_cleared"] and not report["complete"]
    assert report["raw_capture"]["records"] > 0

    with h5py.File(out, "r") as f:  # plain h5py, no SWMR: the flags are gone
        host_t0 = float(f.attrs["host_t0"])
        tokens = np.asarray(f["tokens"][:])
        events = np.asarray(f["events"][:])
        blocks = np.asarray(f["power/blocks"][:])
        n_samples = int(f["power/current_a"].shape[0])
    cutoff = killed_at - host_t0 - 1.0

    replayed = replay_capture(out.with_suffix(".ttraw.zst"), tmp_path / "replayed.h5")
    assert replayed.records > 0
    with open_trace(tmp_path / "replayed.h5") as ref:
        ref_tokens, ref_events = ref.tokens, ref.events
    want_tokens = ref_tokens[ref_tokens["host_s"] <= cutoff]
    want_events = ref_events[ref_events["host_s"] <= cutoff]
    assert want_tokens.size >= 10
    got_tokens = tokens[tokens["host_s"] <= cutoff]
    got_events = events[events["host_s"] <= cutoff]
    # Everything the link carried until a second before the kill is in the repaired trace.
    assert got_tokens.size == want_tokens.size
    np.testing.assert_array_equal(got_tokens["ticks"], want_tokens["ticks"])
    np.testing.assert_array_equal(got_tokens["token_id"], want_tokens["token_id"])
    assert got_events.size == want_events.size
    np.testing.assert_array_equal(got_events["seq"], want_events["seq"])
    # The power samples of that time are there too, back to back with no gap.
    old = blocks[blocks["host_s"] <= cutoff]
    assert old.size > 0
    assert int(old["offset"][-1] + old["n"][-1]) <= n_samples
    assert np.all(np.diff(old["first_index"].astype(np.int64)) == old["n"][:-1].astype(np.int64))
