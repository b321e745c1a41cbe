"""Client of a live stream (``tinytelem serve`` / ``tinytelem record --serve``).

::

    from tinytelem.client import connect, TokenMessage

    async with connect("ws://127.0.0.1:8765", token=os.environ.get("TINYTELEM_TOKEN")) as stream:
        await stream.subscribe(level="10ms", rate_hz=20)
        async for message in stream:
            if isinstance(message, TokenMessage):
                print(message.index, message.token_id)

Messages are the frozen dataclasses of :mod:`tinytelem.live.schema`. The iteration ends after
the server's :class:`ByeMessage`. With ``reconnect=True`` a lost connection (server restart,
network) is retried with backoff: the next message is then a fresh :class:`HelloMessage`, and the
subscription is sent again. A refused token is never retried.

Structure: one background task per stream owns the websocket (trio-websocket needs its own
nursery) and feeds a small channel; iterating reads the channel. When the consumer is slow the
channel fills, the task stops reading the socket, and the *server* drops the oldest messages
for this client and says how many in a :class:`DroppedMessage` -- slowness costs data, never
memory.
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any
from urllib.parse import urlsplit

import trio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

from tinytelem.errors import ConfigError, LinkBroken, LinkError, ProtocolError
from tinytelem.live.schema import (
    ByeMessage,
    Codec,
    HelloMessage,
    StreamMessage,
    decode,
    encode,
    parse_message,
    subprotocol_of,
)

__all__ = ["LiveStream", "StreamRefused", "connect"]

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
CONNECT_TIMEOUT_S = 10.0


class StreamRefused(LinkError):
    """The server refused the connection (wrong or missing token, HTTP ``status``)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class LiveStream:
    """An open stream: iterate it for messages; :meth:`subscribe` to choose what comes."""

    def __init__(self, url: str, codec: Codec) -> None:
        self.url = url
        self.codec: Codec = codec
        self.hello: HelloMessage | None = None
        self.reconnects = 0
        self.received = 0
        self._ws: Any = None
        self._subscription: dict[str, Any] = {}
        send, receive = trio.open_memory_channel[StreamMessage | BaseException](64)
        self._send = send
        self._receive = receive
        self._done = False
        self._connect_error: BaseException | None = None
        self._closing = False

    async def subscribe(
        self,
        *,
        level: str | None = None,
        rate_hz: float | None = None,
        raw: bool | None = None,
        events: bool | None = None,
        spans: str | None = None,
    ) -> None:
        """Choose the summary level (``"10ms"``) and how often batches come, raw samples on
        or off, device events on or off, and operator spans as per-token aggregates
        (``"layers"``, the default), one message per span (``"raw"``) or ``"off"``.
        Remembered and sent again after a reconnect."""
        update: dict[str, Any] = {}
        if level is not None:
            update["level"] = level
        if rate_hz is not None:
            update["rate_hz"] = float(rate_hz)
        if raw is not None:
            update["raw"] = raw
        if events is not None:
            update["events"] = events
        if spans is not None:
            update["spans"] = spans
        self._subscription.update(update)
        await self._command({"type": "subscribe", **update})

    async def request_raw(self, seconds: float) -> None:
        """Ask for the newest ``seconds`` of raw samples (answered by a RawPowerMessage with
        ``live=False``; the server keeps a few seconds)."""
        await self._command({"type": "raw_request", "seconds": float(seconds)})

    async def _command(self, message: dict[str, Any]) -> None:
        from trio_websocket import ConnectionClosed

        if self._ws is None:
            return  # not connected right now: a subscription is re-sent on reconnect
        with suppress(ConnectionClosed):
            await self._ws.send_message(encode(message, self.codec))

    async def aclose(self) -> None:
        """Close the websocket politely (close handshake, at most 1 s); iteration then ends."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            with trio.move_on_after(1) as cs:
                cs.shield = True
                await ws.aclose()

    def __aiter__(self) -> LiveStream:
        return self

    async def __anext__(self) -> StreamMessage:
        if self._done:
            raise StopAsyncIteration
        try:
            item = await self._receive.receive()
        except trio.EndOfChannel:
            self._done = True
            raise StopAsyncIteration from None
        if isinstance(item, BaseException):
            self._done = True
            raise item
        if isinstance(item, ByeMessage):
            self._done = True
        return item

    async def receive(self) -> StreamMessage:
        """The next message (raises StopAsyncIteration at the end, like iteration)."""
        return await self.__anext__()


def _refused(exc: Any, url: str) -> StreamRefused:
    body = (exc.body or b"").decode("utf-8", "replace").strip()
    detail = f": {body}" if body else ""
    return StreamRefused(
        f"{url} refused the connection with HTTP {exc.status_code}{detail}", exc.status_code
    )


async def _open_stream(
    url: str, ssl_context: ssl.SSLContext | None
) -> tuple[trio.abc.Stream, str, str]:
    """TCP (and TLS) connection, handshake done: certificate errors surface here, clearly."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    tcp = await trio.open_tcp_stream(host, port)
    if parts.scheme != "wss":
        return tcp, host, resource
    tls = trio.SSLStream(tcp, ssl_context or ssl.create_default_context(),
                         server_hostname=host, https_compatible=True)
    try:
        await tls.do_handshake()
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(tcp)
        raise LinkBroken(f"TLS handshake with {host}:{port} failed: {exc.__cause__}; for a "
                         "self-signed certificate pass ssl_context=client_ssl_context(cafile) "
                         "(monitor: --cafile)") from exc
    return tls, host, resource


