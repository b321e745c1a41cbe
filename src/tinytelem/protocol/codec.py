"""Wire protocol v1 frame codec (sans-I/O, in the style of h11 and wsproto).

Frame, before COBS: an 8-byte little-endian header ``version u8, type u8, seq u16, ticks u32``,
the payload, then ``CRC-32 u32`` (zlib polynomial) over header and payload. The COBS-encoded frame
is followed by one 0x00 delimiter. docs/protocol.md is the normative description.

Decoding: feed bytes with :meth:`FrameDecoder.receive_data`, then call
:meth:`FrameDecoder.next_event` until it returns :data:`NEED_DATA`. Any byte string yields frames
and counted, typed :class:`FrameError` events, never an exception, and the events do not depend
on how the stream was cut into chunks.
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
    MESSAGE_CLASSES,
    PROTOCOL_VERSION,
    AnyMessage,
    Hello,
    SpanBatch,
)

__all__ = [
    "CRC",
    "HEADER",
    "MAX_ENCODED",
    "MAX_FRAME",
    "MIN_FRAME",
    "NEED_DATA",
    "DecoderStatistics",
    "ErrorKind",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "FrameRejected",
    "NeedData",
    "TickUnwrapper",
    "decode_body",
    "encode_frame",
    "expand_spans",
]

HEADER = struct.Struct("<BBHI")
CRC = struct.Struct("<I")
MIN_FRAME = HEADER.size + CRC.size
MAX_FRAME = HEADER.size + MAX_PAYLOAD + CRC.size
MAX_ENCODED = cobs.max_encoded_len(MAX_FRAME)
"""Longest valid stretch between two delimiters; anything longer is rejected unread."""


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
    """Bytes on the wire, delimiter included. The span events a SPAN_BATCH expands into share
    its bytes: the first carries the frame's size, the others 0."""


class ErrorKind(enum.Enum):
    """Why a stretch of bytes was rejected (checked in this order)."""

    OVERSIZE = "oversize"
    """More than MAX_ENCODED bytes without a delimiter."""
    COBS = "cobs"
    SHORT = "short"
    CRC = "crc"
    VERSION = "version"
    TYPE = "type"
    """Unknown message type: usually firmware newer than this host."""
    PAYLOAD = "payload"
    TRUNCATED = "truncated"
    """The stream ended inside a frame (see :meth:`FrameDecoder.end_of_stream`)."""


@dataclass(frozen=True, slots=True)
class FrameError:
    """A rejected stretch of bytes; the decoder resumed at the next delimiter.

    ``size`` is the stretch length with its delimiter; for OVERSIZE it is ``MAX_ENCODED + 1``,
    a lower bound (the rest, up to the next delimiter, is dropped without further events).
    """

    kind: ErrorKind
    detail: str
    size: int


@dataclass(frozen=True, slots=True)
class DecoderStatistics:
    """Counts since the decoder was created (immutable snapshot).

    Invariants once every event is drained: ``frames`` equals the Frame events returned, and
    ``crc_errors + cobs_errors + other_errors == resyncs`` equals the FrameError events returned.
    ``lost_frames`` is counted modulo 65536 per gap (see docs/protocol.md, sequence numbers).
    A SPAN_BATCH counts as one frame; a decoder that expands batches (the default) returns
    ``batched_spans`` Frame events for its ``span_batches`` frames instead, so then Frame events
    = ``frames - span_batches + batched_spans``. ``lost_spans`` counts the span events of
    batches that never arrived (from the batches' record numbers, modulo 65536 per gap).
    """

    frames: int
    bytes: int
    crc_errors: int
    cobs_errors: int
    other_errors: int
    seq_gaps: int
    lost_frames: int
    resyncs: int
    span_batches: int
    batched_spans: int
    lost_spans: int


class FrameRejected(ProtocolError):
    """A frame failed a check; ``kind`` says which. ``args`` are ``(message, kind)``."""

    def __init__(self, message: str, kind: ErrorKind) -> None:
        super().__init__(message, kind)
        self.kind = kind

    def __str__(self) -> str:
        return str(self.args[0])


_crc32 = zlib.crc32
_header_pack = HEADER.pack
_header_unpack = HEADER.unpack_from
_crc_pack = CRC.pack
_crc_unpack = CRC.unpack_from


def encode_frame(message: AnyMessage, seq: int, ticks: int) -> bytes:
    """Return the wire bytes (COBS-encoded, 0x00-terminated) of one frame.

    ``seq`` and ``ticks`` are reduced modulo 2**16 and 2**32, so callers may pass running counts.
    """
    payload = message.pack()
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(
            f"{message.TYPE.name} payload of {len(payload)} bytes exceeds "
            f"MAX_PAYLOAD={MAX_PAYLOAD}; shorten the text or split the message"
        )
    body = _header_pack(PROTOCOL_VERSION, message.TYPE, seq & 0xFFFF, ticks & 0xFFFFFFFF)
    body += payload
    body += _crc_pack(_crc32(body))
    return cobs.encode(body) + b"\x00"


