"""A real hub + streamer on a loopback port, fed by the test (records, not a device)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import trio

from tinytelem.actors.hub import Hub
from tinytelem.live.security import parse_listen
from tinytelem.live.streamer import Streamer, StreamerConfig
from tinytelem.protocol.messages import (
    Hello,
    InferBegin,
    InferEnd,
    Memory,
    SpanBegin,
    SpanEnd,
    Token,
)
from tinytelem.records import DeviceRecord, LinkStatus, PowerBlock, PowerGap, Record

TICK_HZ = 1_000_000


def device(message: Any, ticks: int = 0, seq: int = 0) -> DeviceRecord:
    return DeviceRecord(time.monotonic(), seq, ticks, ticks / TICK_HZ, message)


def hello() -> DeviceRecord:
    return device(Hello(240_000_000, TICK_HZ, 512 * 1024, 8 << 20, 0, 3, bytes(32),
                        "esp32s3", "1.0.0", "stories260K"))


def token(i: int, phase: int = 1) -> DeviceRecord:
    return device(Token(i, 100 + i % 400, phase), ticks=1000 * (i + 1), seq=i & 0xFFFF)


def power(first: int, n: int, rate: float = 100_000.0, level: float = 0.1) -> PowerBlock:
    x = (level + 0.01 * np.sin(np.arange(first, first + n) / 50.0)).astype(np.float32)
    return PowerBlock(time.monotonic(), first, x, 3.3, rate)


def run_records(n_tokens: int) -> list[Record]:
    """A small plausible run: begin, spans, memory, tokens, end."""
    out: list[Record] = [hello(), device(InferBegin(1, 2, n_tokens), ticks=10)]
    for i in range(n_tokens):
        t = 1000 * (i + 1)
        out.append(device(SpanBegin(0, 3), ticks=t - 500))
        out.append(device(SpanEnd(0, 3), ticks=t - 100))
        out.append(device(Memory(1000 + i, 2000, 300, 4000, 50 * i), ticks=t - 50))
        out.append(token(i, phase=0 if i < 2 else 1))
    out.append(device(InferEnd(1, n_tokens - 2, 0), ticks=1000 * (n_tokens + 1)))
    out.append(LinkStatus(time.monotonic(), False, "tcp://x", "peer closed"))
    out.append(LinkStatus(time.monotonic(), True, "tcp://x"))
    out.append(PowerGap(time.monotonic(), 10**9, 5))
    return out


class Harness:
    """Send records into a hub that feeds a lossless 'recorder' and the streamer."""

    def __init__(self, streamer: Streamer, send: trio.MemorySendChannel[Record]) -> None:
        self.streamer = streamer
        self.send_channel = send
        self.recorded: list[Record] = []
        self.finished = trio.Event()

    @property
    def url(self) -> str:
        assert self.streamer.url is not None
        return self.streamer.url

    async def send(self, record: Record) -> None:
        await self.send_channel.send(record)

    async def finish(self) -> None:
        await self.send_channel.aclose()
        await self.finished.wait()

    async def absorbed(self, n: int) -> None:
        """Return once the streamer has taken in ``n`` records (the caller's fail_after bounds it).

        A condition, not a guess at how long the hub takes: the records were dispatched.
        """
        while self.streamer.statistics().records_in < n:
            await trio.sleep(0.005)


@asynccontextmanager
async def streaming(listen: str = "ws://127.0.0.1:0", **config: Any) -> AsyncIterator[Harness]:
    """Start hub + recorder counter + streamer; ``finish()`` ends the stream (bye)."""
    hub = Hub()
    send, receive = trio.open_memory_channel[Record](1024)
    streamer = Streamer(StreamerConfig(parse_listen(listen), **config))
    harness = Harness(streamer, send)
    recorder = hub.subscribe_lossless("recorder", 8192)

    async def record() -> None:
        async with recorder:
            async for batch in recorder:  # lossless subscribers get record batches
                harness.recorded.extend(batch)

    async def graph() -> None:
        async with trio.open_nursery() as inner:
            inner.start_soon(record)
            await inner.start(streamer.run, hub)
            await inner.start(hub.run, receive)
            started.set()
        harness.finished.set()

    started = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(graph)
        await started.wait()
        yield harness
        if not harness.finished.is_set():
            await harness.finish()
