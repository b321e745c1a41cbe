"""The websocket streamer actor: hub records -> stream messages -> every connected client.

::

    hub ──drop-oldest──> pump (one task) ──offer_nowait──> client mailbox ──> sender task ──> ws
                          │  converts each record once        (drop-oldest,     (one per client,
                          │  summaries, raw-sample ring        counted)          awaits only its
                          └──────────────────────────────────────────────────── own socket)

The pump never awaits a client: it *offers* each message to every client's mailbox, a deque
that drops its oldest entry when full (FINDINGS: awaiting clients in turn let one slow client
pull the broadcaster down to 10 % of its rate). Each client has one sender task that awaits only
its own socket, so a slow client loses its own oldest messages and nothing else. Before the
next message it does get, it receives ``{"type": "dropped", "count": n, "total": t}``.

The streamer itself is a *live* hub subscriber, so it can never stall the recorder; if the pump
ever falls behind, the hub drops for it and ``stats.server_dropped`` says so.

Messages are encoded at most once per codec however many clients want them
(:class:`_Prepared`). Power summaries are per client: each chooses a level and a rate in a
``subscribe`` message; its sender batches the buckets of that level and sends them at that rate.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio

import tinytelem
from tinytelem.actors.hub import Hub, LiveSubscription
from tinytelem.errors import ConfigError, ProtocolError
from tinytelem.live.convert import RecordConverter
from tinytelem.live.ring import PowerRing
from tinytelem.live.schema import (
    SCHEMA,
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    Codec,
    codec_of,
    decode,
    encode,
)
from tinytelem.live.security import ListenAddress, extract_token, redact_logs, token_matches
from tinytelem.power.summaries import DEFAULT_LEVELS_S, MultiLevelSummary, level_name
from tinytelem.records import PowerBlock, Record

__all__ = ["ClientStatistics", "Streamer", "StreamerConfig", "StreamerStatistics"]

log = logging.getLogger("tinytelem.live")

MAX_RAW_SAMPLES = 1 << 20
"""Largest raw_request answer (4 MiB of float32); clients accept messages up to 16 MiB."""


@dataclass
class StreamerConfig:
    """How the streamer listens and how much it buffers."""

    listen: ListenAddress
    token: str | None = None
    ssl_context: Any = None
    """``ssl.SSLContext`` for wss (see :func:`tinytelem.live.security.server_ssl_context`)."""
    client_queue: int = 1024
    """Messages that may wait for one client before its oldest are dropped."""
    hub_queue: int = 16384
    """The streamer's own hub mailbox (records)."""
    stats_interval_s: float = 1.0
    levels_s: tuple[float, ...] = DEFAULT_LEVELS_S
    default_level: str = "100ms"
    default_rate_hz: float = 5.0
    ring_seconds: float = 2.0
    """Raw samples kept for ``raw_request``."""
    close_grace_s: float = 5.0
    """At the end, how long clients get to receive what is queued and the ``bye``."""
    session: Mapping[str, Any] = field(default_factory=dict)
    """Facts for the hello message (device URL, platform, prompt...). Never secrets."""
    on_listening: Callable[[str], None] | None = None
    """Called with the actual URL once the server listens (port 0 resolved)."""


@dataclass(frozen=True, slots=True)
class ClientStatistics:
    """Counters of one client connection."""

    peer: str
    codec: str
    sent: int
    dropped: int
    high_water: int
    connected: bool


@dataclass(frozen=True, slots=True)
class StreamerStatistics:
    """Counters of the streamer (immutable snapshot)."""

    records_in: int
    server_dropped: int
    messages: int
    """Messages the pump offered (each counted once, however many clients took it)."""
    clients_total: int
    clients_connected: int
    rejected: int
    max_offer_s: float
    """Longest time the pump spent handing one record to every client (never awaits them)."""
    clients: tuple[ClientStatistics, ...]


class _Prepared:
    """One message map, encoded lazily and at most once per codec."""

    __slots__ = ("_cache", "map")

    def __init__(self, message: dict[str, Any]) -> None:
        self.map = message
        self._cache: dict[str, bytes | str] = {}

    def payload(self, codec: Codec) -> bytes | str:
        cached = self._cache.get(codec)
        if cached is None:
            cached = self._cache[codec] = encode(self.map, codec)
        return cached


