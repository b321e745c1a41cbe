"""A full disk ends a recording with a clear error, rc 1, and a trace holding what was flushed.

Before the fix, ``profile`` into a full 2 MB tmpfs printed the right message and then died with
SIGSEGV: a chunk left dirty in HDF5's chunk cache by the failed write could never be flushed,
and h5py crashed finalising the dataset. Two ways to run out of space are used: a real 2 MB
tmpfs (when this process may mount one, i.e. root on Linux) and, anywhere on POSIX, a file size
limit (RLIMIT_FSIZE: the write fails with EFBIG instead of ENOSPC, through the same code).
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tinytelem.trace.reader import open_trace

ROOT = Path(__file__).resolve().parents[2]
FSIZE_LIMIT = 1_500_000


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs, or a skip saying why there is none."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root on Linux; the file-size-limit case "
                    "covers the same path")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, FSIZE_LIMIT))


WRITER_SCRIPT = textwrap.dedent("""
    import gc, sys
    import numpy as np
    from tinytelem.errors import TraceError
    from tinytelem.trace.writer import TraceWriter

    w = TraceWriter.create(sys.argv[1], attrs={"platform": "x"}, power_chunk=4096)
    flushed = 0
    try:
        for i in range(10_000):
            w.add_power(i * 4096, np.full(4096, 0.01 * (i % 7), dtype=np.float32), i * 0.01)
            if i % 10 == 9:
                w.flush()
                flushed = (i + 1) * 4096
    except TraceError as exc:
        print("write error:", exc, file=sys.stderr)
    else:
        sys.exit("the disk never filled up")
    try:
        w.close()
    except TraceError as exc:
        print("close error:", exc, file=sys.stderr)
    del w
    gc.collect()
    print(flushed)
""")


def _run_writer(path: Path, preexec: Callable[[], None] | None) -> int:
    proc = subprocess.run([sys.executable, "-c", WRITER_SCRIPT, str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, preexec_fn=preexec,
                          check=False)
    assert proc.returncode == 0, f"rc {proc.returncode} (negative: killed by a signal)\n" \
                                 f"{proc.stderr[-3000:]}"
    assert "close error" in proc.stderr
    return int(proc.stdout.strip())


def _check_flushed(path: Path, flushed: int) -> None:
    assert flushed > 0
    with open_trace(path) as tr:
        assert tr.n_power_samples >= flushed
        assert tr.power_blocks.size >= flushed // 4096
        assert not tr.attrs["complete"]


def test_writer_on_full_tmpfs_closes_cleanly(small_tmpfs: Path) -> None:
    path = small_tmpfs / "t.h5"
    flushed = _run_writer(path, None)
    _check_flushed(path, flushed)


def test_writer_at_file_size_limit_closes_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "t.h5"
    flushed = _run_writer(path, _limit_file_size)
    _check_flushed(path, flushed)


def _profile(out: Path, preexec: Callable[[], None] | None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", "from tinytelem.cli.main import main; main()", "profile",
            "--device", "emu:esp32s3", "--tokens", "300", "--out", str(out)]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          preexec_fn=preexec, check=False)


def _check_profile(proc: subprocess.CompletedProcess[str], out: Path, remedy: str) -> None:
    assert proc.returncode == 1, f"rc {proc.returncode}\n{proc.stderr[-3000:]}"
    assert remedy in proc.stderr
    assert "Traceback" not in proc.stderr and "Segmentation" not in proc.stderr
    # What was written before the error is there: whole chunks and timed flushes, whichever
    # came first (the writer test above checks the flushed count exactly).
    with open_trace(out / "trace.h5") as tr:
        assert tr.events.size > 0 and tr.events["type"][0] == 1  # starts with the HELLO
        assert not tr.attrs["complete"]


@pytest.mark.slow
def test_profile_on_full_tmpfs_exits_1(small_tmpfs: Path) -> None:
    out = small_tmpfs / "run"
    _check_profile(_profile(out, None), out, "the disk is full; free space or record to another")


@pytest.mark.slow
def test_profile_at_file_size_limit_exits_1(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _check_profile(_profile(out, _limit_file_size), out, "the file reached the size limit")
