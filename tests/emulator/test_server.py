"""The twin on real sockets and a real pseudo-terminal, paced in real time."""

from __future__ import annotations

import itertools
import os
import time
from functools import partial

import msgpack
import pytest
import trio

from tinytelem.emulator.server import ServerAddresses, parse_listen_url, serve
from tinytelem.emulator.twin import TwinDevice
from tinytelem.errors import ConfigError
from tinytelem.protocol.codec import Frame, FrameDecoder, encode_frame
from tinytelem.protocol.commands import Ping, Run
from tinytelem.protocol.messages import (
    Hello,
    InferBegin,
    InferEnd,
    InferStatus,
    Phase,
    Pong,
    Token,
    TraceLevel,
)

from .helpers import device, greedy, model, platform

PROMPT = (1, 20, 30)


class Host:
    """A minimal host: decodes frames from a stream."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder()
        self.pending: list[Frame] = []

    @classmethod
    async def connect(cls, url: str) -> Host:
        host, port = parse_listen_url(url)  # type: ignore[misc]
        return cls(await trio.open_tcp_stream(host, port))

    async def send(self, msg: object, seq: int = 0) -> None:
        await self.stream.send_all(encode_frame(msg, seq, 0))  # type: ignore[arg-type]

    async def next(self) -> Frame | None:
        while not self.pending:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.decoder.receive_data(bytes(data))
            self.pending.extend(e for e in self.decoder.events() if isinstance(e, Frame))
        return self.pending.pop(0)

    async def until(self, kind: type) -> list[Frame]:
        out = []
        while True:
            frame = await self.next()
            assert frame is not None, f"stream ended before {kind.__name__}"
            out.append(frame)
            if isinstance(frame.message, kind):
                return out


async def start(nursery: trio.Nursery, d: TwinDevice, **kw: object) -> ServerAddresses:
    addrs: ServerAddresses = await nursery.start(partial(serve, d, **kw))  # type: ignore[arg-type]
    return addrs


async def test_tcp_session_hello_ping_run() -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            d = device(trace_level=TraceLevel.TOKENS)
            addrs = await start(nursery, d)
            host = await Host.connect(addrs.link)
            hello = await host.next()
            assert hello is not None and isinstance(hello.message, Hello)
            await host.send(Ping(77))
            pong = (await host.until(Pong))[-1]
            assert pong.message == Pong(77)
            await host.send(Run(3, 1, 0.0, 10, PROMPT))
            frames = await host.until(InferEnd)
            msgs = [f.message for f in frames]
            begin = next(m for m in msgs if isinstance(m, InferBegin))
            assert begin == InferBegin(3, 3, 10)
            decode = [m.token_id for m in msgs if isinstance(m, Token) and m.phase == Phase.DECODE]
            assert decode == greedy(PROMPT, 10)
            assert msgs[-1] == InferEnd(3, len(decode), InferStatus.OK)
            seqs = [f.seq for f in frames]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
            nursery.cancel_scope.cancel()


async def test_fault_drop_and_reconnect_sees_gap() -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            d = device(trace_level=TraceLevel.TOKENS, name="stm32h7")
            addrs = await start(nursery, d, faults=[("drop", 5)])
            host = await Host.connect(addrs.link)
            await host.next()
            await host.send(Run(1, 1, 0.0, 400, PROMPT))
            got = []
            while (frame := await host.next()) is not None:
                got.append(frame)
            tokens = [f for f in got if isinstance(f.message, Token)]
            assert len(tokens) == 5  # closed right after the 5th TOKEN frame
            # The device runs on with no host for 30 tokens' time (~40 ms on this platform; a
            # loaded host needs that much to let the twin run): those frames are lost.
            await trio.sleep(30 * d.cost.token_seconds(10))
            host2 = await Host.connect(addrs.link)
            hello = await host2.next()
            assert hello is not None and isinstance(hello.message, Hello)
            rest = await host2.until(InferEnd)
            assert hello.seq > got[-1].seq + 1  # seq numbers were spent while disconnected
            assert rest[-1].message.status == InferStatus.OK
            later = [f.message.index for f in rest if isinstance(f.message, Token)]
            assert later and later[0] > tokens[-1].message.index + 1
            nursery.cancel_scope.cancel()


async def test_power_channel_energy_matches_truth() -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            d = device()
            boot = time.monotonic()
            addrs = await start(nursery, d, power_listen_url="tcp://127.0.0.1:0", boot_s=boot)
            assert addrs.power is not None
            phost, pport = parse_listen_url(addrs.power)  # type: ignore[misc]
            power = await trio.open_tcp_stream(phost, pport)
            unpacker = msgpack.Unpacker()
            host = await Host.connect(addrs.link)
            await host.next()
            await host.send(Run(9, 1, 0.0, 20, PROMPT))
            await host.until(InferEnd)
            truth = d.truths[9]
            items: list[object] = []
            horizon = boot + truth.end_s + 0.05
            while not (len(items) > 1 and items[-1][1] >= horizon):  # type: ignore[index]
                unpacker.feed(await power.receive_some(65536))
                items.extend(unpacker)
            header, segments = items[0], items[1:]
            assert header["voltage_v"] == 3.3  # type: ignore[index]
            assert header["timebase"] == "CLOCK_MONOTONIC"  # type: ignore[index]
            lo, hi = boot + truth.start_s, boot + truth.end_s
            energy = sum(
                w * (min(b, hi) - max(a, lo))
                for a, b, w in segments  # type: ignore[misc]
                if b > lo and a < hi
            )
            assert energy == pytest.approx(truth.energy_j, rel=1e-6)
            for (_, b, _), (a, _, _) in itertools.pairwise(segments):  # type: ignore[misc]
                assert a == pytest.approx(b, abs=1e-9)
            await power.aclose()
            nursery.cancel_scope.cancel()


async def test_pty_mode() -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            d = device(trace_level=TraceLevel.TOKENS)
            addrs = await start(nursery, d, listen_url="pty")
            assert addrs.link.startswith("/dev/")
            fd = os.open(addrs.link, os.O_RDWR | os.O_NOCTTY)
            try:
                stream = trio.lowlevel.FdStream(fd)
                decoder = FrameDecoder()
                await stream.send_all(encode_frame(Run(2, 1, 0.0, 5, PROMPT), 0, 0))
                msgs = []
                while not any(isinstance(m, InferEnd) for m in msgs):
                    decoder.receive_data(await stream.receive_some(4096))
                    msgs += [e.message for e in decoder.events() if isinstance(e, Frame)]
                assert isinstance(msgs[0], Hello)
                assert [m.token_id for m in msgs if isinstance(m, Token)][3:] == greedy(PROMPT, 5)
                await stream.aclose()
            finally:
                nursery.cancel_scope.cancel()


async def test_once_ends_after_completed_run() -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def run(task_status: trio.TaskStatus[ServerAddresses]) -> None:
                await serve(device(), once=True, task_status=task_status)
                done.set()

            addrs = await nursery.start(run)
            host = await Host.connect(addrs.link)
            await host.next()
            await host.stream.aclose()  # no run yet: the twin keeps serving
            await trio.sleep(0.05)
            assert not done.is_set()
            host = await Host.connect(addrs.link)
            await host.send(Run(1, 1, 0.0, 3, PROMPT))
            await host.until(InferEnd)
            await host.stream.aclose()
            await done.wait()


async def test_bad_urls_and_faults() -> None:
    for url in ("udp://x:1", "tcp://127.0.0.1", "tcp://h:notaport"):
        with pytest.raises(ConfigError):
            parse_listen_url(url)
    with pytest.raises(ConfigError, match="drop@N"):
        await serve(device(), faults=[("flip", 1)])
    with pytest.raises(ConfigError, match="power"):
        await serve(device(), power_listen_url="pty")


class _SlowEngine:
    """The reference engine, 5 ms slower per forward pass (a model the host runs slowly)."""

    def __init__(self, m: object) -> None:
        from tinytelem.models.reference import Transformer

        self.inner = Transformer(m)  # type: ignore[arg-type]

    def forward(self, token: int, pos: int) -> object:
        time.sleep(0.005)
        return self.inner.forward(token, pos)


async def test_a_long_run_streams_its_first_tokens_at_once() -> None:
    """300 forward passes take >= 1.5 s of host time; the first tokens must not wait for them."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            d = TwinDevice(platform("rpi4"), model(), trace_level=TraceLevel.TOKENS,
                           engine_factory=_SlowEngine)
            addrs = await start(nursery, d)
            host = await Host.connect(addrs.link)
            await host.next()
            sent = time.monotonic()
            await host.send(Run(5, 1, 0.0, 300, PROMPT))
            first = next(f for f in await host.until(Token)
                         if isinstance(f.message, Token))
            first_after = time.monotonic() - sent
            frames = await host.until(InferEnd)
            total = time.monotonic() - sent
            assert first.message.index == 0 and first_after < 0.5
            n_decode = sum(isinstance(f.message, Token) and f.message.phase == Phase.DECODE
                           for f in frames)
            assert n_decode >= 100 and total > 0.005 * n_decode  # computing it all took long
            nursery.cancel_scope.cancel()