class _Client:
    """Mailbox and subscription of one websocket client."""

    def __init__(self, ws: Any, codec: Codec, peer: str, maxlen: int, level: int,
                 rate_hz: float) -> None:
        self.ws = ws
        self.codec: Codec = codec
        self.peer = peer
        self.maxlen = maxlen
        self.items: deque[_Prepared] = deque()
        self.lot = trio.lowlevel.ParkingLot()
        self.dropped = 0
        self.dropped_since_send = 0
        self.sent = 0
        self.high_water = 0
        self.level = level
        self.rate_hz = rate_hz
        self.raw = False
        self.events = True
        self.summary_rows: list[np.ndarray] = []
        self.summary_count = 0
        self.next_summary = 0.0
        self.closing = False
        self.connected = True

    def offer(self, item: _Prepared) -> None:
        if len(self.items) >= self.maxlen:
            self.items.popleft()
            self.dropped += 1
            self.dropped_since_send += 1
        self.items.append(item)
        self.high_water = max(self.high_water, len(self.items))
        self.lot.unpark_all()

    def add_summary(self, rows: np.ndarray) -> None:
        self.summary_rows.append(rows)
        self.summary_count += int(rows.shape[0])
        # Bounded like the mailbox: a client that stopped reading loses its oldest buckets.
        while self.summary_count > self.maxlen * 16 and len(self.summary_rows) > 1:
            lost = self.summary_rows.pop(0)
            self.summary_count -= int(lost.shape[0])
            self.dropped += 1
            self.dropped_since_send += 1
        self.lot.unpark_all()

    def statistics(self) -> ClientStatistics:
        return ClientStatistics(self.peer, self.codec, self.sent, self.dropped, self.high_water,
                                self.connected)


