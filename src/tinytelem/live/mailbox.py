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

A mailbox has two drop-oldest queues: *bulk* (``client_queue`` messages, default 1024) for the
droppable classes and *kept* (``kept_queue``, default 65536) for the rest. Bulk messages only
ever push out older bulk messages, so a client that reads slower than spans or raw samples
arrive loses those -- and is told, per class -- while every token, run event, memory sample,
error and summary still reaches it, in order. Only a client that cannot keep up even with the
kept classes (tens of thousands of messages behind) loses kept messages, counted and told the
same way. Order across both queues is the order the messages were offered.
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
    "token": "token", "memory": "memory",
    "error": "error", "log": "error", "power_gap": "error",
    "summary": "summary", "stats": "stats",
    "span": "span", "layers": "span", "raw": "raw",
}
BULK_CLASSES = frozenset({"span", "raw"})


def stream_class(message_type: str) -> str:
    """The class of a message type (types newer than this table count as ``run``: kept)."""
    return CLASS_OF_TYPE.get(message_type, "run")


class Prepared:
    """One message map, its class, encoded lazily and at most once per codec."""

    __slots__ = ("_cache", "bulk", "cls", "map")

    def __init__(self, message: dict[str, Any]) -> None:
        self.map = message
        self.cls = stream_class(message["type"])
        self.bulk = self.cls in BULK_CLASSES
        self._cache: dict[str, bytes | str] = {}

    def payload(self, codec: Codec) -> bytes | str:
        cached = self._cache.get(codec)
        if cached is None:
            cached = self._cache[codec] = encode(self.map, codec)
        return cached


class Mailbox:
    """The two queues of one client (see module docstring). Offering never blocks."""

    def __init__(self, bulk_max: int, kept_max: int) -> None:
        self.bulk_max = bulk_max
        self.kept_max = max(kept_max, bulk_max)
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
        box, limit = (self._bulk, self.bulk_max) if item.bulk else (self._kept, self.kept_max)
        if len(box) >= limit:
            self.count_lost(box.popleft()[1].cls, 1)
        box.append((self._seq, item))
        self.high_water = max(self.high_water, len(self._bulk) + len(self._kept))
        self.lot.unpark_all()

    def count_lost(self, cls: str, n: int) -> None:
        """Count ``n`` messages of class ``cls`` this client will not get (told before the
        next message it does get)."""
        self.dropped += n
        self.dropped_by_class[cls] = self.dropped_by_class.get(cls, 0) + n
        self._untold[cls] = self._untold.get(cls, 0) + n
        self.lot.unpark_all()

    def pop(self) -> Prepared | None:
        """The oldest waiting message of either queue, or None."""
        bulk, kept = self._bulk, self._kept
        if kept and (not bulk or kept[0][0] < bulk[0][0]):
            return kept.popleft()[1]
        if bulk:
            return bulk.popleft()[1]
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
