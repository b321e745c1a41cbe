"""Soak: the recorder on the device twin, generating tokens without end, for a long time.

``tinytelem record --run --repeat forever --sensor sim`` in this process (the twin runs in its
own, as it always does) for ``--duration`` seconds. Every ``--every`` seconds (default 60) one
line: elapsed time, RSS of the recorder, the C heap's bytes in use and free (glibc's
``mallinfo2``; "-" elsewhere), its CPU share since the last line (100 = one core), tokens so
far, trace + raw capture bytes. At the end one summary (``--json``: one JSON object) with the
dropped frames and samples (sequence gaps, lost frames, sensor overflow, hub drops, power gaps
in the trace, CRC errors), the runs and the run summaries, CPU share over the run, bytes
written per hour, RSS growth after the warm-up (the highest RSS after ``--warmup`` minus the
RSS at it) and the RSS trend (mean RSS over the last ``--window`` seconds minus the mean over
the first ``--window`` seconds after the warm-up: positive and growing when memory keeps
going up, near zero when it only wobbles).

Exit status 1 when anything was dropped, a completed run has no summary, or RSS grew by more
than ``--rss-growth-mb`` after ``--warmup`` seconds; 0 otherwise. The defaults (warm-up
300 s, growth 5 MB) are the acceptance of continuous monitoring (issue 17): after the first
5 minutes, RSS grows by less than 5 MB however long it records.

Usage: python bench/soak.py [--duration 600] [--every 60] [--device emu:esp32s3]
       [--tokens 64] [--warmup 300] [--rss-growth-mb 5] [--window 60] [--keep DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _bytes(*paths: Path) -> int:
    return sum(p.stat().st_size for p in paths if p.exists())


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def soak(duration_s: float, every_s: float, device: str, tokens: int, warmup_s: float,
         out_dir: Path, say: Any, window_s: float = 60.0) -> dict[str, Any]:
    """Record for ``duration_s``; return the figures (see the module docstring)."""
    import psutil
    import trio

    from tinytelem.actors.heap import heap_bytes
    from tinytelem.session.options import RecordOptions
    from tinytelem.session.record import raw_path_for, run_record

    trace = out_dir / "soak.h5"
    raw = raw_path_for(trace)
    options = RecordOptions(device=device, out=trace, run=True, repeat=None, n_tokens=tokens,
                            sensor="sim", overwrite=True)
    proc = psutil.Process()
    samples: list[dict[str, float]] = []
    tokens_seen = [0]

    def on_token(n: int) -> None:
        tokens_seen[0] = n

    async def sampler(stop: trio.Event, started: list[float]) -> None:
        await trio.sleep(0)
        while not started:
            await trio.sleep(0.05)
        t0 = started[0]
        cpu0 = sum(proc.cpu_times()[:2])
        last_t, last_cpu = t0, cpu0
        next_at = t0 + every_s
        while True:
            end = t0 + duration_s
            await trio.sleep(max(0.0, min(next_at, end) - time.monotonic()))
            now = time.monotonic()
            cpu = sum(proc.cpu_times()[:2])
            c_heap = heap_bytes()
            row = {
                "t_s": now - t0,
                "rss_mb": proc.memory_info().rss / 2**20,
                "cpu_pct": 100.0 * (cpu - last_cpu) / max(now - last_t, 1e-9),
                "tokens": float(tokens_seen[0]),
                "bytes": float(_bytes(trace, raw)),
                "heap_in_use_mb": None if c_heap is None else c_heap.in_use / 2**20,
                "heap_free_mb": None if c_heap is None else c_heap.free / 2**20,
            }
            samples.append(row)
            heap_text = ("heap -" if c_heap is None else
                         f"heap {c_heap.in_use / 2**20:6.1f} MB in use {c_heap.free / 2**20:5.1f}"
                         " MB free")
            say(f"{row['t_s']:7.0f} s  rss {row['rss_mb']:6.1f} MB  {heap_text}  "
                f"cpu {row['cpu_pct']:5.1f} %  tokens {int(row['tokens']):8d}  "
                f"written {row['bytes'] / 2**20:8.2f} MB")
            last_t, last_cpu = now, cpu
            next_at += every_s
            if now >= end:
                samples.append({"cpu_total_pct": 100.0 * (cpu - cpu0) / max(now - t0, 1e-9)})
                stop.set()
                return

    async def main() -> Any:
        stop = trio.Event()
        started: list[float] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sampler, stop, started)
            result = await run_record(options, stop, on_token=on_token,
                                      on_ready=lambda h: started.append(time.monotonic()))
            nursery.cancel_scope.cancel()
        return result

    outcome, summary = trio.run(main)
    cpu_total = next((s["cpu_total_pct"] for s in samples if "cpu_total_pct" in s), None)
    rows = [s for s in samples if "rss_mb" in s]
    elapsed = rows[-1]["t_s"] if rows else duration_s
    after = [r for r in rows if r["t_s"] >= warmup_s] or rows[-1:]
    base = after[0]["rss_mb"] if after else 0.0
    growth = max((r["rss_mb"] for r in after), default=base) - base
    first = _mean([r["rss_mb"] for r in after if r["t_s"] < warmup_s + window_s])
    last = _mean([r["rss_mb"] for r in after if r["t_s"] > elapsed - window_s])
    trend = None if first is None or last is None else last - first
    rolling = summary.get("rolling") or {}
    power = outcome.power
    drops = {
        "seq_gaps": int(outcome.decoder.seq_gaps),
        "lost_frames": int(outcome.decoder.lost_frames),
        "sensor_dropped_samples": int(getattr(power, "dropped_samples", 0) or 0),
        "hub_dropped": sum(int(s.dropped) for s in outcome.hub.per_subscriber),
        "power_gaps": int(outcome.recorder.power_gaps),
        "crc_errors": int(outcome.decoder.crc_errors),
    }
    written = _bytes(trace, raw)
    return {
        "device": device,
        "duration_s": round(elapsed, 1),
        "runs": outcome.runs_done,
        "tokens": tokens_seen[0],
        "frames": int(outcome.decoder.frames),
        "power_samples": int(outcome.recorder.power_samples),
        "drops": drops,
        "dropped_total": sum(drops.values()),
        "cpu_pct": None if cpu_total is None else round(cpu_total, 2),
        "rss_mb_start": round(rows[0]["rss_mb"], 1) if rows else None,
        "rss_mb_after_warmup": round(base, 1),
        "rss_mb_end": round(rows[-1]["rss_mb"], 1) if rows else None,
        "rss_growth_mb": round(growth, 1),
        "rss_mb_first_window": None if first is None else round(first, 2),
        "rss_mb_last_window": None if last is None else round(last, 2),
        "rss_trend_mb": None if trend is None else round(trend, 2),
        "run_summaries": rolling.get("runs"),
        "run_summaries_complete": rolling.get("complete"),
        "bytes_written": written,
        "bytes_per_hour": int(written / max(elapsed, 1e-9) * 3600),
        "rolling": summary.get("rolling"),
        "samples": rows,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the soak and print its figures; exit status 1 on drops or RSS growth."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds to record")
    ap.add_argument("--every", type=float, default=60.0, help="seconds between status lines")
    ap.add_argument("--device", default="emu:esp32s3")
    ap.add_argument("--tokens", type=int, default=64, help="tokens per run")
    ap.add_argument("--warmup", type=float, default=300.0,
                    help="seconds before RSS growth is counted (default 300: issue 17)")
    ap.add_argument("--rss-growth-mb", type=float, default=5.0,
                    help="fail when RSS grows more than this after the warm-up (default 5)")
    ap.add_argument("--window", type=float, default=60.0,
                    help="seconds averaged at each end of the RSS trend")
    ap.add_argument("--keep", type=Path, help="write the trace here and keep it")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = ap.parse_args(argv)

    def say(line: str) -> None:
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.keep or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        result = soak(args.duration, args.every, args.device, args.tokens, args.warmup,
                      out_dir, say, args.window)
    summaries_ok = (result["run_summaries_complete"] or 0) >= result["runs"]
    ok = (result["dropped_total"] == 0 and result["rss_growth_mb"] <= args.rss_growth_mb
          and summaries_ok)
    result["ok"] = ok
    result["rss_growth_bound_mb"] = args.rss_growth_mb
    if args.json:
        print(json.dumps(result))
    else:
        r = result
        print(f"# {r['duration_s']} s on {r['device']}: {r['runs']} runs, {r['tokens']} tokens, "
              f"{r['frames']} frames, {r['power_samples']} power samples")
        print(f"# dropped: {r['dropped_total']} {r['drops']}")
        print(f"# run summaries: {r['run_summaries']} ({r['run_summaries_complete']} complete) "
              f"for {r['runs']} runs")
        print(f"# cpu {r['cpu_pct']} % of a core; rss {r['rss_mb_start']} -> "
              f"{r['rss_mb_end']} MB (growth after warm-up {r['rss_growth_mb']} MB, bound "
              f"{args.rss_growth_mb}; trend {r['rss_trend_mb']} MB); "
              f"written {r['bytes_written'] / 2**20:.1f} MB = "
              f"{r['bytes_per_hour'] / 2**20:.0f} MB/hour")
        print(f"# {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
