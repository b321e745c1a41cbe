"""The websocket streamer actor: hub records -> stream messages -> every connected client.

::

    hub ──drop-oldest──> pump (one task) ──offer_nowait──> client mailbox ──> sender task ──> ws
                          │  converts each record once        (drop-oldest,     (one per client,
                          │  summaries, raw-sample ring        counted)          awaits only its
                          └──────────────────────────────────────────────────── own socket)

The pump never awaits a client: it *offers* each message to every client's mailbox
(:mod:`tinytelem.live.mailbox`; measured on a prototype, awaiting clients in turn let one
slow client pull the broadcaster down to 10 % of its rate). Each client has one sender task
that awaits only its own socket, so a slow client loses its own oldest *droppable* messages
(spans, raw power) and nothing else; tokens, run events, memory, errors and summaries are
kept. Before the next message it does get, it receives
``{"type": "dropped", "count": n, "classes": {...}, ...}``.

The streamer itself is a *live* hub subscriber, so it can never stall the recorder. It takes
records in batches, and its hub mailbox keeps every record that is not an operator span: if the
pump ever falls behind, the hub drops spans for it, ``stats.server_dropped`` counts them and
every client is told with a ``dropped`` message (``server: true``).

Each client connection is a bulkhead: its tasks catch their own connection's closing and
breakage (and any other failure, which is logged), so one client never ends the session or
the recording. Client messages are validated (:mod:`tinytelem.live.requests`).

One streamer serves one device or, in a lab, many (one :class:`~tinytelem.live.feed.Feed`
each, every message stamped with its ``device_id``; the ``bye`` follows the last device). The
module is over 500 lines and one idea: the listener, the feeds and the fan-out to clients.

Messages are encoded at most once per codec however many clients want them
(:class:`_Prepared`). Power summaries are per client: each chooses a level and a rate in a
``subscribe`` message; its sender batches the buckets of that level and sends them at that rate.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import trio

import tinytelem
from tinytelem.actors.hub import Hub, LiveSubscription
from tinytelem.errors import ConfigError, TinyTelemError
from tinytelem.live.connection import (
    ClientConnection,
    ClientStatistics,
    serve_connection,
)
from tinytelem.live.convert import RecordConverter
from tinytelem.live.feed import Feed
from tinytelem.live.mailbox import Prepared
from tinytelem.live.requests import (
    MAX_CLIENT_MESSAGE_BYTES,
    RawRequest,
    Subscribe,
    parse_client_message,
)
from tinytelem.live.ring import PowerRing
from tinytelem.live.schema import (
    SCHEMA,
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    codec_of,
    decode,
    encode,
)
from tinytelem.live.security import extract_token, redact_logs, token_matches
from tinytelem.live.streamer_config import StreamerConfig, StreamerStatistics
from tinytelem.power.summaries import MultiLevelSummary, level_name
from tinytelem.protocol.messages import SpanBegin, SpanEnd
from tinytelem.records import DeviceRecord, PowerBlock, Record

__all__ = ["ClientStatistics", "Streamer", "StreamerConfig", "StreamerStatistics",
           "is_kept_record"]

log = logging.getLogger("tinytelem.live")

MAX_RAW_SAMPLES = 1 << 20
"""Largest raw_request answer (4 MiB of float32); clients accept messages up to 16 MiB."""
GONE_CLIENTS_KEPT = 1000
"""Per-client counters kept in statistics() for clients that left (the newest ones)."""
PUMP_BATCH = 1 << 16
"""Most records the pump takes from its hub mailbox per task switch. Converting costs ~1 us a
record, so it takes whatever is waiting: the decoder hands the hub thousands of records per
link read at span rates, and a pump taking a few hundred per turn fell behind (measured with
``monitor --device emu:esp32s3 --run --tokens 400``: 8.6 k spans dropped at 512, none here)."""


def is_kept_record(record: Record) -> bool:
    """Records the streamer's hub mailbox never drops for spans: all but SPAN_BEGIN/END."""
    return not (isinstance(record, DeviceRecord)
                and isinstance(record.message, SpanBegin | SpanEnd))


