"""Benchmark: cost of recording power samples into a trace (1 MS/s in 10k-sample blocks).

Prints JSON: the paced run's CPU share of one core (process CPU time / wall time) while
appending 100 blocks/s for ``--seconds`` with a flush every second, and the unpaced
throughput in samples/s. Run: ``python bench/trace_write.py [--seconds 5]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from tinytelem.trace.writer import TraceWriter


def paced(path: Path, rate: int, block: int, seconds: float) -> dict[str, float]:
    """Append ``rate`` samples/s in ``block``-sized blocks in real time; measure CPU%."""
    data = np.random.default_rng(0).random(block, dtype=np.float32)
    period = block / rate
    n_blocks = int(seconds / period)
    with TraceWriter.create(path, attrs={"bench": "paced"}, overwrite=True) as w:
        wall0, cpu0 = time.monotonic(), time.process_time()
        for i in range(n_blocks):
            w.add_power(i * block, data, host_s=i * period)
            w.maybe_flush()
            delay = wall0 + (i + 1) * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    return {
        "rate_sps": rate,
        "block": block,
        "seconds": wall,
        "cpu_percent_of_core": 100.0 * cpu / wall,
        "file_mb": path.stat().st_size / 1e6,
    }


def unpaced(path: Path, block: int, total: int) -> float:
    """Samples/s when appending as fast as possible (flush every second)."""
    data = np.random.default_rng(1).random(block, dtype=np.float32)
    with TraceWriter.create(path, attrs={"bench": "unpaced"}, overwrite=True) as w:
        t0 = time.perf_counter()
        for i in range(total // block):
            w.add_power(i * block, data, host_s=0.0)
            w.maybe_flush()
        w.flush()
        elapsed = time.perf_counter() - t0
    return (total // block) * block / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=int, default=1_000_000)
    parser.add_argument("--block", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.h5"
        result = paced(path, args.rate, args.block, args.seconds)
        result["unpaced_samples_per_s"] = unpaced(path, args.block, 50_000_000)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