class Streamer:
    """Serve the hub's records to websocket clients (see module docstring).

    Use as an extra actor of the supervisor (``Supervisor(extra_actors=[streamer.run])``) or
    with any :class:`~tinytelem.actors.hub.Hub`. :meth:`run` returns once the hub has finished
    and clients got their ``bye`` (or ``close_grace_s`` passed).
    """

    def __init__(self, config: StreamerConfig) -> None:
        if config.client_queue < 1 or config.hub_queue < 1:
            raise ConfigError("client_queue and hub_queue must be at least 1")
        self.config = config
        self.port: int | None = None
        self.url: str | None = None
        self.converter = RecordConverter()
        self.summary: MultiLevelSummary | None = None
        self.ring: PowerRing | None = None
        self.voltage_v = math.nan
        self.sample_rate_hz = math.nan
        self._clients: list[_Client] = []
        self._all_clients: list[_Client] = []
        self._sub: LiveSubscription | None = None
        self._records_in = 0
        self._messages = 0
        self._rejected = 0
        self._max_offer_s = 0.0
        self._finished = False
        self._level_names = [level_name(s) for s in config.levels_s]
        if config.default_level not in self._level_names:
            raise ConfigError(f"default level {config.default_level!r} is not one of "
                              f"{', '.join(self._level_names)}")
        self.ready = trio.Event()

    # ------------------------------------------------------------------ actor

    async def run(
        self, hub: Hub, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Subscribe to ``hub``, listen, stream until the hub finishes, then say bye."""
        from trio_websocket import serve_websocket

        sub = hub.subscribe_live("streamer", self.config.hub_queue)
        self._sub = sub
        listen = self.config.listen
        with redact_logs(self.config.token):
            async with trio.open_nursery() as nursery:
                try:
                    server = await nursery.start(
                        lambda task_status: serve_websocket(
                            self._handle, listen.host, listen.port, self.config.ssl_context,
                            handler_nursery=nursery, max_message_size=64 * 1024,
                            task_status=task_status,
                        )
                    )
                except OSError as exc:
                    raise ConfigError(
                        f"cannot listen on {listen.url()}: {exc.strerror or exc}; is another "
                        "server using the port? (port 0 picks a free one)"
                    ) from exc
                self.port = int(server.port)
                self.url = listen.url(self.port)
                log.info("streaming on %s", self.url)
                if self.config.on_listening is not None:
                    self.config.on_listening(self.url)
                self.ready.set()
                task_status.started()
                nursery.start_soon(self._stats_loop)
                async with sub:
                    await self._pump(sub)
                await self._say_bye("recording finished")
                nursery.cancel_scope.cancel()

    async def _pump(self, sub: LiveSubscription) -> None:
        while True:
            try:
                record, _lost = await sub.receive()
            except trio.EndOfChannel:
                return
            self._records_in += 1
            t0 = time.perf_counter()
            self._dispatch(record)
            self._max_offer_s = max(self._max_offer_s, time.perf_counter() - t0)

    def feed(self, record: Record) -> None:
        """Convert and offer one record synchronously (what the pump does for each record)."""
        self._records_in += 1
        self._dispatch(record)

    def _dispatch(self, record: Record) -> None:
        if isinstance(record, PowerBlock):
            self._power(record)
        for message in self.converter.convert(record):
            self._broadcast(message, event=True)

    def _power(self, block: PowerBlock) -> None:
        if self.summary is None:
            self.sample_rate_hz = block.sample_rate_hz
            self.summary = MultiLevelSummary(block.sample_rate_hz, self.config.levels_s)
            self.ring = PowerRing(max(1, int(self.config.ring_seconds * block.sample_rate_hz)))
        assert self.ring is not None
        self.voltage_v = block.voltage_v
        self.ring.push(block.first_index, block.current_a)
        per_level = self.summary.add_block(block.first_index, block.current_a)
        for client in self._clients:
            rows = per_level[client.level]
            if rows.shape[0]:
                client.add_summary(rows)
        if any(c.raw for c in self._clients):
            raw = _Prepared({
                "type": "raw", "live": True, "first_index": int(block.first_index),
                "sample_rate_hz": block.sample_rate_hz, "voltage_v": block.voltage_v,
                "current_a": np.asarray(block.current_a, dtype="<f4").tobytes(),
            })
            self._messages += 1
            for client in self._clients:
                if client.raw:
                    client.offer(raw)

    def _broadcast(self, message: dict[str, Any], *, event: bool) -> None:
        prepared = _Prepared(message)
        self._messages += 1
        for client in self._clients:
            if client.events or not event:
                client.offer(prepared)

    async def _stats_loop(self) -> None:
        while True:
            await trio.sleep(self.config.stats_interval_s)
            for client in self._clients:
                client.offer(_Prepared(self._stats_map(client)))

    def _stats_map(self, client: _Client) -> dict[str, Any]:
        c = self.converter
        return {
            "type": "stats", "host_s": time.monotonic(), "records_in": self._records_in,
            "server_dropped": self._sub.dropped if self._sub is not None else 0,
            "sent": client.sent, "dropped": client.dropped, "clients": len(self._clients),
            "link_up": c.link_up, "link_outages": c.link_outages,
            "decode_errors": c.decode_errors, "power_samples": c.power_samples,
            "power_gaps": c.power_gaps, "device_tx_dropped": c.device_tx_dropped,
        }

    async def _say_bye(self, reason: str) -> None:
        self._finished = True
        if self.summary is not None:  # the last, partly filled buckets
            per_level = self.summary.finish()
            for client in self._clients:
                if per_level[client.level].shape[0]:
                    client.add_summary(per_level[client.level])
        for client in self._clients:
            self._flush_summary(client)
            client.offer(_Prepared({"type": "bye", "reason": reason}))
            client.closing = True
        with trio.move_on_after(self.config.close_grace_s):
            while any(c.connected for c in self._clients):
                await trio.sleep(0.01)

    # ------------------------------------------------------------------ connections

    def _hello_map(self) -> dict[str, Any]:
        levels = self.summary.levels if self.summary is not None else None
        return {
            "type": "hello", "schema": SCHEMA, "version": 1,
            "server": f"tinytelem {tinytelem.__version__}",
            "session": dict(self.config.session),
            "device": self.converter.device,
            "levels": [lv.name for lv in levels] if levels else self._level_names,
            "level_seconds": ([lv.seconds for lv in levels] if levels
                              else list(self.config.levels_s)),
            "sample_rate_hz": self.sample_rate_hz, "queue": self.config.client_queue,
        }

    async def _handle(self, request: Any) -> None:
        from trio_websocket import ConnectionClosed

        peer = str(request.remote)
        expected = self.config.token
        if expected is not None and not token_matches(
            extract_token(request.headers, request.path), expected
        ):
            self._rejected += 1
            log.warning("refused %s: missing or wrong bearer token", peer)
            await request.reject(
                401, extra_headers=[(b"WWW-Authenticate", b'Bearer realm="tinytelem"')],
                body=b"401 unauthorized: missing or wrong bearer token; send 'Authorization: "
                     b"Bearer <token>' (the token the server was started with)",
            )
            return
        proposed = request.proposed_subprotocols
        chosen = next((p for p in proposed if p in (SUBPROTOCOL_MSGPACK, SUBPROTOCOL_JSON)),
                      None)
        ws = await request.accept(subprotocol=chosen)
        client = _Client(ws, codec_of(chosen), peer, self.config.client_queue,
                         self._level_names.index(self.config.default_level),
                         self.config.default_rate_hz)
        client.next_summary = trio.current_time() + 1.0 / client.rate_hz
        log.info("client %s connected (%s)", peer, client.codec)
        self._all_clients.append(client)
        try:
            hello = encode(self._hello_map(), client.codec)
            if not self._finished:
                # Registered before the hello goes out: anything broadcast while it is being
                # sent (the device's HELLO, say) queues for this client instead of missing it.
                self._clients.append(client)
            await ws.send_message(hello)
            if self._finished and client not in self._clients:
                await ws.send_message(encode({"type": "bye", "reason": "recording finished"},
                                             client.codec))
                return
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._receiver, client, nursery.cancel_scope)
                await self._sender(client)
                nursery.cancel_scope.cancel()
        except ConnectionClosed:
            pass
        finally:
            client.connected = False
            if client in self._clients:
                self._clients.remove(client)
            log.info("client %s gone: sent %d, dropped %d", peer, client.sent, client.dropped)

    async def _sender(self, client: _Client) -> None:
        ws = client.ws
        while True:
            if not client.items:
                wake = client.next_summary if client.summary_rows else math.inf
                with trio.move_on_at(wake):
                    await client.lot.park()
            if client.summary_rows and trio.current_time() >= client.next_summary:
                client.next_summary = trio.current_time() + 1.0 / client.rate_hz
                message = self._flush_summary_map(client)
                if message is not None:
                    await ws.send_message(encode(message, client.codec))
                    client.sent += 1
            if not client.items:
                continue
            # One item per round, so summaries stay on time under a steady flow of events.
            item = client.items.popleft()
            if client.dropped_since_send:
                lost, client.dropped_since_send = client.dropped_since_send, 0
                await ws.send_message(encode(
                    {"type": "dropped", "count": lost, "total": client.dropped}, client.codec))
            await ws.send_message(item.payload(client.codec))
            client.sent += 1
            if item.map.get("type") == "bye":
                await ws.aclose(1000, "recording finished")
                return

    def _flush_summary(self, client: _Client) -> None:
        message = self._flush_summary_map(client)
        if message is not None:
            client.offer(_Prepared(message))

    def _flush_summary_map(self, client: _Client) -> dict[str, Any] | None:
        if not client.summary_rows or self.summary is None:
            return None
        rows = np.concatenate(client.summary_rows)
        client.summary_rows.clear()
        client.summary_count = 0
        level = self.summary.levels[client.level]
        return {
            "type": "summary", "level": level.name, "level_s": level.seconds,
            "sample_rate_hz": self.sample_rate_hz, "voltage_v": self.voltage_v,
            **{name: rows[name].tolist() for name in ("first_index", "n", "mean", "std", "min",
                                                       "max")},
        }

    async def _receiver(self, client: _Client, scope: trio.CancelScope) -> None:
        from trio_websocket import ConnectionClosed

        try:
            while True:
                payload = await client.ws.get_message()
                try:
                    self._on_client_message(client, decode(payload))
                except (ProtocolError, ConfigError, ValueError, TypeError) as exc:
                    client.offer(_Prepared({"type": "error", "host_s": time.monotonic(),
                                            "text": str(exc)}))
        except ConnectionClosed:
            scope.cancel()

    def _on_client_message(self, client: _Client, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "subscribe":
            if "level" in message:
                name = str(message["level"])
                if name not in self._level_names:
                    raise ConfigError(f"no summary level {name!r}; levels are "
                                      f"{', '.join(self._level_names)}")
                client.level = self._level_names.index(name)
                client.summary_rows.clear()
                client.summary_count = 0
            if "rate_hz" in message:
                rate = float(message["rate_hz"])
                if not 0.1 <= rate <= 100.0:
                    raise ConfigError(f"rate_hz must be within 0.1 .. 100, got {rate}")
                client.rate_hz = rate
                client.next_summary = trio.current_time() + 1.0 / rate
            client.raw = bool(message.get("raw", client.raw))
            client.events = bool(message.get("events", client.events))
        elif kind == "raw_request":
            seconds = float(message.get("seconds", 0.1))
            if self.ring is None:
                raise ConfigError("no power samples yet; ask again once power is streaming")
            n = int(max(0.0, seconds) * self.sample_rate_hz)
            first, samples = self.ring.latest(min(n, MAX_RAW_SAMPLES))
            client.offer(_Prepared({
                "type": "raw", "live": False, "first_index": first,
                "sample_rate_hz": self.sample_rate_hz, "voltage_v": self.voltage_v,
                "current_a": samples.astype("<f4").tobytes(),
            }))
        else:
            raise ConfigError(f"unknown client message type {kind!r}; send 'subscribe' or "
                              "'raw_request'")

    def statistics(self) -> StreamerStatistics:
        """Counters (immutable snapshot)."""
        return StreamerStatistics(
            records_in=self._records_in,
            server_dropped=self._sub.dropped if self._sub is not None else 0,
            messages=self._messages,
            clients_total=len(self._all_clients),
            clients_connected=len(self._clients),
            rejected=self._rejected,
            max_offer_s=self._max_offer_s,
            clients=tuple(c.statistics() for c in self._all_clients),
        )
