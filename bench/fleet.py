"""Fleet: N device twins and N simulated sensors at 100 kS/s each, recorded by one process.

Writes a session file with N ``emu:`` devices (platforms in turn) and one ``sim`` sensor per
device at ``--rate`` samples/s, then records them all at once the way ``tinytelem record
--session`` does (:func:`tinytelem.session.lab.run_lab`), each running inference without end
(``--repeat forever``) for ``--duration`` seconds. Every ``--every`` seconds one line: RSS and
CPU share of the recorder process and of the twins. At the end, per device: runs, frames,
power samples, every drop counter (sequence gaps, lost frames, sensor overflow, hub drops,
power gaps, CRC errors), and its share of CPU and RSS: the recorder process's divided by N
(all devices share it) plus its own twin process's.

Exit status 1 when any device dropped anything or failed; 0 otherwise.

Usage: python bench/fleet.py [--n 8] [--duration 600] [--every 60] [--rate 100000]
       [--trace-level tokens] [--tokens 32] [--keep DIR] [--json]
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

PLATFORMS = ("esp32s3", "rp2040", "stm32h7", "nrf52840", "rp2350", "esp32", "stm32f4", "k210")


def session_file(path: Path, n: int, rate: float) -> Path:
    """A session file with ``n`` twins, each measured by its own simulated sensor."""
    lines = ['name = "fleet-bench"']
    for i in range(n):
        lines += [f"[devices.dev{i}]", f'url = "emu:{PLATFORMS[i % len(PLATFORMS)]}"',
                  f"[sensors.pow{i}]", 'spec = "sim"', f'measures = "dev{i}"',
                  f"rate = {rate:g}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _cpu(p: Any) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


def fleet(n: int, duration_s: float, every_s: float, rate: float, trace_level: str,
          tokens: int, out_dir: Path, say: Any) -> dict[str, Any]:
    """Record the fleet for ``duration_s``; return the figures (see the module docstring)."""
    import psutil
    import trio

    from tinytelem.protocol.enums import TraceLevel
    from tinytelem.session.lab import lab_devices, load_lab, run_lab
    from tinytelem.session.options import RecordOptions

    lab = load_lab(session_file(out_dir / "fleet.toml", n, rate))
    base = RecordOptions(device="", out=out_dir / "unused.h5", run=True, repeat=None,
                         n_tokens=tokens, trace_level=TraceLevel[trace_level.upper()],
                         duration_s=duration_s, overwrite=True)
    devices = lab_devices(lab, base, out_dir)
    me = psutil.Process()
    twins: dict[str, Any] = {}
    rows: list[dict[str, float]] = []
    ready: list[float] = []
    twin_cpu: dict[str, float] = {}
    twin_rss: dict[str, float] = {}

    def on_ready(device_id: str, handle: Any) -> None:
        # The twin this device just spawned: the newest child not yet claimed.
        claimed = {p.pid for p in twins.values()}
        fresh = [c for c in me.children(recursive=True) if c.pid not in claimed]
        if fresh:
            twins[device_id] = max(fresh, key=lambda c: c.create_time())
            twins[device_id].cpu0 = _cpu(twins[device_id])  # type: ignore[attr-defined]
        ready.append(time.monotonic())

    async def sampler() -> None:
        while len(ready) < n:
            await trio.sleep(0.05)
        t0 = last_t = time.monotonic()
        cpu0 = last = _cpu(me)
        rows.append({"t0": t0, "cpu0": cpu0})
        while True:
            await trio.sleep(every_s)
            now, cpu = time.monotonic(), _cpu(me)
            twin_cpu = sum(_cpu(p) for p in twins.values() if p.is_running())
            twin_rss = sum(p.memory_info().rss for p in twins.values() if p.is_running())
            row = {"t_s": now - t0, "rss_mb": me.memory_info().rss / 2**20,
                   "cpu_pct": 100 * (cpu - last) / (now - last_t),
                   "twins_rss_mb": twin_rss / 2**20, "twins_cpu_s": twin_cpu}
            rows.append(row)
            say(f"{row['t_s']:7.0f} s  recorder rss {row['rss_mb']:6.1f} MB cpu "
                f"{row['cpu_pct']:5.1f} %  twins rss {row['twins_rss_mb']:6.1f} MB")
            last_t, last = now, cpu

    async def twin_sampler() -> None:
        # Each twin exits with its session: keep its latest CPU time and its peak RSS.
        while True:
            for d, p in list(twins.items()):
                try:
                    twin_cpu[d] = _cpu(p) - p.cpu0  # type: ignore[attr-defined]
                    twin_rss[d] = max(twin_rss.get(d, 0.0), p.memory_info().rss / 2**20)
                except psutil.Error:
                    pass
            await trio.sleep(1.0)

    async def main() -> Any:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sampler)
            nursery.start_soon(twin_sampler)
            results = await run_lab(devices, trio.Event(), on_ready=on_ready)
            end = time.monotonic()
            nursery.cancel_scope.cancel()
        return results, end

    results, end = trio.run(main)
    t0, cpu0 = rows[0]["t0"], rows[0]["cpu0"]
    elapsed = end - t0
    rec_cpu = 100 * (_cpu(me) - cpu0) / elapsed
    samples = rows[1:]
    rec_rss = max((r["rss_mb"] for r in samples), default=me.memory_info().rss / 2**20)
    per_device = []
    for r in results:
        o = r.outcome
        drops: dict[str, int] = {}
        if o is not None:
            drops = {
                "seq_gaps": int(o.decoder.seq_gaps), "lost_frames": int(o.decoder.lost_frames),
                "sensor_dropped_samples": int(getattr(o.power, "dropped_samples", 0) or 0),
                "hub_dropped": sum(int(s.dropped) for s in o.hub.per_subscriber),
                "power_gaps": int(o.recorder.power_gaps), "crc_errors": int(o.decoder.crc_errors),
            }
        per_device.append({
            "device": r.device_id, "url": r.url, "ok": r.ok, "error": r.error,
            "runs": o.runs_done if o else 0,
            "frames": int(o.decoder.frames) if o else 0,
            "power_samples": int(o.recorder.power_samples) if o else 0,
            "drops": drops, "dropped_total": sum(drops.values()),
            "cpu_pct": round(rec_cpu / n + 100 * twin_cpu.get(r.device_id, 0.0) / elapsed, 2),
            "twin_cpu_pct": round(100 * twin_cpu.get(r.device_id, 0.0) / elapsed, 2),
            "rss_mb": round(rec_rss / n + twin_rss.get(r.device_id, 0.0), 1),
            "twin_rss_mb": round(twin_rss.get(r.device_id, 0.0), 1),
        })
    return {"n": n, "duration_s": round(elapsed, 1), "rate_hz": rate,
            "trace_level": trace_level, "recorder_cpu_pct": round(rec_cpu, 1),
            "recorder_rss_mb": round(rec_rss, 1), "devices": per_device, "samples": samples,
            "dropped_total": sum(d["dropped_total"] for d in per_device),
            "failed": [d["device"] for d in per_device if not d["ok"]]}


def main(argv: list[str] | None = None) -> int:
    """Run the fleet and print its figures; exit status 1 on drops or a failed device."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=8, help="devices (twins + sensors)")
    ap.add_argument("--duration", type=float, default=600.0, help="seconds to record")
    ap.add_argument("--every", type=float, default=60.0, help="seconds between status lines")
    ap.add_argument("--rate", type=float, default=100_000.0, help="samples/s per sensor")
    ap.add_argument("--trace-level", default="tokens", choices=["off", "tokens", "spans"])
    ap.add_argument("--tokens", type=int, default=32, help="tokens per run")
    ap.add_argument("--keep", type=Path, help="write the traces here and keep them")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = ap.parse_args(argv)

    def say(line: str) -> None:
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.keep or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        r = fleet(args.n, args.duration, args.every, args.rate, args.trace_level, args.tokens,
                  out_dir, say)
    ok = r["dropped_total"] == 0 and not r["failed"]
    r["ok"] = ok
    if args.json:
        print(json.dumps(r))
        return 0 if ok else 1
    print(f"# {r['n']} devices, {r['duration_s']} s, sensors at {r['rate_hz']:g} S/s, trace "
          f"level {r['trace_level']}; recorder process {r['recorder_cpu_pct']} % of a core, "
          f"peak RSS {r['recorder_rss_mb']} MB")
    print(f"# {'device':<6} {'url':<15} {'runs':>5} {'frames':>9} {'samples':>11} "
          f"{'dropped':>7} {'cpu %':>6} {'twin %':>6} {'rss MB':>7}")
    for d in r["devices"]:
        print(f"  {d['device']:<6} {d['url']:<15} {d['runs']:>5} {d['frames']:>9} "
              f"{d['power_samples']:>11} {d['dropped_total']:>7} {d['cpu_pct']:>6} "
              f"{d['twin_cpu_pct']:>6} {d['rss_mb']:>7}" + ("" if d["ok"] else f"  {d['error']}"))
    print(f"# {'ok' if ok else 'FAILED'}: {r['dropped_total']} dropped")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
