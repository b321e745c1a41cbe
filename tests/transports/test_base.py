"""The common stream wrapper (error translation) exercised through memory_link_pair."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tinytelem.errors import ConfigError, LinkBroken, LinkClosed
from tinytelem.transports import (
    HalfCloseableLinkStream,
    LinkStream,
    memory_link_pair,
    open_stream,
)


async def test_memory_pair_follows_the_half_closeable_stream_contract() -> None:
    async def maker() -> tuple[HalfCloseableLinkStream, HalfCloseableLinkStream]:
        return memory_link_pair()

    with trio.fail_after(10):
        await trio.testing.check_half_closeable_stream(maker, None)


async def test_bytes_flow_both_ways_and_eof_is_clean() -> None:
    a, b = memory_link_pair("fake")
    with trio.fail_after(5):
        await a.send_all(b"ping")
        assert await b.receive_some() == b"ping"
        await b.send_all(bytearray(b"pong"))
        assert await a.receive_some() == b"pong"
        await a.aclose()
        assert await b.receive_some() == b""
        assert a.name == "fake:a"
        assert "closed" in repr(a)
        assert "open" in repr(b)


async def test_use_after_our_close_is_link_closed() -> None:
    a, _b = memory_link_pair()
    with trio.fail_after(5):
        await a.aclose()
        await a.aclose()  # idempotent
        assert a.closed
        for op in (a.send_all(b"x"), a.receive_some(), a.wait_send_all_might_not_block()):
            with pytest.raises(LinkClosed) as info:
                await op
            assert isinstance(info.value, trio.ClosedResourceError)
            assert "already closed" in str(info.value)
        with pytest.raises(LinkClosed):
            await a.send_eof()


async def test_peer_close_is_link_broken_on_send() -> None:
    a, b = memory_link_pair()
    with trio.fail_after(5):
        await b.aclose()
        with pytest.raises(LinkBroken) as info:
            await a.send_all(b"data")
        assert isinstance(info.value, trio.BrokenResourceError)
        assert "memory:a" in str(info.value)
        assert "the other end was closed" in str(info.value)


async def test_oserror_from_inner_stream_becomes_link_broken_with_cause() -> None:
    class Failing(trio.abc.Stream):
        async def send_all(self, data: bytes | bytearray | memoryview) -> None:
            await trio.lowlevel.checkpoint()
            raise ConnectionResetError(104, "Connection reset by peer")

        async def wait_send_all_might_not_block(self) -> None:
            await trio.lowlevel.checkpoint()

        async def receive_some(self, max_bytes: int | None = None) -> bytes:
            await trio.lowlevel.checkpoint()
            raise trio.BrokenResourceError from OSError(5, "Input/output error")

        async def aclose(self) -> None:
            await trio.lowlevel.checkpoint()

    link = LinkStream(Failing(), name="fake://dev", remedy="replug it")
    with trio.fail_after(5):
        with pytest.raises(LinkBroken, match=r"Connection reset by peer\); replug it") as info:
            await link.send_all(b"x")
        assert isinstance(info.value.__cause__, ConnectionResetError)
        with pytest.raises(LinkBroken, match="Input/output error") as info:
            await link.receive_some()
        assert isinstance(info.value.__cause__, OSError)
        await link.wait_send_all_might_not_block()
        await link.aclose()


async def test_open_stream_refuses_emu_with_the_emulate_command() -> None:
    with trio.fail_after(5), pytest.raises(ConfigError) as info:
        await open_stream("emu:esp32s3")
    assert "tinytelem emulate --platform esp32s3 --listen tcp://127.0.0.1:0" in str(info.value)


async def test_open_stream_rejects_bad_strings() -> None:
    with trio.fail_after(5), pytest.raises(ConfigError, match="accepted forms"):
        await open_stream("ttyACM0")


async def test_nested_link_errors_pass_through_unchanged() -> None:
    a, b = memory_link_pair("inner")
    outer = LinkStream(a, name="outer")
    with trio.fail_after(5):
        await b.aclose()
        with pytest.raises(LinkBroken, match=r"^inner:a"):
            await outer.send_all(b"x")
        await outer.aclose()
