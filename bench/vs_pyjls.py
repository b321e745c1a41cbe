"""Benchmark: our trace writer side by side with the Joulescope file writer (pyjls).

Both write the same ``--seconds`` of ``--rate`` float32 current samples (default 60 s at
1 MS/s) in 100 ms blocks with a flush every second, then read every sample back:

- ``trace``: :class:`tinytelem.trace.writer.TraceWriter` alone (``/power/current_a``);
- ``trace+summaries``: the same plus the multi-level summaries a recording writes
  (:class:`tinytelem.power.summaries.PowerSummaryRecorder`: 1 ms, 10 ms, 100 ms, 1 s);
- ``pyjls``: ``pyjls.Writer`` (which computes its own multi-level summaries in C).

The figures are process CPU time (all threads: pyjls writes from a thread of its own), not
wall time, so they suffer less from other load on the machine; each configuration runs
``--repeat`` times and the median is printed, with the ratios against pyjls measured in the
same run (the configurations take turns). Read-back reads all samples of the file into one
numpy array and checks them.

Usage: python bench/vs_pyjls.py [--seconds 60] [--rate 1000000] [--repeat 3] [--json]
(needs ``pip install 'tinytelem[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BLOCK_S = 0.1
FLUSH_EVERY_S = 1.0
DISTINCT_BLOCKS = 8


def _blocks(rate: int) -> list[np.ndarray]:
    """A few distinct blocks of plausible current (mA level with noise), reused in turn."""
    n = round(rate * BLOCK_S)
    rng = np.random.default_rng(7)
    return [(0.01 + 1e-3 * rng.standard_normal(n)).astype(np.float32)
            for _ in range(DISTINCT_BLOCKS)]


def write_trace(path: Path, rate: int, seconds: float, summaries: bool) -> float:
    """Write through the recorder and TraceWriter (+ summaries); return process CPU seconds.

    The recorder is the one a recording uses (``TraceRecorder`` with the summary extension);
    its clock is the samples' time, so it flushes once per second of data.
    """
    from tinytelem.actors.recorder import TraceRecorder
    from tinytelem.power.summaries import PowerSummaryRecorder, summary_tables
    from tinytelem.records import PowerBlock
    from tinytelem.trace.writer import TraceWriter

    blocks = _blocks(rate)
    n_blocks = round(seconds / BLOCK_S)
    size = blocks[0].shape[0]
    now = [0.0]
    cpu0 = time.process_time()
    writer = TraceWriter.create(
        path, attrs={"bench": "vs_pyjls"}, overwrite=True, flush_interval_s=FLUSH_EVERY_S,
        extra_tables=summary_tables() if summaries else None,
    )
    recorder = TraceRecorder(
        writer, flush_interval_s=FLUSH_EVERY_S, clock=lambda: now[0], host_t0=0.0,
        extensions=[PowerSummaryRecorder(writer)] if summaries else (),
    )
    for i in range(n_blocks):
        now[0] = (i + 1) * BLOCK_S
        recorder.handle(PowerBlock(now[0], i * size, blocks[i % DISTINCT_BLOCKS], 3.3,
                                   float(rate)))
    recorder.finish()
    writer.close()
    return time.process_time() - cpu0


def write_jls(path: Path, rate: int, seconds: float) -> float:
    """Write through pyjls.Writer; return process CPU seconds (its writer thread included)."""
    from pyjls import Writer

    blocks = _blocks(rate)
    n_blocks = round(seconds / BLOCK_S)
    per_flush = round(FLUSH_EVERY_S / BLOCK_S)
    size = blocks[0].shape[0]
    cpu0 = time.process_time()
    with Writer(str(path)) as w:
        w.source_def(source_id=1, name="bench", vendor="tinytelem", model="sim", version="",
                     serial_number="0")
        w.signal_def(1, source_id=1, sample_rate=rate, name="current", units="A")
        for i in range(n_blocks):
            w.fsr_f32(1, i * size, blocks[i % DISTINCT_BLOCKS])
            if (i + 1) % per_flush == 0:
                w.flush()
    return time.process_time() - cpu0


def read_trace(path: Path) -> tuple[float, np.ndarray]:
    """Read every sample back through open_trace; return (CPU seconds, samples)."""
    from tinytelem.trace.reader import open_trace

    cpu0 = time.process_time()
    with open_trace(path) as trace:
        samples = trace.power_samples()
    return time.process_time() - cpu0, samples


def read_jls(path: Path, n: int) -> tuple[float, np.ndarray]:
    """Read every sample back through pyjls.Reader."""
    from pyjls import Reader

    cpu0 = time.process_time()
    with Reader(str(path)) as r:
        samples = r.fsr(1, 0, n)
    return time.process_time() - cpu0, samples


def run(rate: int, seconds: float, repeat: int) -> dict[str, Any]:
    n = round(seconds / BLOCK_S) * round(rate * BLOCK_S)
    blocks = _blocks(rate)
    expected = np.concatenate([blocks[i % DISTINCT_BLOCKS]
                               for i in range(round(seconds / BLOCK_S))])
    out: dict[str, Any] = {"rate_sps": rate, "seconds": seconds, "samples": n, "repeat": repeat}
    with tempfile.TemporaryDirectory() as tmp:
        h5, h5s, jls = Path(tmp) / "a.h5", Path(tmp) / "b.h5", Path(tmp) / "c.jls"
        # Interleaved, so that a burst of other load on the machine hits every configuration.
        writes: dict[str, list[float]] = {"trace": [], "trace+summaries": [], "pyjls": []}
        for _ in range(repeat):
            writes["trace"].append(write_trace(h5, rate, seconds, False))
            writes["trace+summaries"].append(write_trace(h5s, rate, seconds, True))
            writes["pyjls"].append(write_jls(jls, rate, seconds))
        out["write_cpu_s"] = {k: statistics.median(v) for k, v in writes.items()}
        out["file_mb"] = {name: round(p.stat().st_size / 1e6, 1)
                          for name, p in (("trace", h5), ("trace+summaries", h5s), ("pyjls", jls))}
        reads: dict[str, list[float]] = {"trace": [], "pyjls": []}
        for _ in range(repeat):
            cpu, got = read_trace(h5s)
            if not np.array_equal(got, expected):
                raise SystemExit("trace read-back differs from what was written")
            reads["trace"].append(cpu)
            del got
            cpu, got = read_jls(jls, n)
            if not np.array_equal(np.asarray(got, dtype=np.float32), expected):
                raise SystemExit("pyjls read-back differs from what was written")
            reads["pyjls"].append(cpu)
            del got
        out["read_cpu_s"] = {k: statistics.median(v) for k, v in reads.items()}
    w, r = out["write_cpu_s"], out["read_cpu_s"]
    out["ratio_vs_pyjls"] = {
        "write": round(w["trace"] / w["pyjls"], 2),
        "write_with_summaries": round(w["trace+summaries"] / w["pyjls"], 2),
        "read": round(r["trace"] / r["pyjls"], 2),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="one JSON object only")
    args = parser.parse_args()
    try:
        import pyjls  # noqa: F401
    except ImportError:
        raise SystemExit("needs pyjls: pip install 'tinytelem[bench]'") from None
    result = run(args.rate, args.seconds, args.repeat)
    if args.json:
        print(json.dumps(result))
        return
    print(json.dumps(result, indent=2))
    ratio = result["ratio_vs_pyjls"]
    print(f"# CPU vs pyjls: write {ratio['write']}x, with summaries "
          f"{ratio['write_with_summaries']}x (target <= 1.0), read-back {ratio['read']}x "
          "(target <= 1.0)", file=sys.stderr)


if __name__ == "__main__":
    main()
