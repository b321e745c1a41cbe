"""Benchmark: report generation on a large synthetic trace (a long run at a high sensor rate).

Writes a trace with ``--samples`` power samples (default 10 M: 100 s at 100 kS/s) and
``--passes`` forward passes of spans (default 3,000 passes x 41 spans of the 260K model), then
times each report format and prints, per format, one JSON object (or a line of text):

    format, seconds, out_bytes, events (Perfetto only), power_points (Perfetto only)

The point is that decimation keeps outputs loadable however long the recording: the HTML plots
at most ~900 columns and the Perfetto file at most 20,000 power counter events.

Usage: python bench/report.py [--json] [--samples 10000000] [--passes 3000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from tinytelem.protocol.enums import NO_LAYER, Op
from tinytelem.report.writers import write_report
from tinytelem.trace.schema import PING_DTYPE, SPAN_DTYPE, TOKEN_DTYPE
from tinytelem.trace.writer import TraceWriter

RATE = 100_000.0
TICK_HZ = 1_000_000


def make_trace(path: Path, n_samples: int, passes: int) -> None:
    duration = n_samples / RATE
    per_pass = duration / (passes + 1)
    ops = [(NO_LAYER, Op.EMBED)] + [(layer, op) for layer in range(5) for op in (
        Op.ATTN_NORM, Op.QKV, Op.ROPE, Op.ATTENTION, Op.ATTN_OUT, Op.FFN_NORM, Op.FFN)] + [
        (NO_LAYER, Op.FINAL_NORM), (NO_LAYER, Op.CLASSIFIER), (NO_LAYER, Op.SAMPLE)]
    step = per_pass / len(ops)
    rows = np.zeros(passes * len(ops), dtype=SPAN_DTYPE)
    starts = np.arange(passes)[:, None] * per_pass + np.arange(len(ops))[None, :] * step + 0.01
    rows["run_id"] = 1
    rows["layer"] = np.tile([layer for layer, _ in ops], passes)
    rows["op"] = np.tile([int(op) for _, op in ops], passes)
    rows["begin_s"] = starts.ravel()
    rows["end_s"] = starts.ravel() + step * 0.9
    rows["begin_ticks"] = np.round(rows["begin_s"] * TICK_HZ).astype(np.uint64)
    rows["end_ticks"] = np.round(rows["end_s"] * TICK_HZ).astype(np.uint64)
    tok = np.zeros(passes, dtype=TOKEN_DTYPE)
    tok["run_id"] = 1
    tok["index"] = np.arange(passes)
    tok["phase"] = (np.arange(passes) >= 4).astype(np.uint8)
    tok["device_s"] = starts[:, -1] + step
    tok["host_s"] = tok["device_s"] + 1e-4
    tok["ticks"] = np.round(tok["device_s"] * TICK_HZ).astype(np.uint64)
    end = float(tok["device_s"][-1]) + 1e-3
    with TraceWriter.create(path, attrs={"platform": "esp32s3", "tick_hz": TICK_HZ,
                                         "model_name": "builtin-260k", "weight_bits": 4,
                                         "sensor": "synthetic"}) as w:
        w.add_spans(rows)
        w.add_tokens(tok)
        pings = np.zeros(200, dtype=PING_DTYPE)
        send = np.linspace(0, duration, 200)
        pings["send_host_s"], pings["recv_host_s"] = send, send + 2e-5
        pings["ticks"] = np.round((send + 1e-5) * TICK_HZ).astype(np.uint64)
        w.add_pings(pings)
        w.update_run(1, n_prompt=4, n_tokens=passes + 1, n_generated=passes - 3, status=0,
                     begin_s=0.01, end_s=end, begin_ticks=10_000, end_ticks=round(end * TICK_HZ))
        rng = np.random.default_rng(1)
        block = 100_000
        for k in range(0, n_samples, block):
            n = min(block, n_samples - k)
            cur = (0.08 + 0.02 * rng.random(n)).astype(np.float32)
            w.add_power(k, cur, host_s=(k + n) / RATE + 1e-6)
        w.set_attrs("power", {"sample_rate_hz": RATE, "voltage_v": 3.3})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--samples", type=int, default=10_000_000)
    ap.add_argument("--passes", type=int, default=3000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "big.h5"
        make_trace(trace, args.samples, args.passes)
        for fmt, name in (("html", "r.html"), ("json", "r.json"), ("csv", "csv"),
                          ("perfetto", "r.perfetto.json")):
            out = Path(tmp) / name
            t0 = time.perf_counter()
            write_report([trace], fmt, out)
            row: dict[str, object] = {"format": fmt, "seconds": round(time.perf_counter() - t0, 2)}
            files = [out] if out.is_file() else list(out.rglob("*.csv"))
            row["out_bytes"] = sum(f.stat().st_size for f in files)
            if fmt == "perfetto":
                events = json.loads(out.read_text())["traceEvents"]
                row["events"] = len(events)
                row["power_points"] = sum(1 for e in events if e["name"] == "power (W)")
            print(json.dumps(row) if args.json else "  ".join(f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