def decode_body(body: bytes) -> tuple[int, int, AnyMessage]:
    """Check and parse a COBS-decoded frame; return ``(seq, ticks, message)``.

    Raises:
        FrameRejected: a ProtocolError whose ``kind`` (also ``args[1]``) is the ErrorKind.
    """
    n = len(body)
    if n < MIN_FRAME:
        raise FrameRejected(f"frame of {n} bytes is shorter than {MIN_FRAME}", ErrorKind.SHORT)
    if n > MAX_FRAME:
        raise FrameRejected(f"frame of {n} bytes exceeds {MAX_FRAME}", ErrorKind.OVERSIZE)
    if _crc32(body[:-4]) != _crc_unpack(body, n - 4)[0]:
        raise FrameRejected("CRC-32 mismatch", ErrorKind.CRC)
    version, msg_type, seq, ticks = _header_unpack(body)
    if version != PROTOCOL_VERSION:
        raise FrameRejected(
            f"protocol version {version}; this host speaks {PROTOCOL_VERSION} "
            "(update the host or flash matching firmware)",
            ErrorKind.VERSION,
        )
    cls = MESSAGE_CLASSES.get(msg_type)
    if cls is None:
        raise FrameRejected(
            f"unknown message type 0x{msg_type:02x} (firmware newer than this host?)",
            ErrorKind.TYPE,
        )
    try:
        message = cls.unpack(body[8:-4])
    except ProtocolError as exc:
        raise FrameRejected(str(exc), ErrorKind.PAYLOAD) from exc
    return seq, ticks, message


def expand_spans(frame: Frame) -> list[Frame]:
    """A SPAN_BATCH frame as the SPAN_BEGIN/SPAN_END frames it stands for (same seq, each with
    its own timestamp; the first carries the batch's wire size, the others 0); any other frame
    as itself. What :class:`FrameDecoder` does by default, for frames decoded without it."""
    m = frame.message
    if type(m) is not SpanBatch:
        return [frame]
    out = [Frame(frame.seq, t, span, 0) for t, span in m.spans(frame.ticks)]
    if out:
        out[0] = Frame(frame.seq, out[0].ticks, out[0].message, frame.size)
    return out


_OVERSIZE_EVENT = FrameError(
    ErrorKind.OVERSIZE, f"no delimiter within {MAX_ENCODED} bytes", MAX_ENCODED + 1
)


