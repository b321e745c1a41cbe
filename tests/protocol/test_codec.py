"""Frame codec: round trips, chunking independence, fuzzing, bit errors, resync and sequence."""

from __future__ import annotations

import random
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.protocol.helpers import MESSAGES, expanded, frames
from tinytelem.errors import ProtocolError
from tinytelem.protocol import cobs
from tinytelem.protocol.codec import (
    HEADER,
    MAX_ENCODED,
    MAX_FRAME,
    NEED_DATA,
    ErrorKind,
    Frame,
    FrameDecoder,
    FrameError,
    FrameRejected,
    decode_body,
    encode_frame,
)
from tinytelem.protocol.messages import (
    AnyMessage,
    Hello,
    Log,
    Memory,
    Op,
    Phase,
    SpanBatch,
    SpanBegin,
    SpanEnd,
    SpanRecord,
    Token,
)

Event = Frame | FrameError


def drain(dec: FrameDecoder) -> list[Event]:
    out: list[Event] = []
    while (ev := dec.next_event()) is not NEED_DATA:
        assert isinstance(ev, Frame | FrameError)
        out.append(ev)
    return out


def decode_all(data: bytes, chunks: list[int] | None = None, expand: bool = True
               ) -> tuple[list[Event], FrameDecoder]:
    dec = FrameDecoder(expand_spans=expand)
    out: list[Event] = []
    if chunks is None:
        dec.receive_data(data)
        out += drain(dec)
    else:
        pos = 0
        for n in chunks:
            dec.receive_data(data[pos : pos + n])
            out += drain(dec)
            pos += n
        dec.receive_data(data[pos:])
        out += drain(dec)
    return out, dec


def check_consistent(events: list[Event], dec: FrameDecoder, expand: bool = True) -> None:
    s = dec.statistics()
    n_frames = sum(isinstance(e, Frame) for e in events)
    n_errors = len(events) - n_frames
    assert n_frames == (s.frames - s.span_batches + s.batched_spans if expand else s.frames)
    assert s.crc_errors + s.cobs_errors + s.other_errors == n_errors == s.resyncs
    assert s.crc_errors == sum(
        isinstance(e, FrameError) and e.kind is ErrorKind.CRC for e in events
    )
    assert s.cobs_errors == sum(
        isinstance(e, FrameError) and e.kind is ErrorKind.COBS for e in events
    )


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("name", sorted(MESSAGES))
@settings(max_examples=60)
@given(data=st.data())
def test_round_trip_every_type(name: str, data: st.DataObject) -> None:
    msg = data.draw(MESSAGES[name])
    seq = data.draw(st.integers(0, 0xFFFF))
    ticks = data.draw(st.integers(0, 0xFFFFFFFF))
    wire = encode_frame(msg, seq, ticks)
    assert wire.endswith(b"\x00") and 0 not in wire[:-1]
    events, dec = decode_all(wire, expand=False)
    assert events == [Frame(seq, ticks, msg, len(wire))]
    assert dec.statistics().bytes == len(wire)
    events, _ = decode_all(wire)
    assert [(e.seq, e.ticks, e.message) for e in events if isinstance(e, Frame)] == expanded(
        msg, seq, ticks)
    assert sum(e.size for e in events) == (len(wire) if events else 0)


def test_encode_reduces_seq_and_ticks() -> None:
    msg = Token(1, 2, Phase.DECODE)
    assert encode_frame(msg, 65536 + 7, (1 << 32) + 9) == encode_frame(msg, 7, 9)


def test_encode_rejects_oversize_payload() -> None:
    with pytest.raises(ProtocolError, match="exceeds MAX_PAYLOAD=1024; shorten"):
        encode_frame(Log(1, "x" * 1024), 0, 0)
    assert len(encode_frame(Log(1, "x" * 1023), 0, 0)) <= MAX_ENCODED + 1


