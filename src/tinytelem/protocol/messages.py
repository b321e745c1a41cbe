"""Wire protocol v1 message types and their payload layouts (sans-I/O).

Every message is a frozen dataclass with ``TYPE`` (the u8 type code), ``pack()`` returning the
payload bytes, and a classmethod ``unpack(payload)``. All integers are little-endian. Strings are
a u8 byte length followed by that many UTF-8 bytes (no terminator); LOG and ERROR text runs to the
end of the payload. docs/protocol.md is the normative description; keep the two in step.

Device -> host types are 0x01..0x3F and live here; host -> device types (0x80..0x8F) live in
:mod:`tinytelem.protocol.commands`. :data:`MESSAGE_CLASSES` and :func:`unpack_payload` decode
both directions, so the commands are importable from here as well.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from tinytelem.errors import ProtocolError
from tinytelem.protocol.commands import Config, Ping, Run, Stop
from tinytelem.protocol.enums import (
    NO_LAYER,
    Capability,
    Counter,
    ErrorCode,
    InferStatus,
    LogLevel,
    MsgType,
    Op,
    Phase,
    PowerChip,
    TraceLevel,
)
from tinytelem.protocol.layout import (
    MAX_PAYLOAD,
    U8,
    FixedLayout,
    Message,
    pack_str,
    pack_struct,
    unpack_str,
)

PROTOCOL_VERSION = 1
HASH_LEN = 32

__all__ = [
    "HASH_LEN",
    "MAX_PAYLOAD",
    "MESSAGE_CLASSES",
    "NO_LAYER",
    "PROTOCOL_VERSION",
    "AnyMessage",
    "Capability",
    "Config",
    "Counter",
    "CounterValue",
    "DeviceError",
    "ErrorCode",
    "Heartbeat",
    "Hello",
    "InferBegin",
    "InferEnd",
    "InferStatus",
    "Log",
    "LogLevel",
    "Marker",
    "Memory",
    "Message",
    "MsgType",
    "Op",
    "Phase",
    "Ping",
    "Pong",
    "PowerChip",
    "PowerSamples",
    "Run",
    "SpanBatch",
    "SpanBegin",
    "SpanEnd",
    "SpanRecord",
    "Stop",
    "Token",
    "TraceLevel",
    "unpack_payload",
    "varint_len",
]


_HELLO = struct.Struct("<IIIIII32s")


@dataclass(frozen=True, slots=True)
class Hello:
    """First frame after boot or reconnect: what the device is and how to read its clock."""

    TYPE: ClassVar[MsgType] = MsgType.HELLO
    cpu_hz: int
    tick_hz: int
    ram_bytes: int
    flash_bytes: int
    psram_bytes: int
    capabilities: int
    model_hash: bytes
    platform: str
    firmware_version: str
    model_name: str

    def pack(self) -> bytes:
        if len(self.model_hash) != HASH_LEN:
            raise ProtocolError(f"model_hash must be {HASH_LEN} bytes (SHA-256)")
        if self.tick_hz <= 0:
            raise ProtocolError("HELLO tick_hz must be positive: the host reads the clock by it")
        return (
            pack_struct(
                _HELLO,
                "HELLO",
                self.cpu_hz,
                self.tick_hz,
                self.ram_bytes,
                self.flash_bytes,
                self.psram_bytes,
                self.capabilities,
                self.model_hash,
            )
            + pack_str(self.platform, "platform")
            + pack_str(self.firmware_version, "firmware_version")
            + pack_str(self.model_name, "model_name")
        )

    @classmethod
    def unpack(cls, payload: bytes) -> Hello:
        if len(payload) < _HELLO.size:
            raise ProtocolError(f"HELLO payload too short: {len(payload)} bytes")
        cpu, tick, ram, flash, psram, caps, mhash = _HELLO.unpack_from(payload)
        if tick == 0:
            raise ProtocolError("HELLO announces tick_hz = 0; the device clock cannot be read")
        # Lenient: a HELLO carries the clock every later timestamp needs, so a name that is
        # not UTF-8 is kept escaped rather than costing the whole frame.
        platform, off = unpack_str(payload, _HELLO.size, "HELLO platform", lenient=True)
        fw, off = unpack_str(payload, off, "HELLO firmware_version", lenient=True)
        model, off = unpack_str(payload, off, "HELLO model_name", lenient=True)
        if off != len(payload):
            raise ProtocolError(f"HELLO payload has {len(payload) - off} trailing bytes")
        return cls(cpu, tick, ram, flash, psram, caps, bytes(mhash), platform, fw, model)


_INFER_BEGIN = struct.Struct("<IHH")


@dataclass(frozen=True, slots=True)
class InferBegin(FixedLayout):
    """An inference starts (prompt processing begins at this frame's timestamp)."""

    TYPE: ClassVar[MsgType] = MsgType.INFER_BEGIN
    _LAYOUT: ClassVar[struct.Struct] = _INFER_BEGIN
    run_id: int
    n_prompt: int
    n_tokens: int


_INFER_END = struct.Struct("<IHB")


@dataclass(frozen=True, slots=True)
class InferEnd(FixedLayout):
    """An inference ended; ``status`` is an :class:`InferStatus`."""

    TYPE: ClassVar[MsgType] = MsgType.INFER_END
    _LAYOUT: ClassVar[struct.Struct] = _INFER_END
    run_id: int
    n_generated: int
    status: int


_TOKEN = struct.Struct("<IIB")


@dataclass(frozen=True, slots=True)
class Token(FixedLayout):
    """A token finished: prompt tokens are PREFILL, generated tokens DECODE.

    The frame timestamp is the moment the token's forward pass (and, for decode, sampling)
    completed. ``index`` counts from 0 over prompt then generated tokens.
    """

    TYPE: ClassVar[MsgType] = MsgType.TOKEN
    _LAYOUT: ClassVar[struct.Struct] = _TOKEN
    index: int
    token_id: int
    phase: int


_SPAN = struct.Struct("<HB")


@dataclass(frozen=True, slots=True)
class SpanBegin(FixedLayout):
    """An operator starts; ``op`` is an :class:`Op`, ``layer`` is NO_LAYER outside layers."""

    TYPE: ClassVar[MsgType] = MsgType.SPAN_BEGIN
    _LAYOUT: ClassVar[struct.Struct] = _SPAN
    layer: int
    op: int


@dataclass(frozen=True, slots=True)
class SpanEnd(FixedLayout):
    """The matching end of a :class:`SpanBegin`."""

    TYPE: ClassVar[MsgType] = MsgType.SPAN_END
    _LAYOUT: ClassVar[struct.Struct] = _SPAN
    layer: int
    op: int


_BATCH_HEAD = struct.Struct("<H")
_U16 = struct.Struct("<H")
SPAN_END_BIT = 0x80
"""SPAN_BATCH record tag: set for a span end, clear for a begin."""
SPAN_LAYER_BIT = 0x40
"""SPAN_BATCH record tag: a u16 layer follows the tag (else the previous record's layer)."""
SPAN_OP_MASK = 0x3F
MAX_SPAN_RECORD = 8
"""Longest record: tag, u16 layer, a 5-byte varint delta."""


def varint_len(n: int) -> int:
    """Bytes of ``n`` (>= 0) as the LEB128 varint of a SPAN_BATCH tick delta."""
    return max(1, (n.bit_length() + 6) // 7)


class SpanRecord(NamedTuple):
    """One span event of a :class:`SpanBatch`: ``delta`` ticks after the record before it."""

    end: bool
    layer: int
    op: int
    delta: int


@dataclass(frozen=True, slots=True)
class SpanBatch:
    """Many span begin/end events in one frame (docs/protocol.md, SPAN_BATCH).

    The firmware appends a few bytes per span event and sends the batch once per token, which
    is what keeps span tracing cheap. ``first`` numbers the batch's first record among every
    record the device produced since boot (mod 2^16), so the host counts spans lost with a
    dropped batch. Record ``i`` happened ``records[i].delta`` ticks after record ``i - 1``, the
    first one after the frame's own timestamp (the device makes that delta 0).
    """

    TYPE: ClassVar[MsgType] = MsgType.SPAN_BATCH
    first: int
    records: tuple[SpanRecord, ...] = ()

    def pack(self) -> bytes:
        out = bytearray(pack_struct(_BATCH_HEAD, "SPAN_BATCH", self.first))
        layer = NO_LAYER
        for end, lay, op, dt in self.records:
            if not 0 <= op <= SPAN_OP_MASK:
                raise ProtocolError(f"SPAN_BATCH op {op} does not fit 6 bits; send it as "
                                    "SPAN_BEGIN/SPAN_END")
            if not 0 <= dt <= 0xFFFFFFFF:
                raise ProtocolError(f"SPAN_BATCH delta {dt} is not a u32 tick count")
            delta = dt
            tag = op | (SPAN_END_BIT if end else 0)
            if lay != layer:
                out.append(tag | SPAN_LAYER_BIT)
                out += pack_struct(_U16, "SPAN_BATCH", lay)
                layer = lay
            else:
                out.append(tag)
            while delta >= 0x80:
                out.append((delta & 0x7F) | 0x80)
                delta >>= 7
            out.append(delta)
        return bytes(out)

    @classmethod
    def unpack(cls, payload: bytes) -> SpanBatch:
        n = len(payload)
        if n < _BATCH_HEAD.size:
            raise ProtocolError("SPAN_BATCH payload must hold at least the u16 first index")
        first = _BATCH_HEAD.unpack_from(payload)[0]
        records: list[SpanRecord] = []
        layer = NO_LAYER
        i = _BATCH_HEAD.size
        while i < n:
            tag = payload[i]
            i += 1
            if tag & SPAN_LAYER_BIT:
                if i + 2 > n:
                    raise ProtocolError("SPAN_BATCH record cut inside its layer")
                layer = payload[i] | (payload[i + 1] << 8)
                i += 2
            delta = shift = 0
            while True:
                if i >= n:
                    raise ProtocolError("SPAN_BATCH record cut inside its tick delta")
                b = payload[i]
                i += 1
                delta |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
                if shift >= 35:
                    raise ProtocolError("SPAN_BATCH tick delta longer than 5 bytes")
            if delta > 0xFFFFFFFF:
                raise ProtocolError("SPAN_BATCH tick delta exceeds a u32")
            records.append(SpanRecord(bool(tag & SPAN_END_BIT), layer, tag & SPAN_OP_MASK,
                                      delta))
        return cls(first, tuple(records))

    def spans(self, ticks: int) -> list[tuple[int, SpanBegin | SpanEnd]]:
        """The batch as the single-span messages it stands for, each with its u32 ticks;
        ``ticks`` is the frame's timestamp."""
        out: list[tuple[int, SpanBegin | SpanEnd]] = []
        t = ticks
        for end, layer, op, delta in self.records:
            t = (t + delta) & 0xFFFFFFFF
            out.append((t, SpanEnd(layer, op) if end else SpanBegin(layer, op)))
        return out


_MEMORY = struct.Struct("<IIIII")


@dataclass(frozen=True, slots=True)
class Memory(FixedLayout):
    """Memory use in bytes at the frame's timestamp."""

    TYPE: ClassVar[MsgType] = MsgType.MEMORY
    _LAYOUT: ClassVar[struct.Struct] = _MEMORY
    heap_used: int
    heap_peak: int
    stack_peak: int
    arena_bytes: int
    kv_bytes: int


_COUNTER = struct.Struct("<HQ")


@dataclass(frozen=True, slots=True)
class CounterValue(FixedLayout):
    """A free-running counter's value (``counter_id`` from :class:`Counter` or firmware's own)."""

    TYPE: ClassVar[MsgType] = MsgType.COUNTER
    _LAYOUT: ClassVar[struct.Struct] = _COUNTER
    counter_id: int
    value: int


_MARKER = struct.Struct("<HI")


@dataclass(frozen=True, slots=True)
class Marker(FixedLayout):
    """A point in time the firmware wants to mark (also toggled on a GPIO when wired)."""

    TYPE: ClassVar[MsgType] = MsgType.MARKER
    _LAYOUT: ClassVar[struct.Struct] = _MARKER
    marker_id: int
    value: int


def _text(payload: bytes, offset: int, name: str) -> str:
    try:
        return payload[offset:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{name} text is not valid UTF-8") from exc


@dataclass(frozen=True, slots=True)
class Log:
    """A line of firmware log text (UTF-8 to the payload end)."""

    TYPE: ClassVar[MsgType] = MsgType.LOG
    level: int
    text: str

    def pack(self) -> bytes:
        return pack_struct(U8, "LOG level", self.level) + self.text.encode("utf-8")

    @classmethod
    def unpack(cls, payload: bytes) -> Log:
        if not payload:
            raise ProtocolError("LOG payload must hold at least the level byte")
        return cls(payload[0], _text(payload, 1, "LOG"))


_ERROR = struct.Struct("<H")


@dataclass(frozen=True, slots=True)
class DeviceError:
    """The firmware reports an error (:class:`ErrorCode` or its own, then UTF-8 text)."""

    TYPE: ClassVar[MsgType] = MsgType.ERROR
    code: int
    text: str

    def pack(self) -> bytes:
        return pack_struct(_ERROR, "ERROR", self.code) + self.text.encode("utf-8")

    @classmethod
    def unpack(cls, payload: bytes) -> DeviceError:
        if len(payload) < _ERROR.size:
            raise ProtocolError("ERROR payload must hold at least the u16 code")
        return cls(_ERROR.unpack_from(payload)[0], _text(payload, _ERROR.size, "ERROR"))


_HEARTBEAT = struct.Struct("<II")


@dataclass(frozen=True, slots=True)
class Heartbeat(FixedLayout):
    """Sent about once a second while idle or busy, so silence means a dead link."""

    TYPE: ClassVar[MsgType] = MsgType.HEARTBEAT
    _LAYOUT: ClassVar[struct.Struct] = _HEARTBEAT
    uptime_ms: int
    tx_dropped: int


_NONCE = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class Pong(FixedLayout):
    """Answer to PING; the frame timestamp is the device time the PING was handled."""

    TYPE: ClassVar[MsgType] = MsgType.PONG
    _LAYOUT: ClassVar[struct.Struct] = _NONCE
    nonce: int


_POWER_HEAD = struct.Struct("<IIBB")
_POWER_SAMPLE = struct.Struct("<hH")
MAX_POWER_SAMPLES = (MAX_PAYLOAD - _POWER_HEAD.size) // _POWER_SAMPLE.size


@dataclass(frozen=True, slots=True)
class PowerSamples:
    """Raw INA219/INA226 register pairs from a power bridge (shunt i16, bus u16 each).

    ``first_index`` counts samples since the bridge booted (mod 2^32), so the host sees loss;
    ``period_ns`` is the nominal sample period. The host converts with the chip's LSBs.
    """

    TYPE: ClassVar[MsgType] = MsgType.POWER_SAMPLES
    first_index: int
    period_ns: int
    chip: int
    shunt: tuple[int, ...] = ()
    bus: tuple[int, ...] = ()

    def pack(self) -> bytes:
        n = len(self.shunt)
        if n != len(self.bus):
            raise ProtocolError(f"POWER_SAMPLES has {n} shunt but {len(self.bus)} bus values")
        if n > MAX_POWER_SAMPLES:
            raise ProtocolError(f"POWER_SAMPLES carries at most {MAX_POWER_SAMPLES} samples")
        head = pack_struct(_POWER_HEAD, "POWER_SAMPLES", self.first_index, self.period_ns,
                     self.chip, n)
        body = b"".join(pack_struct(_POWER_SAMPLE, "POWER_SAMPLES", s, b)
                        for s, b in zip(self.shunt, self.bus, strict=True))
        return head + body

    @classmethod
    def unpack(cls, payload: bytes) -> PowerSamples:
        if len(payload) < _POWER_HEAD.size:
            raise ProtocolError(f"POWER_SAMPLES payload of {len(payload)} bytes is too short")
        first, period, chip, n = _POWER_HEAD.unpack_from(payload)
        if len(payload) != _POWER_HEAD.size + n * _POWER_SAMPLE.size:
            raise ProtocolError(
                f"POWER_SAMPLES with count {n} must be {_POWER_HEAD.size + 4 * n} bytes, "
                f"got {len(payload)}")
        pairs = [_POWER_SAMPLE.unpack_from(payload, _POWER_HEAD.size + 4 * k) for k in range(n)]
        return cls(first, period, chip, tuple(p[0] for p in pairs), tuple(p[1] for p in pairs))


AnyMessage = (
    Hello
    | InferBegin
    | InferEnd
    | Token
    | SpanBegin
    | SpanEnd
    | Memory
    | CounterValue
    | Marker
    | Log
    | DeviceError
    | Heartbeat
    | Pong
    | PowerSamples
    | SpanBatch
    | Ping
    | Run
    | Stop
    | Config
)

MESSAGE_CLASSES: dict[int, type[AnyMessage]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        InferBegin,
        InferEnd,
        Token,
        SpanBegin,
        SpanEnd,
        Memory,
        CounterValue,
        Marker,
        Log,
        DeviceError,
        Heartbeat,
        Pong,
        PowerSamples,
        SpanBatch,
        Ping,
        Run,
        Stop,
        Config,
    )
}


def unpack_payload(msg_type: int, payload: bytes) -> AnyMessage:
    """Decode one payload by its type code; raise ProtocolError for unknown types or bad layout."""
    try:
        cls = MESSAGE_CLASSES[msg_type]
    except KeyError:
        raise ProtocolError(f"unknown message type 0x{msg_type:02x}") from None
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds MAX_PAYLOAD={MAX_PAYLOAD}")
    return cls.unpack(payload)
