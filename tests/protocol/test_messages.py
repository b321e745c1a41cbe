"""Device event layouts: every ProtocolError path of messages.py, and the enums' values."""

from __future__ import annotations

import struct

import pytest

from tinytelem.errors import ProtocolError
from tinytelem.protocol.commands import Config, Ping, Run, Stop
from tinytelem.protocol.messages import (
    MAX_PAYLOAD,
    MESSAGE_CLASSES,
    NO_LAYER,
    AnyMessage,
    Capability,
    CounterValue,
    DeviceError,
    Heartbeat,
    Hello,
    InferBegin,
    InferEnd,
    InferStatus,
    Log,
    Marker,
    Memory,
    MsgType,
    Op,
    Pong,
    SpanBatch,
    SpanBegin,
    SpanEnd,
    SpanRecord,
    Token,
    unpack_payload,
)


def hello(**kw: object) -> Hello:
    args: dict[str, object] = dict(
        cpu_hz=1,
        tick_hz=1,
        ram_bytes=1,
        flash_bytes=1,
        psram_bytes=0,
        capabilities=0,
        model_hash=bytes(32),
        platform="p",
        firmware_version="f",
        model_name="m",
    )
    args.update(kw)
    return Hello(**args)  # type: ignore[arg-type]


FIXED_SIZES = {
    InferBegin: 8,
    InferEnd: 7,
    Token: 9,
    SpanBegin: 3,
    SpanEnd: 3,
    Memory: 20,
    CounterValue: 10,
    Marker: 6,
    Heartbeat: 8,
    Pong: 4,
    Ping: 4,
    Config: 1,
    Stop: 0,
}


@pytest.mark.parametrize("cls", list(FIXED_SIZES), ids=lambda c: c.__name__)
def test_fixed_payload_wrong_length(cls: type[AnyMessage]) -> None:
    size = FIXED_SIZES[cls]
    cls.unpack(bytes(size))  # right length decodes
    with pytest.raises(ProtocolError, match="payload must be"):
        cls.unpack(bytes(size + 1))
    if size:
        with pytest.raises(ProtocolError, match="payload must be"):
            cls.unpack(bytes(size - 1))


@pytest.mark.parametrize(
    "msg",
    [
        Token(-1, 0, 0),
        Token(0, 1 << 32, 0),
        SpanBegin(NO_LAYER + 1, 0),
        SpanEnd(0, 256),
        InferBegin(0, 1 << 16, 0),
        InferEnd(0, 0, 3 << 8),
        Memory(0, 0, 0, 0, -5),
        CounterValue(0, 1 << 64),
        Marker(1 << 16, 0),
        Heartbeat(0, -1),
        Pong(1 << 32),
        Ping(-1),
        DeviceError(1 << 16, ""),
        Log(256, "x"),
        Config(256),
        Run(0, 0, 0.5, 1 << 16),
        Run(0, 0, 0.5, 1, (1 << 32,)),
        hello(ram_bytes=-1),
    ],
    ids=repr,
)
def test_out_of_range_field_is_protocol_error(msg: AnyMessage) -> None:
    with pytest.raises(ProtocolError, match="out of range") as info:
        msg.pack()
    assert isinstance(info.value.__cause__, struct.error)


def test_hello_errors() -> None:
    with pytest.raises(ProtocolError, match="model_hash must be 32 bytes"):
        hello(model_hash=b"short").pack()
    with pytest.raises(ProtocolError, match="tick_hz must be positive"):
        hello(tick_hz=0).pack()
    with pytest.raises(ProtocolError, match="platform is 256 bytes of UTF-8; at most 255"):
        hello(platform="x" * 256).pack()
    with pytest.raises(ProtocolError, match="model_name is 256 bytes"):
        hello(model_name="é" * 128).pack()
    assert Hello.unpack(hello(platform="x" * 255).pack()).platform == "x" * 255
    good = hello().pack()
    with pytest.raises(ProtocolError, match="HELLO payload too short"):
        Hello.unpack(good[:55])
    with pytest.raises(ProtocolError, match="tick_hz = 0"):
        Hello.unpack(good[:4] + bytes(4) + good[8:])
    with pytest.raises(ProtocolError, match="HELLO platform: payload ends before"):
        Hello.unpack(good[:56])
    with pytest.raises(ProtocolError, match="HELLO model_name: string of 1 bytes runs past"):
        Hello.unpack(good[:-1])
    with pytest.raises(ProtocolError, match="2 trailing bytes"):
        Hello.unpack(good + b"zz")
    # A name that is not UTF-8 does not cost the HELLO (and its clock): it is kept escaped.
    bad_utf8 = good[:56] + b"\x01\xff" + good[58:]
    assert Hello.unpack(bad_utf8).platform == "\\xff"