async def _session(
    stream: LiveStream, url: str, headers: list[tuple[bytes, bytes]],
    ssl_context: ssl.SSLContext | None, connected: trio.Event, first: bool,
) -> BaseException | None:
    """One connection: returns None after a bye, else the error that ended it."""
    from trio_websocket import ConnectionRejected, HandshakeError

    try:
        with trio.fail_after(CONNECT_TIMEOUT_S):
            raw, host, resource = await _open_stream(url, ssl_context)
    except (OSError, trio.TooSlowError) as exc:
        return LinkBroken(f"cannot reach {url}: {exc or 'timed out'}; is 'tinytelem serve' "
                          "running there?")
    except LinkBroken as exc:
        return exc
    try:
        return await _connected_session(stream, url, headers, connected, first, raw, host,
                                        resource)
    except BaseExceptionGroup as group:
        # trio-websocket's reader task raises the rejection (HTTP 401) in its nursery.
        rejected, rest = group.split(ConnectionRejected)
        if rejected is not None:
            return _refused(_leaves(rejected)[0], url)
        if rest is not None and all(isinstance(e, HandshakeError | OSError |
                                               trio.BrokenResourceError)
                                    for e in _leaves(rest)):
            return LinkBroken(f"websocket handshake with {url} failed: {_leaves(rest)[0]!r}")
        raise


def _leaves(group: BaseException) -> list[Any]:
    if isinstance(group, BaseExceptionGroup):
        return [leaf for e in group.exceptions for leaf in _leaves(e)]
    return [group]