class FrameDecoder:
    """Turn a byte stream into :class:`Frame` and :class:`FrameError` events.

    ``receive_data`` only splits on delimiters (one ``bytes.split`` per chunk); each stretch is
    decoded lazily by ``next_event``. Events are identical however the stream is chunked.

    Args:
        expand_spans: return each SPAN_BATCH as the SPAN_BEGIN/SPAN_END frames it stands for
            (same seq, each with its own timestamp), so consumers see single spans whichever
            way the device sent them; False returns the batch itself (wire-level tools).
    """

    def __init__(self, expand_spans: bool = True) -> None:
        self._expand = expand_spans
        self._expanded: deque[Frame] = deque()
        self._expected_span: int | None = None
        self._batches = 0
        self._batched = 0
        self._lost_spans = 0
        self._buf = b""
        self._pending: deque[bytes | FrameError] = deque()
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
        """Add bytes from the link (any length, including empty)."""
        self._bytes += len(data)
        if 0 not in data:
            if self._discarding:
                return
            self._buf += data
            if len(self._buf) > MAX_ENCODED:
                self._pending.append(_OVERSIZE_EVENT)
                self._discarding = True
                self._buf = b""
            return
        parts = (self._buf + data).split(b"\x00")
        tail = parts.pop()
        if self._discarding:
            # The first part ends an oversize stretch already reported.
            parts[0] = b""
            self._discarding = False
        pending = self._pending
        for part in parts:
            if len(part) > MAX_ENCODED:
                pending.append(_OVERSIZE_EVENT)
            elif part:  # an empty part is two delimiters in a row: harmless
                pending.append(part)
        if len(tail) > MAX_ENCODED:
            pending.append(_OVERSIZE_EVENT)
            self._discarding = True
            tail = b""
        self._buf = tail

    def end_of_stream(self) -> None:
        """The stream ended (EOF, reconnect, end of a capture): report a partial frame.

        Bytes after the last delimiter become one TRUNCATED error; the decoder is then ready for
        a new stream (the sequence expectation is kept; see :meth:`reset_sequence`).
        """
        if self._buf:
            self._pending.append(
                FrameError(
                    ErrorKind.TRUNCATED,
                    f"stream ended {len(self._buf)} bytes into a frame",
                    len(self._buf),
                )
            )
        self._buf = b""
        self._discarding = False

    def reset_sequence(self) -> None:
        """Forget the expected sequence number (after a reconnect the device may restart it)."""
        self._expected_seq = None
        self._expected_span = None

    def next_event(self) -> Frame | FrameError | NeedData:
        """Return the next decoded event, or NEED_DATA when more bytes are needed."""
        while True:
            if self._expanded:
                return self._expanded.popleft()
            event = self._next_wire_event()
            if event is not None:
                return event

    def _next_wire_event(self) -> Frame | FrameError | NeedData | None:
        """The next wire frame's event; None when it was a batch expanded into nothing."""
        pending = self._pending
        if not pending:
            return NEED_DATA
        raw = pending.popleft()
        if isinstance(raw, FrameError):
            self._other += 1
            self._resyncs += 1
            return raw
        size = len(raw) + 1
        try:
            body = cobs.decode(raw)
        except ProtocolError as exc:
            self._cobs += 1
            self._resyncs += 1
            return FrameError(ErrorKind.COBS, str(exc), size)
        try:
            seq, ticks, message = decode_body(body)
        except FrameRejected as exc:
            if exc.kind is ErrorKind.CRC:
                self._crc += 1
            else:
                self._other += 1
            self._resyncs += 1
            return FrameError(exc.kind, str(exc), size)
        expected = self._expected_seq
        rebooted = seq == 0 and type(message) is Hello
        if expected is not None and seq != expected and not rebooted:
            # A HELLO with seq 0 re-anchors the count: the device rebooted and restarted it. A
            # HELLO on reconnect keeps counting, so frames lost in the outage show as a gap.
            self._gaps += 1
            self._lost += (seq - expected) & 0xFFFF
        self._expected_seq = (seq + 1) & 0xFFFF
        self._frames += 1
        if rebooted:
            self._expected_span = None
        if type(message) is SpanBatch:
            return self._batch(seq, ticks, message, size)
        return Frame(seq, ticks, message, size)

    def _batch(self, seq: int, ticks: int, batch: SpanBatch, size: int) -> Frame | None:
        n = len(batch.records)
        self._batches += 1
        expected = self._expected_span
        if expected is not None and batch.first != expected:
            self._lost_spans += (batch.first - expected) & 0xFFFF
        self._expected_span = (batch.first + n) & 0xFFFF
        if not self._expand:
            return Frame(seq, ticks, batch, size)
        self._batched += n
        frames = expand_spans(Frame(seq, ticks, batch, size))
        if not frames:
            return None
        self._expanded.extend(frames[1:])
        return frames[0]

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
            span_batches=self._batches,
            batched_spans=self._batched,
            lost_spans=self._lost_spans,
        )


class TickUnwrapper:
    """Extend the 32-bit device tick counter to 64 bits.

    Between two frames the device clock moved forward by ``(ticks - last) mod 2**32`` plus a whole
    number of wraps. Without host time that number is taken as zero (frames come at least once a
    wrap period, which HEARTBEAT guarantees); with host arrival times it is the rounded number of
    wraps that best explains the host's elapsed time, so a long silence costs nothing. That is why
    HELLO announces ``tick_hz``. A new HELLO (device reboot) needs a new unwrapper.
    """

    WRAP = 1 << 32

    def __init__(self, tick_hz: int) -> None:
        if tick_hz <= 0:
            raise ProtocolError(f"tick_hz must be positive, got {tick_hz}; take it from HELLO")
        self.tick_hz = tick_hz
        self._t64 = 0
        self._last: int | None = None
        self._last_host: float | None = None

    def unwrap(self, ticks: int, host_time: float | None = None) -> int:
        """Return the 64-bit tick count of a frame with 32-bit ``ticks``.

        A frame may also be a little *older* than the one before it (a device that sends
        queued frames after a fresher PONG, or catches up on a backlog): a step back of less
        than half a wrap (or, with host times, the step that best fits the host's elapsed time)
        is taken as that, not as a wrap; such a frame does not move the reference forward.

        Args:
            ticks: the frame header's timestamp, 0 <= ticks < 2**32.
            host_time: host arrival time in seconds (any monotonic clock), or None when unknown.
        """
        if not 0 <= ticks < self.WRAP:
            raise ProtocolError(f"ticks {ticks} is not a u32 frame timestamp")
        last = self._last
        if last is None:
            self._t64 = ticks
            self._last = ticks
            self._last_host = host_time
            return ticks
        delta = (ticks - last) % self.WRAP
        if host_time is not None and self._last_host is not None:
            elapsed = max(0.0, (host_time - self._last_host) * self.tick_hz)
            step = delta + round((elapsed - delta) / self.WRAP) * self.WRAP
        else:
            step = delta if delta < self.WRAP // 2 else delta - self.WRAP
        if step < 0:
            return max(0, self._t64 + step)  # an older frame: the reference stays put
        self._t64 += step
        self._last = ticks
        self._last_host = host_time
        return self._t64

    def seconds(self, ticks64: int) -> float:
        """Device seconds of a 64-bit tick count."""
        return ticks64 / self.tick_hz