def test_log_and_error_text() -> None:
    with pytest.raises(ProtocolError, match="at least the level byte"):
        Log.unpack(b"")
    with pytest.raises(ProtocolError, match="LOG text is not valid UTF-8"):
        Log.unpack(b"\x01\xc3")
    with pytest.raises(ProtocolError, match="at least the u16 code"):
        DeviceError.unpack(b"\x01")
    with pytest.raises(ProtocolError, match="ERROR text is not valid UTF-8"):
        DeviceError.unpack(b"\x01\x00\xff")
    assert DeviceError.unpack(b"\x02\x01ok") == DeviceError(0x0102, "ok")
    assert Log.unpack(b"\x03") == Log(3, "")


def test_unpack_payload_dispatch_and_errors() -> None:
    assert unpack_payload(MsgType.TOKEN, Token(1, 2, 1).pack()) == Token(1, 2, 1)
    with pytest.raises(ProtocolError, match="unknown message type 0x3f"):
        unpack_payload(0x3F, b"")
    with pytest.raises(ProtocolError, match="exceeds MAX_PAYLOAD=1024"):
        unpack_payload(MsgType.LOG, b"\x01" + b"x" * MAX_PAYLOAD)


def test_type_codes_and_enums_are_the_documented_values() -> None:
    """docs/protocol.md lists these numbers; a change here is a wire-format change."""
    assert {t.name: t.value for t in MsgType} == {
        "HELLO": 1,
        "INFER_BEGIN": 2,
        "INFER_END": 3,
        "TOKEN": 4,
        "SPAN_BEGIN": 5,
        "SPAN_END": 6,
        "MEMORY": 7,
        "COUNTER": 8,
        "MARKER": 9,
        "LOG": 10,
        "ERROR": 11,
        "HEARTBEAT": 12,
        "PONG": 13,
        "POWER_SAMPLES": 14,
        "SPAN_BATCH": 15,
        "PING": 0x80,
        "RUN": 0x81,
        "STOP": 0x82,
        "CONFIG": 0x83,
    }
    assert {c.TYPE for c in MESSAGE_CLASSES.values()} == set(MsgType)
    assert [int(s) for s in InferStatus] == [0, 1, 2]
    assert [o.name for o in Op][:3] == ["LAYER", "EMBED", "ATTN_NORM"]
    assert int(Op.SAMPLE) == 11
    assert int(Capability.STOP) == 32 and NO_LAYER == 0xFFFF


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"\x01", "at least the u16"),
        (b"\x00\x00\x41\x05", "cut inside its layer"),
        (b"\x00\x00\x01", "cut inside its tick delta"),
        (b"\x00\x00\x01\x80\x80", "cut inside its tick delta"),
        (b"\x00\x00\x01\xff\xff\xff\xff\xff\x01", "longer than 5 bytes"),
        (b"\x00\x00\x01\xff\xff\xff\xff\x7f", "exceeds a u32"),
    ],
)
def test_span_batch_malformed(payload: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        SpanBatch.unpack(payload)


def test_span_batch_encoding_is_compact() -> None:
    """Tag byte, layer only when it changes, LEB128 delta: the bytes docs/protocol.md shows."""
    batch = SpanBatch(0x0102, (
        SpanRecord(False, NO_LAYER, int(Op.EMBED), 0),
        SpanRecord(True, NO_LAYER, int(Op.EMBED), 300),
        SpanRecord(False, 2, int(Op.LAYER), 1),
        SpanRecord(True, 2, int(Op.LAYER), 0xFFFFFFFF),
    ))
    assert batch.pack().hex(" ") == "02 01 01 00 81 ac 02 40 02 00 01 80 ff ff ff ff 0f"
    assert SpanBatch.unpack(batch.pack()) == batch
    with pytest.raises(ProtocolError, match="does not fit 6 bits"):
        SpanBatch(0, (SpanRecord(False, 0, 64, 0),)).pack()
    with pytest.raises(ProtocolError, match="not a u32"):
        SpanBatch(0, (SpanRecord(False, 0, 1, 1 << 32),)).pack()
