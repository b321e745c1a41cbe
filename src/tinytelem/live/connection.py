"""One websocket client of the streamer: its subscription, mailbox and sender.

The sender awaits only this client's socket, so a slow client slows nobody else; what it
cannot take in time is dropped from its own mailbox by class (:mod:`tinytelem.live.mailbox`)
and told before the next message it gets. Its connection closing or breaking ends this client
only (:func:`split_connection_errors` tells those apart from real failures).
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

from tinytelem.live.mailbox import Mailbox, Prepared
from tinytelem.live.schema import Codec, encode

__all__ = ["DEVICE_EVENTS", "ClientConnection", "ClientStatistics", "connection_errors",
           "serve_connection", "split_exception"]

DEVICE_EVENTS = frozenset({"token", "span", "layers", "memory", "run", "device", "log"})
MAX_BAD_REQUESTS = 64
"""A client whose requests were refused this many times is closed (1008, policy violation)."""

log = logging.getLogger("tinytelem.live")


@dataclass(frozen=True, slots=True)
class ClientStatistics:
    """Counters of one client connection."""

    peer: str
    codec: str
    sent: int
    dropped: int
    high_water: int
    connected: bool
    dropped_by_class: dict[str, int] = field(default_factory=dict)


class ClientConnection:
    """Mailbox, subscription and sender of one websocket client."""

    def __init__(self, ws: Any, codec: Codec, peer: str, client_queue: int, kept_queue: int,
                 level: int, rate_hz: float, client_bytes: int = 8 << 20) -> None:
        self.ws = ws
        self.codec: Codec = codec
        self.peer = peer
        self.box = Mailbox(client_queue, kept_queue, client_bytes)
        self.summary_max = kept_queue  # buckets: summaries are a kept class
        self.sent = 0
        self.level = level
        self.rate_hz = rate_hz
        self.raw = False
        self.events = True
        self.spans = "layers"
        self.subscribed = False
        self.bad_requests = 0
        self.summary_rows: dict[str | None, list[np.ndarray]] = {}
        """Power buckets waiting for the next ``summary`` message, per device (a lab streams
        several; a single-device stream keys them under None)."""
        self.summary_count = 0
        self.next_summary = 0.0
        self.connected = True

    def wants(self, item: Prepared) -> bool:
        kind = item.map["type"]
        if kind in DEVICE_EVENTS and not self.events:
            return False
        if kind == "span":
            return self.spans == "raw"
        if kind == "layers":
            return self.spans == "layers"
        if kind == "raw":
            return self.raw
        return True

    def add_summary(self, rows: np.ndarray, device_id: str | None = None) -> None:
        pending = self.summary_rows.setdefault(device_id, [])
        pending.append(rows)
        self.summary_count += int(rows.shape[0])
        # Bounded too: a client that stopped reading loses its oldest buckets (counted).
        while self.summary_count > self.summary_max and len(pending) > 1:
            lost = pending.pop(0)
            self.summary_count -= int(lost.shape[0])
            self.box.count_lost("summary", 1)
        self.box.lot.unpark_all()

    def statistics(self) -> ClientStatistics:
        return ClientStatistics(self.peer, self.codec, self.sent, self.box.dropped,
                                self.box.high_water, self.connected,
                                dict(self.box.dropped_by_class))


    async def receive(self, handle: Callable[[ClientConnection, bytes | str], bool],
                      scope: trio.CancelScope) -> None:
        """Read this client's requests and ``handle`` each (False: refused, answered with an
        error); the connection ending, or too many refusals, cancels ``scope``."""
        from trio_websocket import ConnectionClosed

        try:
            while True:
                if not handle(self, await self.ws.get_message()) and \
                        self.bad_requests >= MAX_BAD_REQUESTS:
                    log.warning("client %s: %d bad requests, closing it", self.peer,
                                self.bad_requests)
                    await self.ws.aclose(1008, "too many bad requests")
                    break
        except ConnectionClosed:
            pass
        scope.cancel()

    async def send(self, summary_map: Callable[[ClientConnection], list[dict[str, Any]]]
                   ) -> None:
        """Send this client's messages until bye or its connection ends (then return).

        ``summary_map(self)`` turns the buckets waiting for this client into ``summary``
        messages, one per device (sent at the client's rate, between other messages).
        """
        from trio_websocket import ConnectionClosed

        try:
            await self._send_loop(summary_map)
        except ConnectionClosed:
            return

    async def _send_loop(self, summary_map: Callable[[ClientConnection], list[dict[str, Any]]]
                         ) -> None:
        client = self
        ws = client.ws
        box = client.box
        while True:
            if not len(box) and not box.has_untold:
                wake = client.next_summary if client.summary_rows else math.inf
                with trio.move_on_at(wake):
                    await box.lot.park()
            if client.summary_rows and trio.current_time() >= client.next_summary:
                client.next_summary = trio.current_time() + 1.0 / client.rate_hz
                for message in summary_map(client):
                    await ws.send_message(encode(message, client.codec))
                    client.sent += 1
            notice = box.drop_notice()
            if notice is not None:
                await ws.send_message(encode(notice, client.codec))
                client.sent += 1
            # One item per round, so summaries stay on time under a steady flow of events.
            item = box.pop()
            if item is None:
                continue
            await ws.send_message(item.payload(client.codec))
            client.sent += 1
            if item.map["type"] == "bye":
                await ws.aclose(1000, "recording finished")
                return


def connection_errors() -> tuple[type[BaseException], ...]:
    """What a client's connection closing or breaking raises (not a failure of ours)."""
    from trio_websocket import ConnectionClosed, HandshakeError

    return (ConnectionClosed, HandshakeError, trio.BrokenResourceError,
            trio.ClosedResourceError, OSError)


def split_exception(exc: BaseException, types: tuple[type[BaseException], ...]
                    ) -> tuple[BaseException | None, BaseException | None]:
    """(the part of ``exc`` matching ``types``, the rest); either may be None."""
    if isinstance(exc, BaseExceptionGroup):
        matched, rest = exc.split(types)
        return matched, rest
    return (exc, None) if isinstance(exc, types) else (None, exc)


HANDSHAKE_TIMEOUT_S = 10.0


def _peer(stream: Any) -> str:
    sock = getattr(getattr(stream, "transport_stream", stream), "socket", None)
    try:
        host, port = sock.getpeername()[:2] if sock is not None else ("?", 0)
    except OSError:
        return "?"
    return f"{host}:{port}"


async def serve_connection(stream: trio.abc.Stream,
                           serve: Callable[[Any], Awaitable[None]],
                           max_message_size: int) -> bool:
    """One TCP (or TLS) connection, from the websocket handshake to the end, as a bulkhead.

    ``serve(request)`` handles the websocket request once the handshake arrived (within
    ``HANDSHAKE_TIMEOUT_S``). trio-websocket's own reader task runs in a nursery here too, so
    whatever fails -- garbage instead of HTTP, a reset during the handshake, a broken TLS
    session, an unexpected error in ``serve`` -- ends this connection only. Nothing reaches
    the caller (the session) except the session's own cancellation: the connection closing or
    breaking is logged at INFO, anything else at ERROR with its traceback. Returns False when
    it ended with such an unexpected error.
    """
    from trio_websocket import wrap_server_stream

    peer = _peer(stream)

    async def connection() -> None:
        try:
            async with trio.open_nursery() as nursery:
                request = None
                with trio.move_on_after(HANDSHAKE_TIMEOUT_S):
                    request = await wrap_server_stream(nursery, stream,
                                                       max_message_size=max_message_size)
                if request is not None:
                    await serve(request)
                nursery.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(stream)

    try:
        await connection()
    except BaseException as exc:  # sorted below; Cancelled is re-raised
        cancelled, rest = split_exception(exc, (trio.Cancelled,))
        failure = None
        if rest is not None:
            _gone, failure = split_exception(rest, connection_errors())
            if failure is not None:
                log.error("client %s: closed after an unexpected error (the session goes on)",
                          peer, exc_info=failure)
            else:
                log.info("client %s: connection lost (%r)", peer, rest)
        if cancelled is not None:
            raise cancelled from None
        return failure is None
    return True
