"""Benchmark live streaming: stream classes, latency at 1 MS/s, fan-out, numba vs numpy.

Run: ``python bench/streaming.py [--json] [--seconds 5] [--only-classes]``.

* latency: a hub fed with 1 MS/s of power (10k-sample blocks, 100 blocks/s) and a TOKEN event
  every 5 ms; one websocket client in *another process* subscribes to raw samples (4 MB/s) and
  10 ms summaries, and measures device-event -> client latency as its receive time minus the
  event's host arrival time (both ``time.monotonic()``, one machine). Target: p99 < 20 ms.
* fanout: 20k small events pushed as fast as the hub takes them, clients (in one other
  process) count what they get; reports messages/s per client and in total, and drops.
* kernels: ring-buffer block copies (numpy slices vs a numba loop) and power summaries
  (the numpy and numba segment kernels inside MultiLevelSummary), samples/s, same run.
* classes: a real ``tinytelem serve`` (its own process) runs the twin of its fastest platform
  with span tracing on, and waits for three clients (``--wait-clients 3``, in this process):
  ``fast`` (default subscription: spans as per-token ``layers``), ``fast_raw_spans`` (one
  message per span) and ``slow`` (default subscription, sleeps ``--slow-ms`` per message).
  Per stream class it prints what the server offered, what each client received and what it
  was told it lost (``dropped`` messages), and the server's own drops; once with the default
  per-client queue and once with a small one (``--client-queue 65536 4096``). Kept classes
  (token, run, memory, summary) must reach every client in full; droppable ones (span) may be
  lost when a client lags, and then are told.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

import numpy as np
import trio

from tinytelem.actors.hub import Hub
from tinytelem.live.ring import PowerRing
from tinytelem.live.security import parse_listen
from tinytelem.live.streamer import Streamer, StreamerConfig
from tinytelem.power.summaries import MultiLevelSummary
from tinytelem.protocol.messages import Token
from tinytelem.records import DeviceRecord, PowerBlock, Record

RATE = 1_000_000.0
BLOCK = 10_000


# ---------------------------------------------------------------------------- client side


async def _client_main(url: str, mode: str, n_clients: int) -> None:
    from tinytelem.client import (
        DroppedMessage,
        RawPowerMessage,
        SummaryMessage,
        TokenMessage,
        connect,
    )

    results: list[dict[str, Any]] = []

    async def one() -> None:
        latencies: list[float] = []
        count = raw = buckets = dropped = 0
        t_first = t_last = 0.0
        async with connect(url) as stream:
            if mode == "latency":
                await stream.subscribe(raw=True, level="10ms", rate_hz=20)
            else:
                await stream.subscribe(level="1s", rate_hz=1)
            print("ready", flush=True)
            async for m in stream:
                now = time.monotonic()
                if isinstance(m, TokenMessage):
                    if not count:
                        t_first = now
                    count += 1
                    t_last = now
                    latencies.append(now - m.host_s)
                elif isinstance(m, RawPowerMessage):
                    raw += m.current_a.shape[0]
                elif isinstance(m, SummaryMessage):
                    buckets += len(m.n)
                elif isinstance(m, DroppedMessage):
                    dropped = m.total
        results.append({"events": count, "raw_samples": raw, "buckets": buckets,
                        "dropped": dropped, "span_s": t_last - t_first,
                        "latencies": latencies if mode == "latency" else []})

    async with trio.open_nursery() as nursery:
        for _ in range(n_clients):
            nursery.start_soon(one)
    print(json.dumps(results), flush=True)


# ---------------------------------------------------------------------------- server side


async def _serve(records: Any, n_clients: int, mode: str, client_queue: int) -> dict[str, Any]:
    hub = Hub()
    streamer = Streamer(StreamerConfig(parse_listen("ws://127.0.0.1:0"),
                                       client_queue=client_queue, stats_interval_s=1.0,
                                       close_grace_s=60.0))
    send, receive = trio.open_memory_channel[Record](1024)
    out: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(streamer.run, hub)
        await nursery.start(hub.run, receive)
        proc = await trio.lowlevel.open_process(
            [sys.executable, __file__, "--client", str(streamer.url), "--mode", mode,
             "--clients", str(n_clients)], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        buf = b""
        while buf.count(b"ready") < n_clients:
            buf += await proc.stdout.receive_some()
        await trio.sleep(0.3)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        async with send:
            await records(send)
        while chunk := await proc.stdout.receive_some():
            buf += chunk
        await proc.wait()
        out["server_cpu_pct"] = round(100 * (time.process_time() - cpu0)
                                      / (time.perf_counter() - wall0), 1)
    out["clients"] = json.loads(buf.decode().strip().splitlines()[-1])
    out["streamer"] = streamer.statistics()
    return out


async def bench_latency(seconds: float) -> dict[str, Any]:
    n_blocks = int(seconds * RATE / BLOCK)

    async def records(send: trio.MemorySendChannel[Record]) -> None:
        base = np.random.default_rng(1).normal(0.1, 0.005, BLOCK).astype(np.float32)
        start = trio.current_time()
        tok = 0
        for b in range(n_blocks):
            # one block every 10 ms; two token events in between
            for half in (0.0, 0.5):
                await trio.sleep_until(start + (b + half) * BLOCK / RATE)
                await send.send(DeviceRecord(time.monotonic(), tok & 0xFFFF, tok, tok * 1e-3,
                                             Token(tok, 1, 1)))
                tok += 1
            await send.send(PowerBlock(time.monotonic(), b * BLOCK, base, 3.3, RATE))

    res = await _serve(records, 1, "latency", 1024)
    client = res["clients"][0]
    lat = np.asarray(client["latencies"]) * 1e3
    return {
        "bench": "latency", "power_rate_sps": RATE, "block": BLOCK, "seconds": seconds,
        "events": client["events"], "raw_samples_received": client["raw_samples"],
        "summary_buckets_received": client["buckets"], "dropped": client["dropped"],
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 3),
        "latency_ms_p99": round(float(np.percentile(lat, 99)), 3),
        "latency_ms_max": round(float(lat.max()), 3),
        "target_p99_ms": 20.0,
        "server_cpu_pct_one_core": res["server_cpu_pct"],
        "server_dropped": res["streamer"].server_dropped,
    }


async def bench_fanout(n_clients: int, n_events: int) -> dict[str, Any]:
    async def records(send: trio.MemorySendChannel[Record]) -> None:
        for i in range(n_events):
            await send.send(DeviceRecord(time.monotonic(), i & 0xFFFF, i, i * 1e-3,
                                         Token(i, 1, 1)))

    t0 = time.perf_counter()
    res = await _serve(records, n_clients, "fanout", 65536)
    clients = res["clients"]
    spans = [c["span_s"] for c in clients if c["span_s"] > 0]
    per_client = [c["events"] / c["span_s"] for c in clients if c["span_s"] > 0]
    return {
        "bench": "fanout", "clients": n_clients, "events": n_events,
        "received_min": min(c["events"] for c in clients),
        "dropped_total": sum(c["dropped"] for c in clients),
        "msgs_per_s_per_client_median": round(float(np.median(per_client))),
        "msgs_per_s_total": round(sum(c["events"] for c in clients) / max(spans)),
        "wall_s": round(time.perf_counter() - t0, 2),
        "server_cpu_pct_one_core": res["server_cpu_pct"],
        "max_offer_ms": round(res["streamer"].max_offer_s * 1e3, 3),
    }


# ---------------------------------------------------------------------------- kernels


def _rate(fn: Any, samples: int, repeat: int = 5) -> float:
    fn()  # warm up (and JIT)
    best = min(_timed(fn) for _ in range(repeat))
    return samples / best


def _timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_kernels() -> list[dict[str, Any]]:
    import numba

    @numba.njit(cache=True)  # type: ignore[misc]
    def numba_copy(dst: Any, pos: int, src: Any) -> None:
        n = dst.shape[0]
        for i in range(src.shape[0]):
            dst[(pos + i) % n] = src[i]

    out = []
    for block in (1000, 16_384):
        src = np.random.default_rng(0).random(block).astype(np.float32)
        total = 200 * block
        ring = PowerRing(1 << 20)
        dst = np.zeros(1 << 20, dtype=np.float32)

        def numpy_ring(ring: PowerRing = ring, src: Any = src, block: int = block) -> None:
            for i in range(200):
                ring.push(i * block, src)
                ring.pop()

        def numba_ring(dst: Any = dst, src: Any = src, block: int = block) -> None:
            pos = 0
            for _ in range(200):
                numba_copy(dst, pos, src)
                pos += block
                _ = dst[:block].copy()

        out.append({"bench": "ring_push_pop", "block": block,
                    "numpy_msps": round(_rate(numpy_ring, total) / 1e6, 1),
                    "numba_msps": round(_rate(numba_ring, total) / 1e6, 1)})
    x = np.random.default_rng(0).normal(0.1, 0.01, 2_000_000).astype(np.float32)
    for block in (1000, 10_000):
        rates = {}
        for backend in ("numpy", "numba"):
            def run(backend: Any = backend, block: int = block) -> None:
                s = MultiLevelSummary(RATE, backend=backend)
                for i in range(0, x.shape[0], block):
                    s.add_block(i, x[i : i + block])

            rates[backend] = _rate(run, x.shape[0], repeat=3)
        out.append({"bench": "summaries_4_levels", "block": block,
                    "numpy_msps": round(rates["numpy"] / 1e6, 1),
                    "numba_msps": round(rates["numba"] / 1e6, 1),
                    "numpy_cpu_pct_at_1msps": round(100 * RATE / rates["numpy"], 2),
                    "numba_cpu_pct_at_1msps": round(100 * RATE / rates["numba"], 2)})
    return out


# ---------------------------------------------------------------------------- classes


async def _class_client(url: str, slow_s: float, spans: str, ready: trio.Event
                        ) -> dict[str, Any]:
    from tinytelem.client import (
        ByeMessage,
        DeviceInfo,
        DroppedMessage,
        LayersMessage,
        LinkMessage,
        MemoryMessage,
        RawPowerMessage,
        RunMessage,
        SpanMessage,
        SummaryMessage,
        TokenMessage,
        connect,
    )

    kinds = {TokenMessage: "token", RunMessage: "run", DeviceInfo: "device",
             LinkMessage: "link", MemoryMessage: "memory", SpanMessage: "span",
             LayersMessage: "layers", RawPowerMessage: "raw", SummaryMessage: "summary"}
    got: dict[str, int] = {}
    told: dict[str, int] = {}
    server_told: dict[str, int] = {}
    buckets = 0
    async with connect(url) as stream:
        await stream.subscribe(level="10ms", rate_hz=20, spans=spans)
        ready.set()
        async for m in stream:
            cls = kinds.get(type(m))
            if cls is not None:
                got[cls] = got.get(cls, 0) + 1
            if isinstance(m, SummaryMessage):
                buckets += len(m.n)
            elif isinstance(m, DroppedMessage):
                target = server_told if m.server else told
                for k, v in m.classes.items():
                    target[k] = target.get(k, 0) + v
            elif isinstance(m, ByeMessage):
                break
            if slow_s:
                await trio.sleep(slow_s)
    return {"received": got, "told_dropped": told, "told_server_dropped": server_told,
            "summary_buckets": buckets}


async def bench_classes(platform: str, tokens: int, slow_ms: float, client_queue: int
                        ) -> dict[str, Any]:
    import re

    cmd = [sys.executable, "-c", "from tinytelem.cli.main import main; main()", "serve",
           "--device", f"emu:{platform}", "--listen", "ws://127.0.0.1:0", "--run", "--tokens",
           str(tokens), "--trace-level", "spans", "--wait-clients", "3", "--wait-timeout",
           "120", "--client-queue", str(client_queue), "--json"]
    proc = await trio.lowlevel.open_process(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stderr is not None and proc.stdout is not None
    text = b""
    while not re.search(rb"ws://\S+\n", text):
        chunk = await proc.stderr.receive_some()
        if not chunk:
            raise RuntimeError(f"serve did not start: {text.decode()}")
        text += chunk
    url = re.search(rb"(ws://127\.0\.0\.1:\d+)", text).group(1).decode()  # type: ignore[union-attr]
    results: dict[str, dict[str, Any]] = {}

    async def run(name: str, slow_s: float, spans: str, ready: trio.Event) -> None:
        results[name] = await _class_client(url, slow_s, spans, ready)

    wall0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for name, slow, spans in (("fast", 0.0, "layers"), ("fast_raw_spans", 0.0, "raw"),
                                  ("slow_raw_spans", slow_ms / 1e3, "raw")):
            ready = trio.Event()
            nursery.start_soon(run, name, slow, spans, ready)
            await ready.wait()
        out = b""
        while chunk := await proc.stdout.receive_some():
            out += chunk
        while await proc.stderr.receive_some():
            pass
        await proc.wait()
    stats = json.loads(out.decode())["streamer"]
    offered = stats["offered_by_type"]
    per_client: dict[str, Any] = {}
    for name, r in results.items():
        subscribed = "span" if name.endswith("raw_spans") else "layers"
        rows = {}
        for kind in ("run", "token", "memory", subscribed):
            got, sent = r["received"].get(kind, 0), offered.get(kind, 0)
            rows[kind] = {"received": got, "offered": sent,
                          "delivered_pct": round(100 * got / sent, 1) if sent else None}
        per_client[name] = {"types": rows, "told_dropped_by_class": r["told_dropped"],
                            "told_server_dropped": r["told_server_dropped"],
                            "summary_buckets": r["summary_buckets"]}
    return {"bench": "classes", "platform": platform, "tokens": tokens, "slow_ms": slow_ms,
            "client_queue": client_queue,
            "server_dropped": stats["server_dropped"],
            "server_dropped_kept": stats["server_dropped_kept"],
            "records_in": stats["records_in"], "wall_s": round(time.perf_counter() - wall0, 2),
            "clients": per_client}


async def _main(args: argparse.Namespace) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = [
        await bench_classes(args.platform, args.tokens, args.slow_ms, queue)
        for queue in args.client_queue
    ]
    if args.only_classes:
        return results
    results.append(await bench_latency(args.seconds))
    for n in (1, 4, 16):
        results.append(await bench_fanout(n, args.events))
    results += bench_kernels()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--platform", default="rpi5",
                        help="twin platform of the classes bench (rpi5: the twin's fastest)")
    parser.add_argument("--tokens", type=int, default=400)
    parser.add_argument("--slow-ms", type=float, default=1.0,
                        help="the slow client's pause per message")
    parser.add_argument("--client-queue", type=int, nargs="+", default=[65536, 4096],
                        help="serve --client-queue values of the classes bench (the default "
                             "and one small enough that the slow client must drop spans)")
    parser.add_argument("--only-classes", action="store_true",
                        help="run only the stream-classes bench")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="latency", help=argparse.SUPPRESS)
    parser.add_argument("--clients", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        trio.run(_client_main, args.client, args.mode, args.clients)
        return
    results = trio.run(_main, args)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(json.dumps(r))


if __name__ == "__main__":
    main()
