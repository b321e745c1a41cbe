"""Link actor: owns the byte stream to one device, reconnects after LinkBroken, records outages.

It does no parsing. Bytes go out as :class:`RawChunk` (stamped with host arrival time) to the
decoder, and every byte in either direction goes to the raw capture when one is given. When the
world breaks the link, the actor emits ``LinkStatus(up=False)``, reconnects with exponential
backoff, and emits ``LinkStatus(up=True)`` when the device is back, so the trace holds the gap.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from tinytelem.errors import LinkBroken, LinkClosed
from tinytelem.protocol.codec import encode_frame
from tinytelem.protocol.messages import AnyMessage
from tinytelem.records import LinkStatus
from tinytelem.trace.raw import DEVICE_TO_HOST, HOST_TO_DEVICE, LINK_EVENT


@dataclass(frozen=True, slots=True)
class RawChunk:
    """Bytes as they came off the link."""

    host_s: float
    data: bytes


class RawSink(Protocol):
    """Where every link byte is kept (the zstd raw capture)."""

    def write(self, host_s: float, direction: int, data: bytes) -> None: ...

    def maybe_flush(self, now: float) -> None: ...


@dataclass(frozen=True, slots=True)
class LinkStatistics:
    """Counts of the link actor (immutable snapshot)."""

    connects: int
    reconnects: int
    outages: int
    bytes_in: int
    bytes_out: int
    frames_out: int
    down_s: float


Connector = Callable[[], Awaitable[trio.abc.Stream]]


class LinkActor:
    """One device link: connect, read, write commands, reconnect."""

    def __init__(
        self,
        url: str,
        connect: Connector,
        *,
        raw: RawSink | None = None,
        reconnect: bool = True,
        backoff_s: tuple[float, float] = (0.05, 2.0),
        give_up_after_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._connect = connect
        self._raw = raw
        self._reconnect = reconnect
        self._backoff = backoff_s
        self._give_up_after_s = give_up_after_s
        self._clock = clock
        self._stream: trio.abc.Stream | None = None
        self._send_lock = trio.Lock()
        self._connected = trio.Event()
        self._closed = False
        self._seq = 0
        self._connects = 0
        self._outages = 0
        self._bytes_in = 0
        self._bytes_out = 0
        self._frames_out = 0
        self._down_since: float | None = None
        self._down_s = 0.0

    async def run(
        self,
        send: trio.MemorySendChannel[RawChunk | LinkStatus],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect (first attempt must succeed), then read until cancelled or the device is gone.

        Raises LinkBroken when the first connection fails, when reconnecting is off, or when
        the device stays unreachable for ``give_up_after_s``.
        """
        async with send:
            stream = await self._connect()
            self._attach(stream)
            task_status.started()
            try:
                while True:
                    reason = await self._pump(stream, send)
                    now = self._clock()
                    self._detach()
                    await trio.aclose_forcefully(stream)
                    self._outages += 1
                    self._down_since = now
                    if self._raw is not None:
                        self._raw.write(now, LINK_EVENT, b"down " + reason.encode())
                    await send.send(LinkStatus(now, False, self.url, reason))
                    if not self._reconnect:
                        raise LinkBroken(f"{self.url}: {reason}")
                    stream = await self._reconnect_loop(reason)
                    self._attach(stream)
                    now = self._clock()
                    if self._down_since is not None:
                        self._down_s += now - self._down_since
                        self._down_since = None
                    if self._raw is not None:
                        self._raw.write(now, LINK_EVENT, b"up")
                    await send.send(LinkStatus(now, True, self.url, "reconnected"))
            finally:
                self._closed = True
                self._detach()
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(stream)

    async def _pump(
        self, stream: trio.abc.Stream, send: trio.MemorySendChannel[RawChunk | LinkStatus]
    ) -> str:
        """Read until the link breaks; return why."""
        while True:
            try:
                data = bytes(await stream.receive_some(65536))
            except (LinkBroken, trio.BrokenResourceError, OSError) as exc:
                return f"link broken: {exc}"
            if not data:
                return "device closed the connection"
            now = self._clock()
            self._bytes_in += len(data)
            if self._raw is not None:
                self._raw.write(now, DEVICE_TO_HOST, data)
                self._raw.maybe_flush(now)
            await send.send(RawChunk(now, data))

    async def _reconnect_loop(self, reason: str) -> trio.abc.Stream:
        delay, max_delay = self._backoff
        started = self._clock()
        while True:
            await trio.sleep(delay)
            try:
                return await self._connect()
            except (LinkBroken, OSError) as exc:
                if self._clock() - started > self._give_up_after_s:
                    raise LinkBroken(
                        f"{self.url} unreachable for {self._give_up_after_s:g} s after "
                        f"{reason}; is the device powered and its cable in?"
                    ) from exc
            delay = min(delay * 2, max_delay)

    def _attach(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._connects += 1
        self._connected.set()

    def _detach(self) -> None:
        self._stream = None
        self._connected = trio.Event()

    @property
    def connected(self) -> bool:
        """True while a stream is attached."""
        return self._stream is not None

    async def wait_connected(self) -> None:
        """Return once the link is up (immediately if it is)."""
        if self._closed:
            raise LinkClosed(f"{self.url}: link actor has stopped")
        await self._connected.wait()

    async def send_message(self, message: AnyMessage, ticks: int = 0) -> float:
        """Encode and send one host->device frame; return the host time it was written.

        Raises LinkBroken while the link is down (the caller decides whether to wait and retry).
        """
        if self._closed:
            raise LinkClosed(f"{self.url}: link actor has stopped")
        async with self._send_lock:
            stream = self._stream
            if stream is None:
                raise LinkBroken(f"{self.url}: link is down (reconnecting)")
            data = encode_frame(message, self._seq, ticks)
            self._seq = (self._seq + 1) & 0xFFFF
            now = self._clock()
            # Captured before sending: the answer may be read (and captured) while send_all
            # waits, and replay must see the command first.
            if self._raw is not None:
                self._raw.write(now, HOST_TO_DEVICE, data)
            try:
                await stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise LinkBroken(f"{self.url}: write failed: {exc}") from exc
            self._bytes_out += len(data)
            self._frames_out += 1
            return now

    def statistics(self) -> LinkStatistics:
        """Immutable snapshot of the counters."""
        down = self._down_s
        if self._down_since is not None:
            down += self._clock() - self._down_since
        return LinkStatistics(
            connects=self._connects,
            reconnects=max(0, self._connects - 1),
            outages=self._outages,
            bytes_in=self._bytes_in,
            bytes_out=self._bytes_out,
            frames_out=self._frames_out,
            down_s=down,
        )
