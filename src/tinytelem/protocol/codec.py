"""Wire protocol v1 frame codec (sans-I/O, in the style of h11 and wsproto).

Frame, before COBS: an 8-byte little-endian header ``version u8, type u8, seq u16, ticks u32``,
the payload, then ``CRC-32 u32`` (zlib polynomial) over header and payload. The COBS-encoded frame
is followed by one 0x00 delimiter.

Decoding: feed bytes with :meth:`FrameDecoder.receive_data`, then call
:meth:`FrameDecoder.next_event` until it returns :data:`NEED_DATA`. Any byte string yields frames
and counted, typed :class:`FrameError` events, never an exception.
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections import deque
from dataclasses import dataclass

from tinytelem.errors import ProtocolError
from tinytelem.protocol import cobs
from tinytelem.protocol.messages import (
    MAX_PAYLOAD,
    PROTOCOL_VERSION,
    AnyMessage,
    unpack_payload,
)

HEADER = struct.Struct("<BBHI")
CRC = struct.Struct("<I")
MIN_FRAME = HEADER.size + CRC.size
MAX_FRAME = HEADER.size + MAX_PAYLOAD + CRC.size
# Worst-case COBS overhead is one byte per 254, plus one.
MAX_ENCODED = MAX_FRAME + MAX_FRAME // 254 + 1


class NeedData(enum.Enum):
    """Sentinel type of :data:`NEED_DATA`."""

    NEED_DATA = "NEED_DATA"


NEED_DATA = NeedData.NEED_DATA


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame: header fields and the typed message."""

    seq: int
    ticks: int
    message: AnyMessage
    size: int
    """Bytes on the wire, delimiter included."""


class ErrorKind(enum.Enum):
    """Why a stretch of bytes was rejected."""

    COBS = "cobs"
    CRC = "crc"
    SHORT = "short"
    OVERSIZE = "oversize"
    VERSION = "version"
    PAYLOAD = "payload"


@dataclass(frozen=True, slots=True)
class FrameError:
    """A rejected stretch of bytes; the decoder resumed at the next delimiter."""

    kind: ErrorKind
    detail: str
    size: int


@dataclass(frozen=True, slots=True)
class DecoderStatistics:
    """Counts since the decoder was created (immutable snapshot)."""

    frames: int
    bytes: int
    crc_errors: int
    cobs_errors: int
    other_errors: int
    seq_gaps: int
    lost_frames: int
    resyncs: int


def encode_frame(message: AnyMessage, seq: int, ticks: int) -> bytes:
    """Return the wire bytes (COBS-encoded, 0x00-terminated) of one frame."""
    payload = message.pack()
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds MAX_PAYLOAD={MAX_PAYLOAD}")
    body = HEADER.pack(PROTOCOL_VERSION, message.TYPE, seq & 0xFFFF, ticks & 0xFFFFFFFF) + payload
    body += CRC.pack(zlib.crc32(body))
    return cobs.encode(body) + b"\x00"


def decode_body(body: bytes) -> tuple[int, int, AnyMessage]:
    """Check and parse a COBS-decoded frame; return ``(seq, ticks, message)``.

    Raises ProtocolError with an ErrorKind name as ``args[1]``.
    """
    if len(body) < MIN_FRAME:
        raise ProtocolError(
            f"frame of {len(body)} bytes is shorter than {MIN_FRAME}", ErrorKind.SHORT
        )
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}", ErrorKind.OVERSIZE)
    (crc,) = CRC.unpack_from(body, len(body) - CRC.size)
    if zlib.crc32(body[: -CRC.size]) != crc:
        raise ProtocolError("CRC-32 mismatch", ErrorKind.CRC)
    version, msg_type, seq, ticks = HEADER.unpack_from(body)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {version}; this host speaks {PROTOCOL_VERSION}", ErrorKind.VERSION
        )
    try:
        message = unpack_payload(msg_type, body[HEADER.size : -CRC.size])
    except ProtocolError as exc:
        raise ProtocolError(str(exc), ErrorKind.PAYLOAD) from exc
    return seq, ticks, message


_OVERSIZE = object()


