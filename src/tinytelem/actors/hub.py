"""The hub: fan-out of records from one input channel to many subscribers.

Two kinds of subscriber, because the architecture is "lossless where data is kept, lossy where
data is shown":

* **Lossless** (the recorder): a bounded trio memory channel. The hub ``await``\\s each send, so
  nothing is ever lost -- and a stalled lossless subscriber therefore stalls the hub, and through
  it every producer upstream. That is intended: the recorder is the one consumer whose data must
  be complete, and back-pressure is the honest way to say "the disk cannot keep up" (producers
  such as the power sensor then turn their own overflow into explicit gap records).
* **Live** (websocket streamer, monitors): a drop-oldest mailbox. Delivery is synchronous and
  never blocks the hub; when the mailbox is full the oldest item is discarded and counted, so a
  slow client sees fresh data plus a number telling it how much it missed. trio memory channels
  can only refuse the *newest* item, hence the small :class:`LiveSubscription` structure
  (``bench/actors.py`` measures it: one slow subscriber no longer slows the fast ones).

  Not every record is equally droppable: a live view can live without some operator spans,
  not without a token or the end of a run. A live subscriber may pass ``keep`` (a predicate):
  records it keeps wait in a second, larger mailbox that is never pushed out by droppable
  ones; only droppable records make room for each other. Order across both is preserved.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import trio

from tinytelem.errors import ConfigError
from tinytelem.records import Record, RecordBatch

__all__ = ["Hub", "HubStatistics", "LiveSubscription", "SubscriberStatistics"]

SubscriberKind = Literal["lossless", "live"]


@dataclass(frozen=True, slots=True)
class SubscriberStatistics:
    """Counters of one subscriber.

    For a live subscriber ``delivered + dropped`` equals the number of records offered to it;
    ``delivered`` counts records that made it into the mailbox and were not later pushed out
    (received by the consumer, or still waiting there).
    """

    name: str
    kind: SubscriberKind
    delivered: int
    dropped: int
    high_water: int
    """Largest number of records that were waiting for this subscriber at once."""


@dataclass(frozen=True, slots=True)
class HubStatistics:
    """Counters of the hub as a whole (see :meth:`Hub.statistics`)."""

    records_in: int
    per_subscriber: tuple[SubscriberStatistics, ...]


class LiveSubscription:
    """A drop-oldest mailbox feeding one live consumer.

    The hub puts records in with a synchronous call that never waits; the consumer takes them
    out with :meth:`receive` (or ``async for``). Each received item comes with the number of
    records dropped just before it, so a live view can show "23 records skipped" at the right
    place; :attr:`dropped` is the running total.

    Single consumer: one task should receive from a subscription.
    """

    def __init__(self, name: str, max_items: int, *,
                 keep: Callable[[Record], bool] | None = None, max_kept: int = 0) -> None:
        if max_items < 1:
            raise ConfigError(
                f"live subscriber {name!r}: max_items must be at least 1, got {max_items}"
            )
        self.name = name
        self.max_items = max_items
        self.keep = keep
        """Records for which this returns true never make room for droppable ones."""
        self.max_kept = max(max_kept, max_items) if keep is not None else 0
        """Kept records that may wait; beyond it even they are dropped (and counted apart)."""
        self._items: deque[tuple[int, Record]] = deque()
        self._kept: deque[tuple[int, Record]] = deque()
        self._seq = 0
        self._lot = trio.lowlevel.ParkingLot()
        self._dropped_since_receive = 0
        self._producer_closed = False
        self._consumer_closed = False
        self.offered = 0
        """Records the hub offered to this subscription."""
        self.dropped = 0
        """Records pushed out of the full mailbox before the consumer got them."""
        self.kept_dropped = 0
        """Of ``dropped``, records that ``keep`` wanted kept (the kept mailbox overflowed)."""
        self.high_water = 0

    # --- producer side (the hub) ---------------------------------------------------------------

    def put_nowait(self, record: Record) -> bool:
        """Offer ``record``; drop the oldest item if the mailbox is full. Never blocks.

        Returns:
            False when the consumer has closed the subscription (the hub then forgets it).
        """
        if self._consumer_closed:
            return False
        self.offered += 1
        self._seq += 1
        if self.keep is not None and self.keep(record):
            box, limit = self._kept, self.max_kept
        else:
            box, limit = self._items, self.max_items
        if len(box) >= limit:
            box.popleft()
            self.dropped += 1
            self._dropped_since_receive += 1
            if box is self._kept:
                self.kept_dropped += 1
        box.append((self._seq, record))
        self.high_water = max(self.high_water, len(self._items) + len(self._kept))
        self._lot.unpark()
        return True

    def close_producer(self) -> None:
        """No more records will come: the consumer drains what is left, then gets EndOfChannel."""
        self._producer_closed = True
        self._lot.unpark_all()

    # --- consumer side -----------------------------------------------------------------------

    @property
    def delivered(self) -> int:
        """Records that reached the mailbox and were not pushed out by newer ones."""
        return self.offered - self.dropped

    @property
    def pending(self) -> int:
        """Records waiting in the mailbox."""
        return len(self._items) + len(self._kept)

    def _pop(self) -> Record:
        items, kept = self._items, self._kept
        if kept and (not items or kept[0][0] < items[0][0]):
            return kept.popleft()[1]
        return items.popleft()[1]

    def receive_nowait(self) -> tuple[Record, int]:
        """Take the oldest waiting record without waiting.

        Returns:
            ``(record, dropped_before)``: the record and how many records were dropped between
            the previously received one and this one.

        Raises:
            trio.WouldBlock: nothing is waiting (and the hub is still running).
            trio.EndOfChannel: the hub has finished and the mailbox is empty.
            trio.ClosedResourceError: this subscription was closed by its consumer.
        """
        if self._consumer_closed:
            raise trio.ClosedResourceError(f"live subscription {self.name!r} was closed")
        if self._items or self._kept:
            lost = self._dropped_since_receive
            self._dropped_since_receive = 0
            return self._pop(), lost
        if self._producer_closed:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive_batch(self, max_records: int) -> tuple[list[Record], int]:
        """Wait for records, then take up to ``max_records`` waiting ones at once (in order).

        One task switch per batch instead of per record: at span rates (thousands of records
        a second) that is what lets one consumer keep up.

        Returns:
            ``(records, dropped_before)``: ``dropped_before`` counts records dropped since
            the previous receive (somewhere before or among these).

        Raises:
            trio.EndOfChannel: the hub has finished and the mailbox is empty.
            trio.ClosedResourceError: this subscription was closed by its consumer.
        """
        first, lost = await self.receive()
        out = [first]
        while len(out) < max_records and (self._items or self._kept):
            out.append(self._pop())
        lost += self._dropped_since_receive
        self._dropped_since_receive = 0
        return out, lost

    async def receive(self) -> tuple[Record, int]:
        """Wait for the oldest waiting record; see :meth:`receive_nowait` for the result."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                item = self.receive_nowait()
            except trio.WouldBlock:
                await self._lot.park()
            else:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return item

    def __aiter__(self) -> LiveSubscription:
        return self

    async def __anext__(self) -> tuple[Record, int]:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Unsubscribe: the hub stops delivering here; waiting receivers get ClosedResourceError."""
        self._consumer_closed = True
        self._items.clear()
        self._kept.clear()
        self._lot.unpark_all()

    async def aclose(self) -> None:
        """Async form of :meth:`close` (trio's resource convention)."""
        self.close()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> LiveSubscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def statistics(self) -> SubscriberStatistics:
        """Counters of this subscription (the same record the hub reports for it)."""
        return SubscriberStatistics(
            self.name, "live", self.delivered, self.dropped, self.high_water
        )


class _Lossless:
    """Hub-side state of one lossless subscriber."""

    __slots__ = ("active", "delivered", "high_water", "name", "send")

    def __init__(self, name: str, send: trio.MemorySendChannel[RecordBatch]) -> None:
        self.name = name
        self.send = send
        self.delivered = 0
        self.high_water = 0
        self.active = True

    def statistics(self) -> SubscriberStatistics:
        return SubscriberStatistics(self.name, "lossless", self.delivered, 0, self.high_water)


class Hub:
    """Fan-out actor: every input record goes to every subscriber.

    Subscribe before starting :meth:`run` to see every record; subscribing while it runs is
    allowed and delivers from then on. When the input channel ends, the hub closes every
    subscriber (lossless receivers get ``EndOfChannel`` after draining; live ones likewise).

    A consumer that closes its end is unsubscribed; its counters stay in :meth:`statistics`.
    """

    def __init__(self) -> None:
        self._lossless: list[_Lossless] = []
        self._live: list[LiveSubscription] = []
        self._all: list[_Lossless | LiveSubscription] = []
        self._names: set[str] = set()
        self._records_in = 0
        self._started = False
        self._finished = False

    def _claim_name(self, name: str) -> None:
        if name in self._names:
            raise ConfigError(f"hub already has a subscriber named {name!r}; pick a unique name")
        self._names.add(name)

    def subscribe_lossless(
        self, name: str, max_buffer: int
    ) -> trio.MemoryReceiveChannel[RecordBatch]:
        """Add a subscriber that receives every record, in batches, with back-pressure.

        Items are tuples of records (:data:`tinytelem.records.RecordBatch`) as they entered the
        hub: task switches then cost per batch, not per record.

        A lossless subscriber that stops reading stalls the hub once ``max_buffer`` records are
        waiting, and with it every producer upstream. That is intended for the recorder: data
        that is kept must be complete, and producers account for their own overflow.

        Args:
            name: Unique subscriber name used in statistics.
            max_buffer: Batches that may wait before the hub blocks (at least 1).
        """
        if max_buffer < 1:
            raise ConfigError(
                f"lossless subscriber {name!r}: max_buffer must be at least 1, got {max_buffer}"
            )
        self._claim_name(name)
        send, receive = trio.open_memory_channel[RecordBatch](max_buffer)
        sub = _Lossless(name, send)
        self._lossless.append(sub)
        self._all.append(sub)
        if self._finished:
            sub.active = False
            send.close()
        return receive

    def subscribe_live(self, name: str, max_items: int, *,
                       keep: Callable[[Record], bool] | None = None,
                       max_kept: int = 0) -> LiveSubscription:
        """Add a drop-oldest subscriber that can never slow the hub down.

        Args:
            name: Unique subscriber name used in statistics.
            max_items: Mailbox size; older records are dropped (and counted) beyond it.
            keep: Records for which this is true are never pushed out by others; they wait
                in a mailbox of their own of ``max_kept`` records (at least ``max_items``).
        """
        sub = LiveSubscription(name, max_items, keep=keep, max_kept=max_kept)
        self._claim_name(name)
        self._live.append(sub)
        self._all.append(sub)
        if self._finished:
            sub.close_producer()
        return sub

    async def run(
        self,
        receive_channel: trio.abc.ReceiveChannel[Record | RecordBatch],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Forward every record from ``receive_channel`` until it ends, then close subscribers.

        Items are single records or batches (tuples of records); lossless subscribers always
        receive batches, live subscribers single records.

        Live subscribers are served first (synchronously), then lossless ones are awaited in
        subscription order, so a stalled recorder delays but never reorders anything.
        """
        if self._started:
            raise RuntimeError("Hub.run() may only be called once; create another Hub")
        self._started = True
        try:
            async with receive_channel:
                task_status.started()
                async for item in receive_channel:
                    batch: RecordBatch = item if isinstance(item, tuple) else (item,)
                    self._records_in += len(batch)
                    for record in batch:
                        self._deliver_live(record)
                    for sub in self._lossless:
                        if sub.active:
                            await self._deliver_lossless(sub, batch)
        finally:
            self._finished = True
            for sub in self._lossless:
                sub.active = False
                sub.send.close()
            for live in self._live:
                live.close_producer()

    def _deliver_live(self, record: Record) -> None:
        for sub in self._live:
            sub.put_nowait(record)  # a closed subscription refuses it, uncounted

    async def _deliver_lossless(self, sub: _Lossless, batch: RecordBatch) -> None:
        try:
            try:
                sub.send.send_nowait(batch)  # no task switch while there is room
            except trio.WouldBlock:
                await sub.send.send(batch)
        except trio.BrokenResourceError:
            sub.active = False  # the consumer closed its end: it unsubscribed
            return
        sub.delivered += len(batch)
        used = sub.send.statistics().current_buffer_used
        sub.high_water = max(sub.high_water, used)

    def statistics(self) -> HubStatistics:
        """Counters: records read, and per subscriber (in subscription order) the rest."""
        return HubStatistics(self._records_in, tuple(s.statistics() for s in self._all))
