"""TCP links against a real local listener."""

from __future__ import annotations

import errno
import socket
import sys

import pytest
import trio
import trio.testing

from tinytelem.errors import ConfigError, LinkBroken
from tinytelem.transports import HalfCloseableLinkStream, TcpURL, open_stream, open_tcp
from tinytelem.transports.tcp import TWIN_HINT, _translate_connect_error

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup  # type: ignore[import-not-found, unused-ignore]


async def _tcp_pair() -> tuple[HalfCloseableLinkStream, HalfCloseableLinkStream]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]
    port = listener.socket.getsockname()[1]
    try:
        client = await open_tcp(TcpURL("127.0.0.1", port))
        server = await listener.accept()
    finally:
        await listener.aclose()
    return client, HalfCloseableLinkStream(server, name="tcp-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_tcp_pair_follows_the_half_closeable_stream_contract() -> None:
    with trio.fail_after(20):
        await trio.testing.check_half_closeable_stream(_tcp_pair, None)


async def test_tcp_link_sets_nodelay_and_moves_bytes() -> None:
    with trio.fail_after(5):
        client, server = await _tcp_pair()
        async with client, server:
            sock = client._inner.socket  # type: ignore[attr-defined]
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            payload = bytes(range(256)) * 512
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.send_all, payload)
                got = bytearray()
                while len(got) < len(payload):
                    got += await server.receive_some()
            assert bytes(got) == payload
            assert client.name.startswith("tcp://127.0.0.1:")


async def test_connection_refused_is_link_broken_with_the_twin_hint() -> None:
    port = _free_port()
    with trio.fail_after(5), pytest.raises(LinkBroken) as info:
        await open_stream(f"tcp://127.0.0.1:{port}")
    assert "connection refused" in str(info.value)
    assert "tinytelem emulate --platform esp32s3 --listen tcp://127.0.0.1:0" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)


async def test_peer_going_away_is_link_broken_on_send() -> None:
    with trio.fail_after(5):
        client, server = await _tcp_pair()
        await server.aclose()
        assert await client.receive_some() == b""  # clean EOF first
        with pytest.raises(LinkBroken) as info:
            while True:
                await client.send_all(b"x" * 65536)
        assert "still running" in str(info.value)
        assert isinstance(info.value.__cause__, OSError)
        await client.aclose()


async def test_connect_timeout_is_link_broken() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(5), pytest.raises(LinkBroken, match="no answer within 0 s"):
        await open_tcp(TcpURL("127.0.0.1", port), connect_timeout=0)
    await listeners[0].aclose()


async def test_port_zero_is_a_config_error() -> None:
    with trio.fail_after(5), pytest.raises(ConfigError, match="port 0"):
        await open_stream("tcp://127.0.0.1:0")


def test_connect_error_translation_table() -> None:
    url = TcpURL("board.local", 5555)
    resolve = _translate_connect_error(url, socket.gaierror(-2, "Name or service not known"))
    assert isinstance(resolve, ConfigError)
    assert "cannot resolve host 'board.local'" in str(resolve)

    group_cause = OSError("all attempts to connect to board.local:5555 failed")
    group_cause.__cause__ = ExceptionGroup(
        "x", [ConnectionRefusedError(errno.ECONNREFUSED, "refused")]
    )
    refused = _translate_connect_error(url, group_cause)
    assert isinstance(refused, LinkBroken)
    assert TWIN_HINT in str(refused)

    unreachable = _translate_connect_error(url, OSError(errno.EHOSTUNREACH, "No route to host"))
    assert isinstance(unreachable, LinkBroken)
    assert "firewall" in str(unreachable)

    other = _translate_connect_error(url, OSError(errno.EPERM, "Operation not permitted"))
    assert isinstance(other, LinkBroken)
    assert "check the host and port" in str(other)