class FrameDecoder:
    """Turn a byte stream into :class:`Frame` and :class:`FrameError` events."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pending: deque[bytes | object] = deque()
        self._discarding = False
        self._expected_seq: int | None = None
        self._frames = 0
        self._bytes = 0
        self._crc = 0
        self._cobs = 0
        self._other = 0
        self._gaps = 0
        self._lost = 0
        self._resyncs = 0

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the link. Cheap: splitting happens here, decoding in next_event."""
        self._bytes += len(data)
        if 0 in data:
            self._buf += data
            parts = bytes(self._buf).split(b"\x00")
            self._buf = bytearray(parts.pop())
            if self._discarding:
                # The first part is the tail of an oversize stretch already reported.
                parts[0] = b""
                self._discarding = False
            self._pending.extend(parts)
        elif not self._discarding:
            self._buf += data
        if len(self._buf) > MAX_ENCODED:
            # No delimiter within a maximal frame: report once, drop until the next delimiter.
            self._pending.append(_OVERSIZE)
            self._discarding = True
            self._buf.clear()

    def reset_sequence(self) -> None:
        """Forget the expected sequence number (after a reconnect the device may restart it)."""
        self._expected_seq = None

    def next_event(self) -> Frame | FrameError | NeedData:
        """Return the next decoded event, or NEED_DATA when more bytes are needed."""
        while self._pending:
            raw = self._pending.popleft()
            if raw is _OVERSIZE:
                self._other += 1
                self._resyncs += 1
                return FrameError(ErrorKind.OVERSIZE, "no delimiter within a maximal frame", 0)
            assert isinstance(raw, bytes)
            if not raw:
                continue  # two delimiters in a row: harmless
            size = len(raw) + 1
            try:
                body = cobs.decode(raw)
            except ProtocolError as exc:
                self._cobs += 1
                self._resyncs += 1
                return FrameError(ErrorKind.COBS, str(exc), size)
            try:
                seq, ticks, message = decode_body(body)
            except ProtocolError as exc:
                kind = exc.args[1] if len(exc.args) > 1 else ErrorKind.PAYLOAD
                if kind is ErrorKind.CRC:
                    self._crc += 1
                else:
                    self._other += 1
                self._resyncs += 1
                return FrameError(kind, str(exc.args[0]), size)
            if self._expected_seq is not None and seq != self._expected_seq:
                self._gaps += 1
                self._lost += (seq - self._expected_seq) & 0xFFFF
            self._expected_seq = (seq + 1) & 0xFFFF
            self._frames += 1
            return Frame(seq, ticks, message, size)
        return NEED_DATA

    def events(self) -> list[Frame | FrameError]:
        """Drain every event available now (convenience for loops)."""
        out: list[Frame | FrameError] = []
        while True:
            ev = self.next_event()
            if ev is NEED_DATA:
                return out
            out.append(ev)

    def statistics(self) -> DecoderStatistics:
        """Immutable snapshot of the counters."""
        return DecoderStatistics(
            frames=self._frames,
            bytes=self._bytes,
            crc_errors=self._crc,
            cobs_errors=self._cobs,
            other_errors=self._other,
            seq_gaps=self._gaps,
            lost_frames=self._lost,
            resyncs=self._resyncs,
        )


class TickUnwrapper:
    """Extend the 32-bit device tick counter to 64 bits.

    Wraps are detected from the counter going backwards; across a long silence (host time since
    the last frame longer than one wrap period at ``tick_hz``) whole missed wraps are added from
    the host's elapsed time, which is why HELLO announces the tick rate.
    """

    WRAP = 1 << 32

    def __init__(self, tick_hz: int) -> None:
        if tick_hz <= 0:
            raise ProtocolError("tick_hz must be positive")
        self.tick_hz = tick_hz
        self._high = 0
        self._last: int | None = None
        self._last_host: float | None = None

    def unwrap(self, ticks: int, host_time: float | None = None) -> int:
        """Return the 64-bit tick count of a frame with 32-bit ``ticks``."""
        if self._last is not None:
            if host_time is not None and self._last_host is not None:
                elapsed = (host_time - self._last_host) * self.tick_hz
                missed = int((elapsed - ((ticks - self._last) % self.WRAP)) // self.WRAP + 0.5)
                if missed > 0:
                    self._high += missed * self.WRAP
            if ticks < self._last:
                self._high += self.WRAP
        self._last = ticks
        if host_time is not None:
            self._last_host = host_time
        return self._high + ticks

    def seconds(self, ticks64: int) -> float:
        """Device seconds of a 64-bit tick count."""
        return ticks64 / self.tick_hz
