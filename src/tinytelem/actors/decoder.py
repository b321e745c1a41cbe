"""Decoder actor: link bytes -> typed records with extended device time.

The work is done by :class:`DeviceDecoder`, a synchronous sans-I/O class, so live recording and
offline replay of a raw capture run exactly the same code. The actor around it only moves data
between channels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import trio

from tinytelem.protocol.codec import (
    DecoderStatistics,
    Frame,
    FrameDecoder,
    FrameError,
    TickUnwrapper,
)
from tinytelem.protocol.messages import Hello, Pong
from tinytelem.records import (
    DecodeErrorRecord,
    DeviceRecord,
    LinkStatus,
    PingRecord,
    Record,
    RecordBatch,
)

if TYPE_CHECKING:
    from tinytelem.actors.link import RawChunk

# PINGs that never got an answer are forgotten after this many newer ones.
_MAX_OUTSTANDING_PINGS = 256


@dataclass(frozen=True, slots=True)
class DecoderActorStatistics(DecoderStatistics):
    """Counts of the decoder actor (immutable snapshot): the frame decoder's, then its own."""

    hellos: int
    pongs_matched: int
    pongs_unmatched: int


class DeviceDecoder:
    """Frames -> :class:`DeviceRecord` with ticks extended to 64 bits and converted to seconds.

    Frames that arrive before the first HELLO keep their raw ticks and get ``device_s = NaN``;
    a firmware always starts a connection with HELLO, so this only happens when the host joins
    a running device mid-stream (then tick_hz comes with the next HELLO).
    """

    def __init__(self) -> None:
        self._frames = FrameDecoder()
        self._unwrap: TickUnwrapper | None = None
        self.hello: Hello | None = None
        self._pings: dict[int, float] = {}
        self._hellos = 0
        self._matched = 0
        self._unmatched = 0

    def note_ping_sent(self, nonce: int, host_s: float) -> None:
        """Remember when a PING left, so its PONG becomes a clock-alignment point."""
        self._pings[nonce] = host_s
        if len(self._pings) > _MAX_OUTSTANDING_PINGS:
            del self._pings[next(iter(self._pings))]

    def link_lost(self, host_s: float) -> list[Record]:
        """The link broke: a half-received frame is reported (TRUNCATED) and dropped."""
        self._frames.end_of_stream()
        return self._drain(host_s)

    def feed(self, host_s: float, data: bytes) -> list[Record]:
        """Decode ``data`` that arrived at ``host_s``; return the records it completed."""
        self._frames.receive_data(data)
        return self._drain(host_s)

    def _drain(self, host_s: float) -> list[Record]:
        out: list[Record] = []
        for event in self._frames.events():
            if isinstance(event, FrameError):
                out.append(DecodeErrorRecord(host_s, event))
                continue
            record = self._device_record(host_s, event)
            out.append(record)
            if isinstance(record.message, Pong):
                sent = self._pings.pop(record.message.nonce, None)
                if sent is None:
                    self._unmatched += 1
                else:
                    self._matched += 1
                    out.append(PingRecord(record.message.nonce, sent, host_s, record.ticks))
        return out

    def _device_record(self, host_s: float, frame: Frame) -> DeviceRecord:
        message = frame.message
        if isinstance(message, Hello):
            self._hellos += 1
            # A new tick rate, or seq 0 (the device rebooted: its clock restarted).
            if self.hello is None or self.hello.tick_hz != message.tick_hz or frame.seq == 0:
                self._unwrap = TickUnwrapper(message.tick_hz)
            self.hello = message
        if self._unwrap is None:
            return DeviceRecord(host_s, frame.seq, frame.ticks, math.nan, message)
        ticks = self._unwrap.unwrap(frame.ticks, host_s)
        return DeviceRecord(host_s, frame.seq, ticks, ticks / self._unwrap.tick_hz, message)

    def statistics(self) -> DecoderActorStatistics:
        """Immutable snapshot of the frame decoder's and this class's counters."""
        return DecoderActorStatistics(
            **asdict(self._frames.statistics()),
            hellos=self._hellos,
            pongs_matched=self._matched,
            pongs_unmatched=self._unmatched,
        )


class DecoderActor:
    """Moves :class:`RawChunk` / :class:`LinkStatus` from the link into records for the hub."""

    def __init__(self) -> None:
        self.decoder = DeviceDecoder()

    async def run(
        self,
        receive: trio.MemoryReceiveChannel[RawChunk | LinkStatus],
        send: trio.MemorySendChannel[Record | RecordBatch],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Decode until the link side closes its channel; then close ours."""
        async with receive, send:
            task_status.started()
            async for item in receive:
                if isinstance(item, LinkStatus):
                    lost = self.decoder.link_lost(item.host_s) if not item.up else []
                    await send.send((*lost, item))
                    continue
                records = self.decoder.feed(item.host_s, item.data)
                if records:
                    await send.send(tuple(records))

    def note_ping_sent(self, nonce: int, host_s: float) -> None:
        """See :meth:`DeviceDecoder.note_ping_sent`."""
        self.decoder.note_ping_sent(nonce, host_s)

    def statistics(self) -> DecoderActorStatistics:
        """Immutable snapshot of the counters."""
        return self.decoder.statistics()
