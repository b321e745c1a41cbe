"""One client never ends the session: leaving (close or TCP reset) and bad input (issue 18 §0)."""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

import pytest
import trio

from tinytelem.client import ByeMessage, ErrorMessage, HelloMessage, TokenMessage, connect

from .helpers import hello, power, run_records, streaming, token


async def raw_client(url: str, messages: list[str | bytes], *, read: int, how: str,
                     json_codec: bool = True) -> list[Any]:
    """A plain trio-websocket client: hello, send ``messages``, read ``read`` messages, then
    leave by ``how``: "close" (normal close handshake) or "reset" (abort the TCP connection)."""
    from trio_websocket import ConnectionClosed, wrap_client_stream

    host, port = url.removeprefix("ws://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    got: list[Any] = []
    async with trio.open_nursery() as nursery:
        ws = await wrap_client_stream(
            nursery, stream, host, "/",
            subprotocols=["tinytelem.v1.json" if json_codec else "tinytelem.v1.msgpack"])
        try:
            got.append(await ws.get_message())
            for m in messages:
                await ws.send_message(m)
            for _ in range(read):
                got.append(await ws.get_message())
        except ConnectionClosed:
            pass
        if how == "close":
            await ws.aclose()
        else:
            sock = stream.socket
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # RST, no close handshake
        nursery.cancel_scope.cancel()
    return got


SUBSCRIBE_RAW = json.dumps({"type": "subscribe", "level": "1ms", "rate_hz": 100, "raw": True})


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_clients_that_leave_mid_stream_never_end_the_session(how: str) -> None:
    """The reported crash: subscribe (raw on), read five messages, leave, while power flows."""
    with trio.fail_after(30):
        async with streaming() as h:
            done = trio.Event()

            async def feed() -> None:
                i = 0
                while not done.is_set():
                    await h.send(power(i * 2000, 2000))
                    i += 1
                    await trio.sleep(0.002)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(feed)
                for _ in range(8):
                    got = await raw_client(h.url, [SUBSCRIBE_RAW], read=5, how=how)
                    assert len(got) >= 2
                done.set()
            # The server still serves a new client to the end.
            async with connect(h.url) as stream:
                assert isinstance(await stream.receive(), HelloMessage)
                await h.send(hello())
                await h.send(token(0))
                await h.finish()
                rest = [m async for m in stream]
    assert any(isinstance(m, TokenMessage) for m in rest)
    assert isinstance(rest[-1], ByeMessage)
    assert h.streamer.statistics().clients_total == 9


BAD_MESSAGES: list[str | bytes] = [
    '{"type":"subscribe","level":"1ms","rate_hz":1' + "0" * 400 + "}",
    '{"type":"subscribe","rate_hz":NaN}',
    '{"type":"subscribe","rate_hz":Infinity}',
    '{"type":"subscribe","rate_hz":"fast"}',
    '{"type":"subscribe","rate_hz":true}',
    '{"type":"subscribe","level":7}',
    '{"type":"subscribe","level":["1ms"]}',
    '{"type":"subscribe","raw":"false"}',
    '{"type":"subscribe","spans":"all"}',
    '{"type":"raw_request","seconds":1e400}',
    '{"type":"raw_request","seconds":-1}',
    '{"type":"raw_request","seconds":{"a":1}}',
    '{"type":"frobnicate"}',
    '{"type":7}',
    "[1,2,3]",
    "not json",
    "[" * 3000 + "]" * 3000,
    b"\xc1\xff\x00",
    b"\x81\xa4type\xa9subscribe",  # msgpack map but sent on the JSON codec: still a map
]


async def test_bad_client_messages_get_errors_and_the_session_goes_on() -> None:
    with trio.fail_after(30):
        async with streaming() as h:
            for record in run_records(2):
                await h.send(record)
            got = await raw_client(h.url, BAD_MESSAGES, read=len(BAD_MESSAGES) - 1, how="close")
            errors = [json.loads(m) for m in got[1:]]
            assert all(e["type"] == "error" for e in errors), errors
            texts = " | ".join(e["text"] for e in errors)
            assert "rate_hz" in texts and "finite" in texts and "level" in texts
            assert "unknown client message" in texts
            async with connect(h.url) as stream:
                assert isinstance(await stream.receive(), HelloMessage)
                await h.finish()
                rest = [m async for m in stream]
    assert isinstance(rest[-1], ByeMessage)


async def test_oversize_client_message_closes_only_that_client() -> None:
    with trio.fail_after(30):
        async with streaming() as h:
            big = json.dumps({"type": "subscribe", "pad": "x" * 100_000})
            got = await raw_client(h.url, [big], read=3, how="close")
            assert len(got) == 1  # hello, then the server closed (1009 message too big)
            async with connect(h.url, codec="json") as stream:
                assert isinstance(await stream.receive(), HelloMessage)
                await stream._command({"type": "subscribe", "rate_hz": 10**400})
                err = await stream.receive()
                assert isinstance(err, ErrorMessage) and "rate_hz" in err.text
                await h.finish()
                rest = [m async for m in stream]
    assert isinstance(rest[-1], ByeMessage)


async def test_garbage_and_half_open_connections_never_end_the_session() -> None:
    """Not even a websocket: HTTP garbage, random bytes, a reset mid-handshake."""
    with trio.fail_after(30):
        async with streaming() as h:
            host, port = h.url.removeprefix("ws://").split(":")
            for payload in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x00\xff" * 50,
                            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                            b"Sec-WebSocket-Key: x\r\nSec-WebSocket-Version: 13\r\n\r\n",
                            bytes(range(256)) * 4, b""):
                stream = await trio.open_tcp_stream(host, int(port))
                if payload:
                    await stream.send_all(payload)
                sock = stream.socket
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            await trio.sleep(0.1)
            async with connect(h.url) as stream2:
                assert isinstance(await stream2.receive(), HelloMessage)
                await h.send(hello())
                await h.send(token(0))
                await h.finish()
                rest = [m async for m in stream2]
    assert [m.index for m in rest if isinstance(m, TokenMessage)] == [0]
    assert isinstance(rest[-1], ByeMessage)
    assert h.streamer.statistics().closed_for_errors == 0


