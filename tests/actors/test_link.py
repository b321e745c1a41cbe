"""LinkActor: reading, writing, outages recorded, reconnect with backoff, giving up."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tinytelem.actors.link import LinkActor, RawChunk
from tinytelem.errors import LinkBroken, LinkClosed
from tinytelem.protocol.codec import FrameDecoder
from tinytelem.protocol.commands import Ping
from tinytelem.records import LinkStatus
from tinytelem.trace.raw import DEVICE_TO_HOST, HOST_TO_DEVICE, LINK_EVENT


class RawList:
    def __init__(self) -> None:
        self.items: list[tuple[float, int, bytes]] = []

    def write(self, host_s: float, direction: int, data: bytes) -> None:
        self.items.append((host_s, direction, data))

    def maybe_flush(self, now: float) -> None:
        pass


class FakeDevice:
    """Hands out one end of a fresh in-memory pair per connection attempt."""

    def __init__(self, refuse: int = 0) -> None:
        self.ends: list[trio.abc.Stream] = []
        self.refuse = refuse
        self.attempts = 0
        self.connected = trio.Event()

    async def connect(self) -> trio.abc.Stream:
        self.attempts += 1
        if self.refuse > 0 and self.attempts > 1:
            self.refuse -= 1
            raise LinkBroken("connection refused")
        host, dev = trio.testing.memory_stream_pair()
        self.ends.append(dev)
        self.connected.set()
        self.connected = trio.Event()
        return host


async def test_reads_writes_and_reconnects() -> None:
    device = FakeDevice(refuse=2)
    raw = RawList()
    link = LinkActor("mem://dev", device.connect, raw=raw, backoff_s=(0.001, 0.004))
    send, recv = trio.open_memory_channel[RawChunk | LinkStatus](100)
    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            await n.start(link.run, send)
            await device.ends[0].send_all(b"abc")
            first = await recv.receive()
            assert isinstance(first, RawChunk) and first.data == b"abc"
            await link.send_message(Ping(7))
            sent = await device.ends[0].receive_some(100)
            dec = FrameDecoder()
            dec.receive_data(sent)
            assert [e.message for e in dec.events()] == [Ping(7)]  # type: ignore[union-attr]
            await device.ends[0].aclose()
            down = await recv.receive()
            assert isinstance(down, LinkStatus) and not down.up
            with pytest.raises(LinkBroken):
                await link.send_message(Ping(8))
            up = await recv.receive()
            assert isinstance(up, LinkStatus) and up.up
            await link.wait_connected()
            await device.ends[-1].send_all(b"xyz")
            again = await recv.receive()
            assert isinstance(again, RawChunk) and again.data == b"xyz"
            n.cancel_scope.cancel()
    s = link.statistics()
    assert (s.connects, s.reconnects, s.outages) == (2, 1, 1)
    assert device.attempts == 4
    assert s.bytes_in == 6 and s.frames_out == 1 and s.down_s > 0
    directions = [d for _, d, _ in raw.items]
    assert directions == [DEVICE_TO_HOST, HOST_TO_DEVICE, LINK_EVENT, LINK_EVENT, DEVICE_TO_HOST]
    with pytest.raises(LinkClosed):
        await link.send_message(Ping(9))


async def test_first_connect_failure_propagates() -> None:
    async def refuse() -> trio.abc.Stream:
        raise LinkBroken("nobody there")

    link = LinkActor("mem://x", refuse)
    send, _recv = trio.open_memory_channel[RawChunk | LinkStatus](1)
    with trio.fail_after(2), pytest.raises(LinkBroken, match="nobody there"):
        await link.run(send)


async def test_no_reconnect_raises_on_break() -> None:
    device = FakeDevice()
    link = LinkActor("exec:x", device.connect, reconnect=False)
    send, _recv = trio.open_memory_channel[RawChunk | LinkStatus](10)
    with trio.fail_after(2), pytest.RaisesGroup(
        pytest.RaisesExc(LinkBroken, match="closed the connection")
    ):
        async with trio.open_nursery() as n:
            await n.start(link.run, send)
            await device.ends[0].aclose()
            await trio.sleep_forever()


async def test_gives_up_after_limit() -> None:
    device = FakeDevice(refuse=10_000)
    link = LinkActor("mem://y", device.connect, backoff_s=(0.001, 0.002), give_up_after_s=0.05)
    send, _recv = trio.open_memory_channel[RawChunk | LinkStatus](10)
    with trio.fail_after(3), pytest.RaisesGroup(pytest.RaisesExc(LinkBroken, match="unreachable")):
        async with trio.open_nursery() as n:
            await n.start(link.run, send)
            await device.ends[0].aclose()
            await trio.sleep_forever()