class Streamer:
    """Serve the hub's records to websocket clients (see module docstring).

    Use as an extra actor of the supervisor (``Supervisor(extra_actors=[streamer.run])``) or
    with any :class:`~tinytelem.actors.hub.Hub`. :meth:`run` returns once the hub has finished
    and clients got their ``bye`` (or ``close_grace_s`` passed).

    To let clients connect before the recording starts (``serve --wait-clients``), start
    :meth:`listen` first, :meth:`wait_subscribed`, then run :meth:`attach` as the extra actor.
    """

    def __init__(self, config: StreamerConfig) -> None:
        if config.client_queue < 1 or config.hub_queue < 1 or config.kept_queue < 1:
            raise ConfigError("client_queue, kept_queue and hub_queue must be at least 1")
        self.config = config
        self.port: int | None = None
        self.url: str | None = None
        self._feeds: dict[str | None, Feed] = {}
        self._clients: list[ClientConnection] = []
        self._clients_total = 0
        self._gone: deque[ClientStatistics] = deque(maxlen=GONE_CLIENTS_KEPT)
        """Final counters of clients that left (the newest; their mailboxes are freed)."""
        self._records_in = 0
        self._messages = 0
        self._offered: dict[str, int] = {}
        self._rejected = 0
        self._closed_for_errors = 0
        self._max_offer_s = 0.0
        self._finished = False
        self._changed = trio.lowlevel.ParkingLot()
        self._level_names = [level_name(s) for s in config.levels_s]
        if config.default_level not in self._level_names:
            raise ConfigError(f"default level {config.default_level!r} is not one of "
                              f"{', '.join(self._level_names)}")
        self.ready = trio.Event()
        self.listening = False

    # ------------------------------------------------------------------ feeds

    def add_feed(self, device_id: str | None) -> Feed:
        """Register a device before it starts; the ``bye`` waits until every feed finished."""
        if device_id in self._feeds:
            raise ConfigError(f"device id {device_id!r} is streamed twice; give each device "
                              "its own id")
        feed = self._feeds[device_id] = Feed(device_id)
        return feed

    def _default(self) -> Feed:
        return next(iter(self._feeds.values())) if self._feeds else self.add_feed(None)

    @property
    def converter(self) -> RecordConverter:
        """The (first) device's record converter."""
        return self._default().converter

    @property
    def summary(self) -> MultiLevelSummary | None:
        """The (first) device's power summaries (None before its first power block)."""
        return self._default().summary

    def feed_actor(self, device_id: str, run_uid: str = "") -> Callable[..., Awaitable[None]]:
        """The extra actor that streams one lab device's hub (``attach`` under its id)."""
        self.add_feed(device_id)

        async def actor(hub: Hub, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                        ) -> None:
            await self.attach(hub, task_status=task_status, device_id=device_id)

        return actor

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """The lab's outlet interface: listen until cancelled (:meth:`listen`; when it runs
        already, just wait)."""
        if self.listening:
            task_status.started()
            await trio.sleep_forever()
        await self.listen(task_status=task_status)

    async def device_done(self, result: Any) -> None:
        """The lab's outlet interface: a device ended (see :meth:`abandon`)."""
        await self.abandon(result.device_id)

    async def drain(self) -> bool:
        """The lab's outlet interface: nothing to wait for (the ``bye`` waited already)."""
        return True

    async def abandon(self, device_id: str) -> None:
        """A lab device ended without streaming (it failed to open): count it as finished."""
        feed = self._feeds.get(device_id)
        if feed is not None and not feed.finished:
            await self._feed_finished(feed)

    async def _feed_finished(self, feed: Feed) -> None:
        feed.finished = True
        if all(f.finished for f in self._feeds.values()):
            await self._say_bye("recording finished")

    # ------------------------------------------------------------------ actor

    async def run(
        self, hub: Hub, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen (unless :meth:`listen` already runs), stream until the hub finishes, bye."""
        if self.listening:
            await self.attach(hub, task_status=task_status)
            return
        async with trio.open_nursery() as nursery:
            await nursery.start(self.listen)
            await self.attach(hub, task_status=task_status)
            nursery.cancel_scope.cancel()

    async def listen(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                     ) -> None:
        """Accept clients until cancelled (they get hello, then whatever is streamed).

        The listener and the websocket handshake are ours, not ``serve_websocket``'s, so that
        each connection -- from its first byte, handshake included -- runs behind a bulkhead
        (:func:`~tinytelem.live.connection.serve_connection`): garbage, a reset mid-handshake
        or a failing client never reaches this nursery.
        """
        listen = self.config.listen
        with redact_logs(self.config.token):
            try:
                listeners: list[Any] = list(
                    await trio.open_tcp_listeners(listen.port, host=listen.host))
            except OSError as exc:
                raise ConfigError(
                    f"cannot listen on {listen.url()}: {exc.strerror or exc}; is another "
                    "server using the port? (port 0 picks a free one)"
                ) from exc
            port = int(listeners[0].socket.getsockname()[1])
            if self.config.ssl_context is not None:
                listeners = [trio.SSLListener(lst, self.config.ssl_context,
                                              https_compatible=True) for lst in listeners]
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, self._connection, listeners)
                self.port = port
                self.url = listen.url(port)
                self.listening = True
                log.info("streaming on %s", self.url)
                if self.config.on_listening is not None:
                    self.config.on_listening(self.url)
                self.ready.set()
                task_status.started()
                await trio.sleep_forever()

    async def _connection(self, stream: trio.abc.Stream) -> None:
        if not await serve_connection(stream, self._serve_client, MAX_CLIENT_MESSAGE_BYTES):
            self._closed_for_errors += 1

    async def attach(
        self, hub: Hub, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
        device_id: str | None = None,
    ) -> None:
        """Subscribe to ``hub`` and stream its records until it finishes, then say bye (in a
        lab: once every device's feed finished)."""
        feed = self._feeds.get(device_id) or self.add_feed(device_id)
        sub = hub.subscribe_live("streamer", self.config.hub_queue, keep=is_kept_record,
                                 max_kept=4 * self.config.hub_queue)
        feed.sub = sub
        with redact_logs(self.config.token):
            async with trio.open_nursery() as nursery:
                task_status.started()
                nursery.start_soon(self._stats_loop, feed)
                async with sub:
                    await self._pump(feed, sub)
                await self._feed_finished(feed)
                nursery.cancel_scope.cancel()

    def subscribed_clients(self) -> int:
        """Connected clients that have sent at least one valid ``subscribe``."""
        return sum(1 for c in self._clients if c.subscribed)

    async def wait_subscribed(
        self, n: int, on_change: Callable[[int, int], None] | None = None
    ) -> None:
        """Return once ``n`` connected clients have subscribed; ``on_change(connected,
        subscribed)`` is called at the start and whenever a client comes, subscribes or goes."""
        while True:
            subscribed = self.subscribed_clients()
            if on_change is not None:
                on_change(len(self._clients), subscribed)
            if subscribed >= n:
                return
            await self._changed.park()

    async def _pump(self, feed: Feed, sub: LiveSubscription) -> None:
        while True:
            try:
                records, lost = await sub.receive_batch(PUMP_BATCH)
            except trio.EndOfChannel:
                return
            if lost:
                self._tell_server_drops(feed, sub)
            t0 = time.perf_counter()
            for record in records:
                self._dispatch(feed, record)
            self._records_in += len(records)
            self._max_offer_s = max(self._max_offer_s,
                                    (time.perf_counter() - t0) / len(records))

    def feed(self, record: Record) -> None:
        """Convert and offer one record synchronously (what the pump does for each record)."""
        self._records_in += 1
        self._dispatch(self._default(), record)

    def _tell_server_drops(self, feed: Feed, sub: LiveSubscription) -> None:
        spans_told, kept_told = feed.server_dropped_told
        kept = sub.kept_dropped
        spans = sub.dropped - kept
        classes = {k: v for k, v in (("span", spans - spans_told), ("records", kept - kept_told))
                   if v}
        feed.server_dropped_told = (spans, kept)
        if not classes:
            return
        # Once at WARNING (every client is told each time, in its stream).
        (log.debug if spans_told or kept_told else log.warning)(
            "streamer fell behind: dropped %s records (clients are told)", classes)
        self._broadcast({"type": "dropped", "server": True, "count": sum(classes.values()),
                         "total": sub.dropped, "classes": classes,
                         "totals": {"span": spans, "records": kept}}, feed)

    def _dispatch(self, feed: Feed, record: Record) -> None:
        if isinstance(record, PowerBlock):
            self._power(feed, record)
        for message in feed.converter.convert(record):
            self._broadcast(message, feed)

    def _power(self, feed: Feed, block: PowerBlock) -> None:
        if feed.summary is None:
            feed.sample_rate_hz = block.sample_rate_hz
            feed.summary = MultiLevelSummary(block.sample_rate_hz, self.config.levels_s)
            feed.ring = PowerRing(max(1, int(self.config.ring_seconds * block.sample_rate_hz)))
        assert feed.ring is not None
        feed.voltage_v = block.voltage_v
        feed.ring.push(block.first_index, block.current_a)
        per_level = feed.summary.add_block(block.first_index, block.current_a)
        for client in self._clients:
            rows = per_level[client.level]
            if rows.shape[0]:
                client.add_summary(rows, feed.device_id)
        if any(c.raw for c in self._clients):
            self._broadcast({
                "type": "raw", "live": True, "first_index": int(block.first_index),
                "sample_rate_hz": block.sample_rate_hz, "voltage_v": block.voltage_v,
                "current_a": np.asarray(block.current_a, dtype="<f4").tobytes(),
            }, feed)

    def _broadcast(self, message: dict[str, Any], feed: Feed | None = None) -> None:
        prepared = Prepared(feed.stamp(message) if feed is not None else message)
        self._messages += 1
        kind = message["type"]
        self._offered[kind] = self._offered.get(kind, 0) + 1
        for client in self._clients:
            if client.wants(prepared):
                client.box.offer(prepared)

    async def _stats_loop(self, feed: Feed) -> None:
        while not self._finished:  # nothing after the bye
            await trio.sleep(self.config.stats_interval_s)
            for client in self._clients if not self._finished else ():
                client.box.offer(Prepared(self._stats_map(client, feed)))

    def _stats_map(self, client: ClientConnection, feed: Feed) -> dict[str, Any]:
        c = feed.converter
        return feed.stamp({
            "type": "stats", "host_s": time.monotonic(), "records_in": self._records_in,
            "server_dropped": feed.dropped,
            "sent": client.sent, "dropped": client.box.dropped,
            "dropped_by_class": dict(client.box.dropped_by_class),
            "clients": len(self._clients),
            "link_up": c.link_up, "link_outages": c.link_outages,
            "decode_errors": c.decode_errors, "power_samples": c.power_samples,
            "power_gaps": c.power_gaps, "device_tx_dropped": c.device_tx_dropped,
        })

    async def _say_bye(self, reason: str) -> None:
        self._finished = True
        for feed in self._feeds.values():
            if feed.summary is not None:  # the last, partly filled buckets
                per_level = feed.summary.finish()
                for client in self._clients:
                    if per_level[client.level].shape[0]:
                        client.add_summary(per_level[client.level], feed.device_id)
        for client in self._clients:
            self._flush_summary(client)
            client.box.offer(Prepared({"type": "bye", "reason": reason}))
        # Clients still reading what is queued for them get the time they need (up to
        # close_max_s); a client that took nothing for close_grace_s is not waited for.
        with trio.move_on_after(self.config.close_max_s):
            progress = {id(c): (c.sent, trio.current_time()) for c in self._clients}
            while True:
                now = trio.current_time()
                waiting = False
                for c in self._clients:
                    sent, since = progress.get(id(c), (-1, now))
                    if c.sent != sent:
                        progress[id(c)] = (c.sent, now)
                        since = now
                    waiting = waiting or (c.connected and now - since < self.config.close_grace_s)
                if not waiting:
                    break
                await trio.sleep(0.01)

    # ------------------------------------------------------------------ connections

    def _hello_map(self) -> dict[str, Any]:
        # Not _default(): a client may come before any device is attached, and must not
        # create a feed that nothing would ever finish.
        first = next(iter(self._feeds.values()), None) or Feed(None)
        levels = first.summary.levels if first.summary is not None else None
        lab = first.device_id is not None
        return {
            "type": "hello", "schema": SCHEMA, "version": 1,
            "server": f"tinytelem {tinytelem.__version__}",
            "session": dict(self.config.session),
            "device": None if lab else first.converter.device,
            **({"devices": {f.device_id: f.converter.device for f in self._feeds.values()}}
               if lab else {}),
            "levels": [lv.name for lv in levels] if levels else self._level_names,
            "level_seconds": ([lv.seconds for lv in levels] if levels
                              else list(self.config.levels_s)),
            "sample_rate_hz": first.sample_rate_hz, "queue": self.config.client_queue,
            "kept_queue": self.config.kept_queue,
        }

    async def _serve_client(self, request: Any) -> None:
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
        client = ClientConnection(ws, codec_of(chosen), peer, self.config.client_queue,
                                  self.config.kept_queue,
                                  self._level_names.index(self.config.default_level),
                                  self.config.default_rate_hz, self.config.client_bytes)
        client.next_summary = trio.current_time() + 1.0 / client.rate_hz
        log.info("client %s connected (%s)", peer, client.codec)
        self._clients_total += 1
        try:
            hello = encode(self._hello_map(), client.codec)
            if not self._finished:
                # Registered before the hello goes out: anything broadcast while it is being
                # sent (the device's HELLO, say) queues for this client instead of missing it.
                self._clients.append(client)
                self._changed.unpark_all()
            await ws.send_message(hello)
            if self._finished and client not in self._clients:
                await ws.send_message(encode({"type": "bye", "reason": "recording finished"},
                                             client.codec))
                await ws.aclose(1000, "recording finished")
                return
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.receive, self.handle_payload, nursery.cancel_scope)
                await client.send(self._flush_summary_map)
                nursery.cancel_scope.cancel()
        finally:
            client.connected = False
            if client in self._clients:
                self._clients.remove(client)
            client.box.clear()  # a long serve must not keep what a gone client never read
            client.summary_rows.clear()
            self._gone.append(client.statistics())
            with trio.move_on_after(1) as cs:  # close politely, even when cancelled
                cs.shield = True
                await ws.aclose(1001, "going away")
            self._changed.unpark_all()
            log.info("client %s gone: sent %d, dropped %d", peer, client.sent,
                     client.box.dropped)

    def _flush_summary(self, client: ClientConnection) -> None:
        for message in self._flush_summary_map(client):
            client.box.offer(Prepared(message))

    def _flush_summary_map(self, client: ClientConnection) -> list[dict[str, Any]]:
        """One ``summary`` message per device with buckets waiting for ``client``."""
        messages = []
        for device_id, pending in client.summary_rows.items():
            feed = self._feeds.get(device_id)
            if not pending or feed is None or feed.summary is None:
                continue
            rows = np.concatenate(pending)
            level = feed.summary.levels[client.level]
            messages.append(feed.stamp({
                "type": "summary", "level": level.name, "level_s": level.seconds,
                "sample_rate_hz": feed.sample_rate_hz, "voltage_v": feed.voltage_v,
                **{name: rows[name].tolist() for name in ("first_index", "n", "mean", "std",
                                                           "min", "max")},
            }))
        client.summary_rows.clear()
        client.summary_count = 0
        return messages

    def handle_payload(self, client: ClientConnection, payload: bytes | str) -> bool:
        """Apply one client message (sans I/O). A bad one is answered with an ``error``
        message in the client's mailbox; returns whether it was applied."""
        try:
            self._on_client_message(client, parse_client_message(decode(payload)))
        except TinyTelemError as exc:
            client.bad_requests += 1
            client.box.offer(Prepared({"type": "error", "host_s": time.monotonic(),
                                       "text": str(exc)}))
            return False
        return True

    def _on_client_message(self, client: ClientConnection, request: Subscribe | RawRequest) -> None:
        if isinstance(request, Subscribe):
            if request.level is not None:
                if request.level not in self._level_names:
                    raise ConfigError(f"no summary level {request.level!r}; levels are "
                                      f"{', '.join(self._level_names)}")
                client.level = self._level_names.index(request.level)
                client.summary_rows.clear()
                client.summary_count = 0
            if request.rate_hz is not None:
                client.rate_hz = request.rate_hz
                client.next_summary = trio.current_time() + 1.0 / request.rate_hz
            if request.raw is not None:
                client.raw = request.raw
            if request.events is not None:
                client.events = request.events
            if request.spans is not None:
                client.spans = request.spans
            raw_spans = any(c.spans == "raw" for c in self._clients)
            for feed in self._feeds.values():
                feed.converter.raw_spans = raw_spans
            if not client.subscribed:
                client.subscribed = True
                self._changed.unpark_all()
            return
        feeds = [f for f in self._feeds.values() if f.ring is not None]
        if not feeds:
            raise ConfigError("no power samples yet; ask again once power is streaming")
        for feed in feeds:  # in a lab: one answer per device with power
            assert feed.ring is not None
            n = int(request.seconds * feed.sample_rate_hz)
            first, samples = feed.ring.latest(min(n, MAX_RAW_SAMPLES))
            client.box.offer(Prepared(feed.stamp({
                "type": "raw", "live": False, "first_index": first,
                "sample_rate_hz": feed.sample_rate_hz, "voltage_v": feed.voltage_v,
                "current_a": samples.astype("<f4").tobytes(),
            })))

    def statistics(self) -> StreamerStatistics:
        """Counters (immutable snapshot)."""
        return StreamerStatistics(
            records_in=self._records_in,
            server_dropped=sum(f.dropped for f in self._feeds.values()),
            messages=self._messages,
            clients_total=self._clients_total,
            clients_connected=len(self._clients),
            rejected=self._rejected,
            max_offer_s=self._max_offer_s,
            clients=(*self._gone, *(c.statistics() for c in self._clients)),
            server_dropped_kept=sum(f.kept_dropped for f in self._feeds.values()),
            closed_for_errors=self._closed_for_errors,
            offered_by_type=dict(self._offered),
        )