# ------------------------------------------------------------------ chunking
def typical_stream() -> tuple[bytes, list[AnyMessage]]:
    msgs: list[AnyMessage] = [
        Hello(1, 1000, 2, 3, 4, 5, bytes(range(32)), "p", "fw", "m"),
        SpanBegin(0, Op.QKV),
        SpanEnd(0, Op.QKV),
        SpanBatch(2, (SpanRecord(False, 1, Op.QKV, 0), SpanRecord(True, 1, Op.QKV, 70_000))),
        Token(0, 300, Phase.PREFILL),
        Memory(1, 2, 3, 4, 5),
        Log(1, "y" * 300),
        Token(1, 0, Phase.DECODE),
    ]
    return b"".join(encode_frame(m, i, 1000 * i) for i, m in enumerate(msgs)), msgs


def test_split_at_every_offset_and_byte_by_byte() -> None:
    wire, msgs = typical_stream()
    whole, _ = decode_all(wire)
    assert [(e.seq, e.ticks, e.message) for e in whole if isinstance(e, Frame)] == [
        ev for i, m in enumerate(msgs) for ev in expanded(m, i, 1000 * i)]
    for cut in range(len(wire) + 1):
        events, dec = decode_all(wire, [cut])
        assert events == whole, cut
        assert dec.statistics().bytes == len(wire)
    events, _ = decode_all(wire, [1] * len(wire))
    assert events == whole


@settings(max_examples=200)
@given(st.binary(max_size=3000), st.lists(st.integers(0, 700), max_size=12))
def test_fuzz_arbitrary_bytes_never_raise(data: bytes, chunks: list[int]) -> None:
    whole, dec_whole = decode_all(data)
    check_consistent(whole, dec_whole)
    events, dec = decode_all(data, chunks)
    assert events == whole
    check_consistent(events, dec)
    dec.end_of_stream()
    check_consistent(events + drain(dec), dec)


garbage = st.binary(max_size=1500).map(lambda b: b + b"\x00")


@settings(max_examples=150)
@given(st.lists(st.one_of(garbage, frames), max_size=12), st.lists(st.integers(1, 500)))
def test_fuzz_garbage_mixed_with_frames(parts: list[object], chunks: list[int]) -> None:
    wire = b""
    expected: list[tuple[int, int, AnyMessage]] = []
    for part in parts:
        if isinstance(part, bytes):
            wire += part
        else:
            assert isinstance(part, tuple)
            msg, seq, ticks = part
            wire += encode_frame(msg, seq, ticks)
            expected += expanded(msg, seq, ticks)
    events, dec = decode_all(wire, chunks)
    check_consistent(events, dec)
    assert [(e.seq, e.ticks, e.message) for e in events if isinstance(e, Frame)] == expected


