"""Publish what the websocket stream carries to an MQTT broker (``record --publish URL``).

::

    hub ──drop-oldest──> feed actor (one per device) ──offer──> MqttConnection outbox ──> broker
                          converts records once           (QoS 1 kept until PUBACK,
                          (RecordConverter, the stream's    QoS 0 bounded, drop-oldest)
                           own maps), power at one level

Topics are ``PREFIX/<host>/<device id>/<class>`` where class is the stream class of the
message (docs/streaming.md: ``token``, ``span``, ``summary``, ``run``, ``memory``, ``error``,
``stats``) or one of the publisher's own: ``run_summary`` (one per run, at its INFER_END:
token counts, TTFT, decode rate and inter-token latency from device time) and
``session_summary`` (once per recording, the trace's summary -- what ``summary.json`` holds
and ``compare``/``report`` read). Payloads are the websocket message maps, msgpack (default)
or JSON, with ``host`` and ``device_id`` added, and every summary carries ``run_uid`` (unique
per recording), so a collector can keep each exactly once.

QoS 1 for the ``run`` class and both summaries; QoS 0 for everything else (high-rate data).
The publisher is a *live* hub subscriber and the outbox never blocks: a broker outage costs
only dropped QoS 0 messages (counted per class in the ``stats`` messages) and never touches
the recording; QoS 1 messages wait and go out when the broker is back.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import trio

from tinytelem.actors.hub import Hub
from tinytelem.errors import ConfigError
from tinytelem.live.feed import Feed
from tinytelem.live.mailbox import CLASS_OF_TYPE
from tinytelem.live.mqtt import BrokerConfig, MqttConnection, OutMessage
from tinytelem.live.schema import Codec, encode
from tinytelem.power.summaries import MultiLevelSummary, level_name
from tinytelem.records import PowerBlock

__all__ = ["QOS1_CLASSES", "Publisher", "RunFold", "payload_codec", "topic"]

QOS1_CLASSES = frozenset({"run", "run_summary", "session_summary"})
POWER_LEVEL_S = 0.1
"""Power statistics are published at the 100 ms level, batched once a second."""
FLUSH_S = 1.0
STATS_S = 5.0
HUB_QUEUE = 16384


def topic(prefix: str, host: str, device_id: str, kind: str) -> str:
    """``PREFIX/<host>/<device id>/<class>``."""
    return f"{prefix}/{host}/{device_id}/{kind}"


def payload_codec(payload: bytes) -> Codec:
    """A JSON payload is an object (``{``); anything else is msgpack (a map never starts with
    that byte)."""
    return "json" if payload[:1] == b"{" else "msgpack"


class RunFold:
    """One run's figures folded from its stream messages (device time), for ``run_summary``."""

    def __init__(self) -> None:
        self.begin: dict[str, Any] | None = None
        self.decode_s: list[float] = []
        self.prefill = 0

    def take(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """Fold one message in; at the run's end, return its summary fields."""
        kind = message["type"]
        if kind == "token":
            if message["phase"] == 0:
                self.prefill += 1
            else:
                self.decode_s.append(float(message["device_s"]))
        elif kind == "run" and message["event"] == "begin":
            self.begin, self.decode_s, self.prefill = message, [], 0
        elif kind == "run" and message["event"] == "end":
            out = self._fields(message)
            self.begin = None
            return out
        return None

    def _fields(self, end: dict[str, Any]) -> dict[str, Any]:
        d = self.decode_s
        itl = np.diff(np.asarray(d)) if len(d) > 1 else np.zeros(0)
        begin = self.begin
        span = d[-1] - d[0] if len(d) > 1 else math.nan
        return {
            "run_id": int(end["run_id"]), "status": int(end["status"]),
            "n_prompt": int(begin["n_prompt"]) if begin else None,
            "n_generated": int(end["n_generated"]),
            "tokens_received": {"prompt": self.prefill, "decode": len(d)},
            "ttft_s": d[0] - float(begin["device_s"]) if begin and d else None,
            "decode_tok_s": (len(d) - 1) / span if span > 0 else None,
            "itl_p50_s": float(np.percentile(itl, 50)) if itl.size else None,
            "itl_p99_s": float(np.percentile(itl, 99)) if itl.size else None,
            "begin_host_s": float(begin["host_s"]) if begin else None,
            "end_host_s": float(end["host_s"]),
        }


class Publisher:
    """The MQTT outlet of a recording or a lab (see module docstring)."""

    def __init__(self, config: BrokerConfig, *, host: str | None = None,
                 codec: Codec = "msgpack", bulk_queue: int = 10000,
                 drain_s: float = 60.0) -> None:
        self.config = config
        self.host = host or socket.gethostname()
        if "/" in self.host or "+" in self.host or "#" in self.host:
            raise ConfigError(f"host name {self.host!r} cannot be an MQTT topic level; pass "
                              "--host NAME")
        self.codec: Codec = codec
        self.drain_s = drain_s
        self.connection = MqttConnection(
            config, client_id=f"tinytelem-{self.host}-{os.getpid()}", bulk_queue=bulk_queue)
        self._feeds: dict[str, Feed] = {}

    # ------------------------------------------------------------------ outlet interface

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Hold the broker connection until cancelled. Returns to the starter once the first
        connection succeeded or failed (a refused login raises ``BrokerRefused`` here, before
        any recording starts; an unreachable broker does not hold the recording up)."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.connection.run)
            with trio.move_on_after(8.0):
                await self.connection.first_attempt.wait()
            task_status.started()
            await trio.sleep_forever()

    def feed_actor(self, device_id: str, run_uid: str = "") -> Callable[..., Awaitable[None]]:
        """The extra actor that publishes one device's hub; ``run_uid`` names the recording
        in its summaries (default: ``<host>-<device>-<start ns>``)."""
        if device_id in self._feeds:
            raise ConfigError(f"device id {device_id!r} is published twice")
        feed = self._feeds[device_id] = Feed(device_id)
        uid = run_uid or f"{self.host}-{device_id}-{time.time_ns()}"

        async def actor(hub: Hub, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                        ) -> None:
            await self._pump(feed, uid, hub, task_status)

        return actor

    async def device_done(self, result: Any) -> None:
        """Publish the recording's ``session_summary`` (QoS 1)."""
        self.offer(result.device_id, {
            "type": "session_summary", "run_uid": result.run_uid, "url": result.url,
            "trace": result.trace.name, "ok": result.ok, "error": result.error,
            "summary": result.summary,
        })

    async def drain(self) -> bool:
        """Wait until everything queued was sent and acknowledged (at most ``drain_s``)."""
        return await self.connection.wait_drained(self.drain_s)

    # ------------------------------------------------------------------ publishing

    def offer(self, device_id: str, message: dict[str, Any]) -> None:
        """Queue one message map for ``device_id`` (never blocks)."""
        kind = CLASS_OF_TYPE.get(message["type"], message["type"])
        message["host"] = self.host
        message["device_id"] = device_id
        payload = encode(message, self.codec)
        self.connection.offer(OutMessage(
            topic(self.config.prefix, self.host, device_id, kind),
            payload.encode() if isinstance(payload, str) else payload,
            1 if kind in QOS1_CLASSES else 0, kind))

    async def _pump(self, feed: Feed, uid: str, hub: Hub, task_status: trio.TaskStatus[None]
                    ) -> None:
        from tinytelem.live.streamer import is_kept_record

        device_id = feed.device_id
        assert device_id is not None
        sub = hub.subscribe_live("mqtt", HUB_QUEUE, keep=is_kept_record, max_kept=4 * HUB_QUEUE)
        feed.sub = sub
        fold = RunFold()
        pending: list[np.ndarray] = []
        next_flush = next_stats = trio.current_time()
        task_status.started()
        async with sub:
            while True:
                with trio.move_on_at(min(next_flush, next_stats)):
                    try:
                        records, _lost = await sub.receive_batch(1 << 16)
                    except trio.EndOfChannel:
                        break
                    for record in records:
                        if isinstance(record, PowerBlock):
                            pending += self._power(feed, record)
                        for message in feed.converter.convert(record):
                            done = fold.take(message)
                            self.offer(device_id, feed.stamp(message))
                            if done is not None:
                                self.offer(device_id, {"type": "run_summary", "run_uid": uid,
                                                       **done})
                now = trio.current_time()
                if now >= next_flush:
                    self._flush_power(feed, pending)
                    next_flush = now + FLUSH_S
                if now >= next_stats:
                    self.offer(device_id, self._stats(feed))
                    next_stats = now + STATS_S
        if feed.summary is not None:
            pending.append(feed.summary.finish()[0])
        self._flush_power(feed, pending)
        self.offer(device_id, self._stats(feed))

    def _power(self, feed: Feed, block: PowerBlock) -> list[np.ndarray]:
        if feed.summary is None:
            feed.sample_rate_hz = block.sample_rate_hz
            feed.summary = MultiLevelSummary(block.sample_rate_hz, (POWER_LEVEL_S,))
        feed.voltage_v = block.voltage_v
        rows = feed.summary.add_block(block.first_index, block.current_a)[0]
        return [rows] if rows.shape[0] else []

    def _flush_power(self, feed: Feed, pending: list[np.ndarray]) -> None:
        if not pending or feed.device_id is None:
            return
        rows = np.concatenate(pending)
        pending.clear()
        if not rows.shape[0]:
            return
        self.offer(feed.device_id, {
            "type": "summary", "level": level_name(POWER_LEVEL_S), "level_s": POWER_LEVEL_S,
            "sample_rate_hz": feed.sample_rate_hz, "voltage_v": feed.voltage_v,
            **{name: rows[name].tolist() for name in ("first_index", "n", "mean", "std",
                                                       "min", "max")},
        })

    def _stats(self, feed: Feed) -> dict[str, Any]:
        c = feed.converter
        m = self.connection.statistics()
        return {
            "type": "stats", "host_s": time.monotonic(), "records_in": 0,
            "server_dropped": feed.dropped, "sent": m.published, "dropped": m.dropped,
            "dropped_by_class": m.dropped_by_class, "clients": 0,
            "link_up": c.link_up, "link_outages": c.link_outages,
            "decode_errors": c.decode_errors, "power_samples": c.power_samples,
            "power_gaps": c.power_gaps, "device_tx_dropped": c.device_tx_dropped,
            "broker_connected": m.connected, "broker_outages": m.outages,
        }