@pytest.mark.slow
async def test_issue_reproduction_serve_survives_clients_that_leave(tmp_path: Any) -> None:
    """The report, as a user ran it: `serve --sensor-rate 100000 --out`, clients subscribe
    (1 ms, 100 Hz, raw), read five messages and leave; then the 400-digit rate_hz."""
    import re
    import subprocess
    import sys

    trace = tmp_path / "served.h5"
    with trio.fail_after(120):
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-c", "from tinytelem.cli.main import main; main()", "serve",
             "--device", "emu:esp32s3", "--listen", "ws://127.0.0.1:0", "--sensor-rate",
             "100000", "--duration", "8", "--out", str(trace)],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        try:
            assert proc.stderr is not None
            text = b""
            while not re.search(rb"ws://\S+\n", text):
                chunk = await proc.stderr.receive_some()
                assert chunk, text
                text += chunk
            url = re.search(rb"(ws://127\.0\.0\.1:\d+)", text).group(1).decode()  # type: ignore[union-attr]
            for i in range(6):
                await raw_client(url, [SUBSCRIBE_RAW], read=5, how="close" if i % 2 else "reset")
            got = await raw_client(url, [BAD_MESSAGES[0]], read=1, how="close")
            assert json.loads(got[1])["type"] == "error"
            while chunk := await proc.stderr.receive_some():
                text += chunk
            await proc.wait()
        finally:
            proc.kill()
    assert proc.returncode == 0, text.decode()
    assert b"Traceback" not in text
    from tinytelem.trace.reader import open_trace

    with open_trace(trace) as t:
        assert t.n_power_samples > 100_000  # the recording ran on to the end