# ------------------------------------------------------------------ bit errors
def test_bit_errors_ber_1e4_accept_every_intact_frame_and_no_corrupt_one() -> None:
    rng = random.Random(20240601)
    msgs: list[AnyMessage] = []
    for i in range(20_000):
        kind = i % 4
        if kind == 0:
            msgs.append(Token(i, rng.randrange(512), Phase.DECODE))
        elif kind == 1:
            msgs.append(SpanBegin(rng.randrange(8), Op.ATTENTION))
        elif kind == 2:
            msgs.append(SpanEnd(rng.randrange(8), Op.ATTENTION))
        else:
            msgs.append(Memory(*(rng.randrange(1 << 20) for _ in range(5))))
    encoded = [encode_frame(m, i & 0xFFFF, 37 * i) for i, m in enumerate(msgs)]
    wire = bytearray(b"".join(encoded))
    n_bits = len(wire) * 8
    flips = sorted({rng.randrange(n_bits) for _ in range(max(1, round(n_bits * 1e-4)))})
    for bit in flips:
        wire[bit // 8] ^= 1 << (bit % 8)
    # A frame survives when none of its bytes (delimiter included) and not the delimiter
    # in front of it was hit.
    touched: set[int] = set()
    bounds = []
    pos = 0
    for e in encoded:
        bounds.append((pos, pos + len(e)))
        pos += len(e)
    flipped_bytes = sorted({b // 8 for b in flips})
    j = 0
    for i, (lo, hi) in enumerate(bounds):
        while j < len(flipped_bytes) and flipped_bytes[j] < lo:
            j += 1
        if j < len(flipped_bytes) and flipped_bytes[j] < hi:
            touched.add(i)
    hit = set(flipped_bytes)
    intact = [
        i
        for i in range(len(msgs))
        if i not in touched and (i == 0 or bounds[i - 1][1] - 1 not in hit)
    ]
    assert len(flips) > 300 and len(touched) > 250  # the test really corrupts the stream
    events, dec = decode_all(bytes(wire), [4096] * (len(wire) // 4096 + 1))
    got = [(e.seq, e.ticks, e.message) for e in events if isinstance(e, Frame)]
    want = [(i & 0xFFFF, 37 * i, msgs[i]) for i in intact]
    assert got == want
    check_consistent(events, dec)
    assert dec.statistics().seq_gaps >= 1


# ------------------------------------------------------------------ resync and sizes
def test_oversize_garbage_without_delimiters() -> None:
    dec = FrameDecoder()
    good = encode_frame(Token(1, 2, 1), 1, 1)
    for _ in range(10):
        dec.receive_data(b"\x55" * 1000)
    events = drain(dec)
    assert events == [
        FrameError(ErrorKind.OVERSIZE, f"no delimiter within {MAX_ENCODED} bytes", MAX_ENCODED + 1)
    ]
    dec.receive_data(b"\x55" * 10 + b"\x00" + good)
    assert [type(e) for e in drain(dec)] == [Frame]
    s = dec.statistics()
    assert (s.frames, s.other_errors, s.resyncs, s.bytes) == (1, 1, 1, 10_011 + len(good))


def test_stretch_of_max_encoded_bytes_is_decoded_longer_is_not() -> None:
    events, _ = decode_all(b"\x01" * MAX_ENCODED + b"\x00")
    assert events == [FrameError(ErrorKind.OVERSIZE, "frame of 1040 bytes exceeds 1036", 1042)]
    events, _ = decode_all(b"\x01" * (MAX_ENCODED + 1) + b"\x00")
    assert events == [FrameError(ErrorKind.OVERSIZE, "no delimiter within 1041 bytes", 1042)]


def test_largest_frame_round_trips() -> None:
    msg = Log(1, "\U0001f600" * 255 + "abc")  # 1023 bytes of text: payload = MAX_PAYLOAD
    wire = encode_frame(msg, 3, 4)
    assert len(cobs.decode(wire[:-1])) == MAX_FRAME
    assert decode_all(wire)[0] == [Frame(3, 4, msg, len(wire))]


def test_end_of_stream_reports_partial_frame_once() -> None:
    dec = FrameDecoder()
    wire = encode_frame(Token(1, 2, 1), 1, 1)
    dec.receive_data(wire + wire[:5])
    dec.end_of_stream()
    dec.end_of_stream()
    events = drain(dec)
    assert isinstance(events[0], Frame)
    assert events[1] == FrameError(ErrorKind.TRUNCATED, "stream ended 5 bytes into a frame", 5)
    assert len(events) == 2
    dec.receive_data(wire)  # usable for the next stream
    assert isinstance(drain(dec)[0], Frame)


def test_end_of_stream_while_discarding_reports_nothing_more() -> None:
    dec = FrameDecoder()
    dec.receive_data(b"\x01" * (MAX_ENCODED + 5))
    dec.end_of_stream()
    assert [e.kind for e in drain(dec) if isinstance(e, FrameError)] == [ErrorKind.OVERSIZE]


def _body(version: int, msg_type: int, payload: bytes, crc_fix: int = 0) -> bytes:
    body = HEADER.pack(version, msg_type, 0, 0) + payload
    return body + ((zlib.crc32(body) ^ crc_fix).to_bytes(4, "little"))


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"\x01" * 11, ErrorKind.SHORT),
        (b"\x01" * (MAX_FRAME + 1), ErrorKind.OVERSIZE),
        (_body(1, 4, bytes(9), crc_fix=1), ErrorKind.CRC),
        (_body(0, 4, bytes(9)), ErrorKind.VERSION),
        (_body(1, 0x40, b""), ErrorKind.TYPE),
        (_body(1, 4, bytes(10)), ErrorKind.PAYLOAD),
    ],
)
def test_decode_body_errors(body: bytes, kind: ErrorKind) -> None:
    with pytest.raises(FrameRejected) as info:
        decode_body(body)
    assert info.value.kind is kind and info.value.args[1] is kind
    assert isinstance(info.value, ProtocolError)
    assert str(info.value) == info.value.args[0]


def test_payload_error_keeps_cause() -> None:
    with pytest.raises(FrameRejected) as info:
        decode_body(_body(1, 4, bytes(10)))
    assert isinstance(info.value.__cause__, ProtocolError)


# ------------------------------------------------------------------ sequence numbers
def seq_stats(seqs: list[int], hello_at: int = -1) -> tuple[int, int]:
    wire = b""
    for i, s in enumerate(seqs):
        msg: AnyMessage = Token(i, 1, 1)
        if i == hello_at:
            msg = Hello(1, 1, 1, 1, 1, 0, bytes(32), "", "", "")
        wire += encode_frame(msg, s, i)
    _, dec = decode_all(wire)
    stats = dec.statistics()
    return stats.seq_gaps, stats.lost_frames


def test_sequence_gaps() -> None:
    assert seq_stats([0, 1, 2, 3]) == (0, 0)
    assert seq_stats([0, 1, 5, 6, 8]) == (2, 4)
    assert seq_stats([65533, 65534, 65535, 0, 1]) == (0, 0)
    assert seq_stats([65534, 1]) == (1, 2)  # 65535 and 0 lost across the wrap
    assert seq_stats([10, 9]) == (1, 65534)  # going back (11 expected) counts modulo 65536
    assert seq_stats([500, 501, 0, 1], hello_at=2) == (0, 0)  # reboot: HELLO re-anchors
    # HELLO on a reconnect keeps counting: what the device sent meanwhile is a gap.
    assert seq_stats([500, 501, 510, 511], hello_at=2) == (1, 8)


def test_reset_sequence() -> None:
    dec = FrameDecoder()
    dec.receive_data(encode_frame(Token(0, 1, 1), 100, 0))
    drain(dec)  # decoding is lazy: reset after the old stream's events are drained
    dec.reset_sequence()
    dec.receive_data(encode_frame(Token(0, 1, 1), 7, 0))
    drain(dec)
    assert dec.statistics().seq_gaps == 0


def test_events_helper() -> None:
    wire, msgs = typical_stream()
    dec = FrameDecoder(expand_spans=False)
    dec.receive_data(wire)
    assert [e.message for e in dec.events() if isinstance(e, Frame)] == msgs
    assert dec.events() == []


def test_oversize_tail_after_a_delimiter_in_the_same_chunk() -> None:
    good = encode_frame(Token(1, 2, 1), 1, 1)
    wire = good + b"\x77" * (MAX_ENCODED + 50) + b"\x77" * 10 + b"\x00" + good
    dec = FrameDecoder()
    dec.receive_data(wire[: len(good) + MAX_ENCODED + 50])
    first = drain(dec)
    assert [type(e) for e in first] == [Frame, FrameError]
    assert isinstance(first[1], FrameError) and first[1].kind is ErrorKind.OVERSIZE
    dec.receive_data(wire[len(good) + MAX_ENCODED + 50 :])
    assert [type(e) for e in drain(dec)] == [Frame]
    assert decode_all(wire)[0] == [*first, Frame(1, 1, Token(1, 2, 1), len(good))]
