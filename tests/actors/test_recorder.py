"""TraceRecorder: records -> table rows, span pairing, runs, gaps, timed flushes."""

from __future__ import annotations

import itertools
import math

import numpy as np
import trio
import trio.testing

from tests.actors.helpers import MemorySink
from tinytelem.actors.recorder import RecorderActor, TraceRecorder
from tinytelem.protocol.codec import ErrorKind, FrameError
from tinytelem.protocol.messages import (
    CounterValue,
    DeviceError,
    Heartbeat,
    Hello,
    InferBegin,
    InferEnd,
    Log,
    Marker,
    Memory,
    Pong,
    SpanBegin,
    SpanEnd,
    Token,
)
from tinytelem.records import (
    DecodeErrorRecord,
    DeviceRecord,
    LinkStatus,
    PingRecord,
    PowerBlock,
    PowerGap,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def dev(t: float, seq: int, msg: object) -> DeviceRecord:
    return DeviceRecord(t, seq, int(t * 1e6), t - 99.0, msg)  # type: ignore[arg-type]


def test_full_run_is_recorded() -> None:
    sink, clock = MemorySink(), FakeClock()
    rec = TraceRecorder(sink, clock=clock, host_t0=100.0, flush_interval_s=10)
    msgs = [
        Hello(1, 1_000_000, 2, 3, 4, 5, bytes(32), "p", "fw", "m"),
        InferBegin(7, 2, 3),
        SpanBegin(0, 3), SpanEnd(0, 3),
        SpanEnd(1, 4),  # unmatched
        Token(0, 1, 0), Token(1, 9, 0),
        Memory(10, 20, 30, 40, 50),
        Token(2, 11, 1),
        CounterValue(2, 2**64 - 1), Marker(1, 2), Heartbeat(3, 4), Pong(5),
        Log(1, "hello"), DeviceError(3, "oops"),
        InferEnd(7, 1, 0),
    ]
    for i, m in enumerate(msgs):
        rec.handle(dev(100.0 + i * 0.01, i, m))
    rec.handle(PingRecord(5, 100.05, 100.06, 1234))
    rec.handle(DecodeErrorRecord(100.2, FrameError(ErrorKind.CRC, "CRC-32 mismatch", 12)))
    rec.finish()
    s = rec.statistics()
    assert (s.frames, s.tokens, s.spans, s.unmatched_spans, s.decode_errors) == (16, 3, 1, 1, 1)
    tokens = sink.table("tokens")
    assert list(tokens["token_id"]) == [1, 9, 11] and set(tokens["run_id"]) == {7}
    assert list(tokens["phase"]) == [0, 0, 1]
    spans = sink.table("spans")
    assert (int(spans["layer"][0]), int(spans["op"][0])) == (0, 3)
    assert spans["end_ticks"][0] > spans["begin_ticks"][0]
    runs = sink.table("runs")
    assert runs["run_id"][0] == 7 and runs["status"][0] == 0 and runs["n_generated"][0] == 1
    assert runs["end_s"][0] > runs["begin_s"][0]
    events = sink.table("events")
    assert len(events) == 16
    counter = events[events["type"] == 0x08][0]
    assert counter["a"] == 2 and counter["b"] == 2**63 - 1
    assert sink.table("memory")["kv_bytes"][0] == 50
    pings = sink.table("pings")
    assert math.isclose(pings["send_host_s"][0], 0.05) and pings["ticks"][0] == 1234
    tables = [t[0] for t in sink.text]
    assert tables.count("logs") == 1 and tables.count("errors") == 2
    assert rec.hello is not None


def test_power_and_link_gaps() -> None:
    sink, clock = MemorySink(), FakeClock()
    rec = TraceRecorder(sink, clock=clock, host_t0=100.0)
    rec.handle(PowerBlock(100.5, 0, np.ones(10, np.float32), 3.3, 1000.0))
    rec.handle(PowerGap(100.6, 10, 5))
    rec.handle(LinkStatus(101.0, False, "tcp://x:1", "gone"))
    rec.handle(LinkStatus(101.5, True, "tcp://x:1"))
    rec.handle(LinkStatus(102.0, False, "tcp://x:1", "gone again"))
    rec.finish()
    assert sink.power[0][0] == 0 and math.isclose(sink.power[0][2], 0.5)
    assert sink.power_gaps == [(10, 5, sink.power_gaps[0][2])]
    assert sink.link_gaps[0] == (1.0, 1.5)
    assert sink.link_gaps[1][0] == 2.0 and math.isnan(sink.link_gaps[1][1])
    assert rec.statistics().link_gaps == 1


def test_flushes_on_interval() -> None:
    sink, clock = MemorySink(), FakeClock()
    rec = TraceRecorder(sink, clock=clock, host_t0=100.0, flush_interval_s=0.5)
    rec.handle(dev(100.0, 0, Token(0, 1, 1)))
    assert sink.flushes == 0
    clock.now = 100.6
    rec.handle(dev(100.6, 1, Token(1, 1, 1)))
    assert sink.flushes == 1 and len(sink.table("tokens")) == 2


async def test_actor_flushes_while_idle_and_finishes_on_close(
        autojump_clock: trio.testing.MockClock) -> None:
    sink = MemorySink()
    rec = TraceRecorder(sink, flush_interval_s=0.05, clock=trio.current_time)
    actor = RecorderActor(rec)
    send, recv = trio.open_memory_channel[object](10)
    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            await n.start(actor.run, recv)
            await send.send((dev(rec.host_t0, 0, InferBegin(1, 1, 1)),))
            await trio.sleep(0.125)  # virtual time: idle flushes at 0.05 and 0.10 exactly
            assert sink.flushes == 2
            await send.aclose()
    assert len(sink.table("runs")) == 1
    assert actor.statistics().records == 1


async def test_actor_trims_the_heap_on_its_interval_busy_or_idle(
        autojump_clock: trio.testing.MockClock) -> None:
    from tinytelem.actors import heap
    from tinytelem.actors.heap import HeapTrimmer

    sink = MemorySink()
    rec = TraceRecorder(sink, flush_interval_s=0.05, clock=trio.current_time)
    trimmer = HeapTrimmer(interval_s=1.0, clock=trio.current_time)
    actor = RecorderActor(rec, trimmer)
    calls: list[float] = []
    original = heap.trim
    heap.trim = lambda: calls.append(trio.current_time()) or True  # type: ignore[assignment]
    try:
        send, recv = trio.open_memory_channel[object](10)
        with trio.fail_after(10):
            async with trio.open_nursery() as n:
                await n.start(actor.run, recv)
                for i in range(30):  # 3 s of batches every 0.1 s
                    await send.send((dev(rec.host_t0, i, Token(i, 1, 1)),))
                    await trio.sleep(0.1)
                await trio.sleep(2.5)  # then idle
                await send.aclose()
    finally:
        heap.trim = original
    assert len(calls) == 5 and trimmer.trims == 5
    assert all(b - a >= 1.0 for a, b in itertools.pairwise(calls))
