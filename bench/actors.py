"""Benchmark the hub and the simulated power sensor; prints one JSON object per configuration.

Run: ``python bench/actors.py [--seconds 5] [--hub-records 200000]``.

* hub: records/s through a hub feeding 1 lossless subscriber (drained as fast as possible)
  and 3 live ones (two fast readers, one that never reads).
* power: the sensor in real time at 1 kS/s, 100 kS/s and 1 MS/s, drained by one consumer;
  CPU is process time over wall time (share of one core, whole process).
"""

from __future__ import annotations

import argparse
import json
import time

import trio

from tinytelem.actors.hub import Hub, LiveSubscription
from tinytelem.power.simulated import SimulatedPowerSensor
from tinytelem.power.waveform import ConstantWaveform
from tinytelem.records import PowerGap, Record


async def bench_hub(n: int) -> dict[str, object]:
    hub = Hub()
    lossless = hub.subscribe_lossless("recorder", 1024)
    fast = [hub.subscribe_live(f"live-fast-{i}", 256) for i in range(2)]
    hub.subscribe_live("live-slow", 256)  # never read
    send, receive = trio.open_memory_channel[Record](1024)
    records = [PowerGap(0.0, i, 1) for i in range(n)]

    async def drain_lossless() -> None:
        async with lossless:
            async for _ in lossless:
                pass

    async def drain_live(sub: LiveSubscription) -> None:
        async for _ in sub:
            pass

    wall0, cpu0 = time.perf_counter(), time.process_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run, receive)
        nursery.start_soon(drain_lossless)
        for sub in fast:
            nursery.start_soon(drain_live, sub)
        async with send:
            for r in records:
                await send.send(r)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    stats = hub.statistics()
    return {
        "bench": "hub",
        "records": n,
        "subscribers": "1 lossless + 2 fast live + 1 never-reading live",
        "records_per_s": round(n / wall),
        "cpu_pct_one_core": round(100 * cpu / wall, 1),
        "per_subscriber": [
            {"name": s.name, "delivered": s.delivered, "dropped": s.dropped, "hw": s.high_water}
            for s in stats.per_subscriber
        ],
    }


async def bench_power(rate_hz: float, seconds: float) -> dict[str, object]:
    sensor = SimulatedPowerSensor(
        ConstantWaveform(0.1, 3.3),
        rate_hz=rate_hz,
        noise_a=1e-4,
        max_samples=int(rate_hz * seconds),
    )
    send, receive = trio.open_memory_channel[Record](64)
    received = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(sensor.run, send)
        async with receive:
            async for r in receive:
                if not isinstance(r, PowerGap):
                    received += r.current_a.size  # type: ignore[union-attr]
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    stats = sensor.statistics()
    return {
        "bench": "power",
        "rate_hz": rate_hz,
        "seconds": seconds,
        "samples_per_s": round(received / wall),
        "cpu_pct_one_core": round(100 * cpu / wall, 2),
        "blocks": stats.blocks,
        "dropped_samples": stats.dropped_samples,
        "backlog_high_water": stats.backlog_high_water,
    }


async def main(seconds: float, hub_records: int) -> None:
    print(json.dumps(await bench_hub(hub_records)), flush=True)
    for rate in (1e3, 1e5, 1e6):
        print(json.dumps(await bench_power(rate, seconds)), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="power run length per rate")
    parser.add_argument("--hub-records", type=int, default=200_000)
    args = parser.parse_args()
    trio.run(main, args.seconds, args.hub_records)
