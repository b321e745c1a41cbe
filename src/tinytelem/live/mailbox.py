"""Per-client mailboxes with stream classes: what may be dropped for a slow client, and what not.

Every stream message belongs to one class (docs/streaming.md, "Stream classes"):

=========  ===========================================  =====================================
class      message types                                guarantee
=========  ===========================================  =====================================
control    hello, bye, dropped                          never dropped
run        run, device, link                            kept (see below)
token      token                                        kept
memory     memory                                       kept
error      error, log, power_gap                        kept
summary    summary (power buckets at the client's rate) kept
stats      stats                                        kept
span       layers (per-token aggregates), span (raw)    droppable (bulk)
raw        raw (live sample blocks, raw_request)        droppable (bulk)
=========  ===========================================  =====================================

A mailbox has two drop-oldest queues: *bulk* for the droppable classes (at most
``client_queue`` messages, default 65536, and ``client_bytes``, default 8 MiB: one run's raw
spans on the twin's fastest platform, ~23 k spans in ~20 ms, fit, so a client that reads as fast
as it can loses none; raw power blocks are big, hence the byte bound) and *kept*
(``kept_queue``, default 65536 messages) for the rest. Messages leave in the order they were
offered -- except that while more than ``LAG_BACKLOG`` bulk messages wait, kept ones go first,
so a client's tokens never queue behind a backlog of spans. ``bye`` leaves last. Bulk messages
only ever push out older bulk messages, so a client that reads slower than spans or raw samples
arrive loses those -- and is told, per class -- while every token, run event, memory sample,
error and summary still reaches it, in order. Only a client that cannot keep up even with the
kept classes (tens of thousands of messages behind) loses kept messages, counted and told the
same way.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import trio

from tinytelem.live.schema import Codec, encode

__all__ = ["BULK_CLASSES", "CLASS_OF_TYPE", "Mailbox", "Prepared", "stream_class"]

CLASS_OF_TYPE: dict[str, str] = {
    "hello": "control", "bye": "control", "dropped": "control",
    "run": "run", "device": "run", "link": "run",
    "token": "token", "memory": "memory",  # nosec B105
    "error": "error", "log": "error", "power_gap": "error",
    "summary": "summary", "stats": "stats",
    "span": "span", "layers": "span", "raw": "raw",
}
BULK_CLASSES = frozenset({"span", "raw"})
LAG_BACKLOG = 256
"""Bulk messages waiting beyond which kept messages overtake them."""


def stream_class(message_type: str) -> str:
    """The class of a message type (types newer than this table count as ``run``: kept)."""
    return CLASS_OF_TYPE.get(message_type, "run")


class Prepared:
    """One message map, its class, encoded lazily and at most once per codec."""

    __slots__ = ("_cache", "bulk", "cls", "map", "size")

    def __init__(self, message: dict[str, Any]) -> None:
        self.map = message
        self.cls = stream_class(message["type"])
        self.bulk = self.cls in BULK_CLASSES
        raw = message.get("current_a")
        # Estimated encoded size: small maps ~100 bytes, raw samples 4 bytes each.
        self.size = 96 + (len(raw) if isinstance(raw, bytes) else 0)
        self._cache: dict[str, bytes | str] = {}

    def payload(self, codec: Codec) -> bytes | str:
        cached = self._cache.get(codec)
        if cached is None:
            cached = self._cache[codec] = encode(self.map, codec)
        return cached


class Mailbox:
    """The two queues of one client (see module docstring). Offering never blocks."""

    def __init__(self, bulk_max: int, kept_max: int, bulk_bytes: int = 8 << 20) -> None:
        self.bulk_max = bulk_max
        self.kept_max = kept_max
        self.bulk_bytes = bulk_bytes
        self._bulk_size = 0
        self._bulk: deque[tuple[int, Prepared]] = deque()
        self._kept: deque[tuple[int, Prepared]] = deque()
        self._seq = 0
        self.lot = trio.lowlevel.ParkingLot()
        self.dropped = 0
        self.dropped_by_class: dict[str, int] = {}
        self._untold: dict[str, int] = {}
        self.high_water = 0

    def __len__(self) -> int:
        return len(self._bulk) + len(self._kept)

    def offer(self, item: Prepared) -> None:
        """Queue ``item``; when its queue is full, drop that queue's oldest (counted)."""
        self._seq += 1
        if item.bulk:
            bulk = self._bulk
            self._bulk_size += item.size
            while bulk and (len(bulk) >= self.bulk_max or self._bulk_size > self.bulk_bytes):
                self._drop_oldest_bulk()
            bulk.append((self._seq, item))
        else:
            if len(self._kept) >= self.kept_max:
                self.count_lost(self._kept.popleft()[1].cls, 1)
            self._kept.append((self._seq, item))
        self.high_water = max(self.high_water, len(self._bulk) + len(self._kept))
        self.lot.unpark_all()

    def clear(self) -> None:
        """Forget every waiting message (the client is gone); counters stay."""
        self._bulk.clear()
        self._kept.clear()
        self._bulk_size = 0
        self._untold.clear()

    def count_lost(self, cls: str, n: int) -> None:
        """Count ``n`` messages of class ``cls`` this client will not get (told before the
        next message it does get)."""
        self.dropped += n
        self.dropped_by_class[cls] = self.dropped_by_class.get(cls, 0) + n
        self._untold[cls] = self._untold.get(cls, 0) + n
        self.lot.unpark_all()

    def _drop_oldest_bulk(self) -> None:
        lost = self._bulk.popleft()[1]
        self._bulk_size -= lost.size
        self.count_lost(lost.cls, 1)

    def pop(self) -> Prepared | None:
        """The next message to send (see module docstring), or None."""
        bulk, kept = self._bulk, self._kept
        if kept and (not bulk or (kept[0][1].map["type"] != "bye"
                                  and (kept[0][0] < bulk[0][0] or len(bulk) > LAG_BACKLOG))):
            return kept.popleft()[1]
        if bulk:
            item = bulk.popleft()[1]
            self._bulk_size -= item.size
            return item
        return None

    def drop_notice(self) -> dict[str, Any] | None:
        """The ``dropped`` message for losses not yet told, or None (then resets them)."""
        if not self._untold:
            return None
        untold, self._untold = self._untold, {}
        return {"type": "dropped", "count": sum(untold.values()), "total": self.dropped,
                "classes": untold, "totals": dict(self.dropped_by_class), "server": False}

    @property
    def has_untold(self) -> bool:
        return bool(self._untold)