async def _connected_session(
    stream: LiveStream, url: str, headers: list[tuple[bytes, bytes]], connected: trio.Event,
    first: bool, raw: trio.abc.Stream, host: str, resource: str,
) -> BaseException | None:
    from trio_websocket import (
        ConnectionClosed,
        ConnectionRejected,
        HandshakeError,
        wrap_client_stream,
    )

    async with trio.open_nursery() as nursery:
        try:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                ws = await wrap_client_stream(
                    nursery, raw, host, resource,  # type: ignore[arg-type]
                    subprotocols=[subprotocol_of(stream.codec)], extra_headers=headers,
                    max_message_size=MAX_MESSAGE_BYTES,
                )
        except ConnectionRejected as exc:
            nursery.cancel_scope.cancel()
            return _refused(exc, url)
        except (HandshakeError, trio.TooSlowError, trio.BrokenResourceError, OSError) as exc:
            nursery.cancel_scope.cancel()
            return LinkBroken(f"websocket handshake with {url} failed: {exc!r}")
        stream._ws = ws
        try:
            if not first:
                stream.reconnects += 1
            if stream._subscription:
                await ws.send_message(encode({"type": "subscribe", **stream._subscription},
                                             stream.codec))
            connected.set()
            while True:
                message = parse_message(decode(await ws.get_message()))
                if isinstance(message, HelloMessage):
                    stream.hello = message
                stream.received += 1
                await stream._send.send(message)
                if isinstance(message, ByeMessage):
                    return None
        except ConnectionClosed as exc:
            return LinkBroken(f"{url} closed the stream: {exc.reason}")
        except ProtocolError as exc:
            return exc
        finally:
            stream._ws = None
            with trio.move_on_after(1) as cs:
                cs.shield = True
                await ws.aclose()
            # Let the reader task see the server's close reply (the handshake that
            # LiveStream.aclose waits for), but not forever.
            nursery.cancel_scope.deadline = trio.current_time() + 1.0


async def _run(
    stream: LiveStream,
    url: str,
    headers: list[tuple[bytes, bytes]],
    ssl_context: ssl.SSLContext | None,
    reconnect: bool,
    connected: trio.Event,
    delay_s: float,
    max_delay_s: float,
) -> None:
    delay = delay_s
    first = True
    async with stream._send:
        while True:
            error = await _session(stream, url, headers, ssl_context, connected, first)
            if error is None or stream._closing:
                return
            final = not reconnect or isinstance(error, ProtocolError | StreamRefused)
            if final:
                if not connected.is_set():
                    stream._connect_error = error
                    connected.set()
                await stream._send.send(error)
                return
            if connected.is_set():
                first = False
                delay = delay_s
            await trio.sleep(delay)
            delay = min(max_delay_s, delay * 2)


@asynccontextmanager
async def connect(
    url: str,
    *,
    token: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    reconnect: bool = False,
    codec: Codec = "msgpack",
    reconnect_delay_s: float = 0.2,
    max_reconnect_delay_s: float = 5.0,
) -> AsyncIterator[LiveStream]:
    """Open a live stream; see the module docstring.

    Args:
        url: ``ws://host:port`` or ``wss://host:port``.
        token: bearer token (sent as ``Authorization: Bearer``; never logged).
        ssl_context: for wss with a private CA or self-signed certificate
            (:func:`tinytelem.live.security.client_ssl_context`).
        reconnect: retry lost connections with exponential backoff (not refusals).
        codec: ``"msgpack"`` (default) or ``"json"``.

    Raises:
        StreamRefused: the server refused the token.
        LinkBroken: the server is unreachable (and ``reconnect`` is off).
    """
    from tinytelem.live.security import redact_logs

    if not url.startswith(("ws://", "wss://")):
        raise ConfigError(f"stream URL {url!r} must start with ws:// or wss://")
    if codec not in ("msgpack", "json"):
        raise ConfigError(f"codec must be 'msgpack' or 'json', not {codec!r}")
    headers = [(b"Authorization", f"Bearer {token}".encode())] if token else []
    stream = LiveStream(url, codec)
    connected = trio.Event()
    error: BaseException | None = None
    with redact_logs(token):
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_run, stream, url, headers, ssl_context, reconnect,
                                   connected, reconnect_delay_s, max_reconnect_delay_s)
                if not reconnect:
                    await connected.wait()
                    error = stream._connect_error
                if error is None:
                    try:
                        yield stream
                    finally:
                        await stream.aclose()
                        nursery.cancel_scope.cancel()
                else:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The only other task is ours and never raises: a group holds the body's error.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from group.exceptions[0].__cause__
            raise
    if error is not None:
        raise error
