"""DeviceDecoder: frames -> records, tick extension, PING/PONG pairing, errors as records."""

from __future__ import annotations

import math

from tinytelem.actors.decoder import DeviceDecoder
from tinytelem.protocol import cobs
from tinytelem.protocol.codec import ErrorKind, encode_frame
from tinytelem.protocol.messages import Hello, Pong, Token
from tinytelem.records import DecodeErrorRecord, DeviceRecord, PingRecord


def hello(tick_hz: int = 1_000_000) -> Hello:
    return Hello(240_000_000, tick_hz, 512 * 1024, 8 << 20, 8 << 20, 3, bytes(32), "esp32s3",
                 "1.0", "m")


def test_frames_before_hello_have_no_device_seconds() -> None:
    d = DeviceDecoder()
    out = d.feed(1.0, encode_frame(Token(0, 5, 0), 0, 100))
    assert len(out) == 1 and isinstance(out[0], DeviceRecord)
    assert out[0].ticks == 100 and math.isnan(out[0].device_s)


def test_ticks_extended_across_wrap_and_converted() -> None:
    d = DeviceDecoder()
    wire = encode_frame(hello(1000), 0, 0xFFFF_FF00) + encode_frame(Token(0, 7, 1), 1, 0x10)
    recs = d.feed(2.0, wire)
    assert [type(r) for r in recs] == [DeviceRecord, DeviceRecord]
    assert isinstance(recs[1], DeviceRecord)
    assert recs[1].ticks == (1 << 32) + 0x10
    assert recs[1].device_s == recs[1].ticks / 1000
    assert d.hello is not None and d.hello.tick_hz == 1000


def test_pong_pairs_with_ping_and_unknown_nonce_counted() -> None:
    d = DeviceDecoder()
    d.feed(0.0, encode_frame(hello(), 0, 0))
    d.note_ping_sent(42, 10.0)
    recs = d.feed(10.004, encode_frame(Pong(42), 1, 5000))
    pings = [r for r in recs if isinstance(r, PingRecord)]
    assert pings == [PingRecord(42, 10.0, 10.004, 5000)]
    recs = d.feed(10.1, encode_frame(Pong(43), 2, 6000))
    assert not [r for r in recs if isinstance(r, PingRecord)]
    s = d.statistics()
    assert (s.pongs_matched, s.pongs_unmatched, s.hellos, s.frames) == (1, 1, 1, 3)


def test_corrupt_bytes_become_error_records_not_exceptions() -> None:
    d = DeviceDecoder()
    good = encode_frame(Token(1, 2, 1), 0, 9)
    bad = bytearray(good)
    bad[3] ^= 0x40  # a COBS code byte that now points past the frame end
    recs = d.feed(0.5, bytes(bad) + good)
    assert isinstance(recs[0], DecodeErrorRecord)
    assert recs[0].error.kind is ErrorKind.COBS
    assert recs[0].error.detail == "COBS: code 65 at offset 3 runs past the frame end (22)"
    assert isinstance(recs[1], DeviceRecord) and recs[1].message == Token(1, 2, 1)
    s = d.statistics()
    assert (s.frames, s.cobs_errors, s.crc_errors) == (1, 1, 0)


def test_a_payload_bit_flip_is_a_crc_error_record() -> None:
    d = DeviceDecoder()
    good = encode_frame(Token(1, 2, 1), 0, 9)
    body = bytearray(cobs.decode(good[:-1]))
    body[9] ^= 0x01  # inside the TOKEN payload: the frame still parses, only the CRC knows
    recs = d.feed(0.5, cobs.encode(bytes(body)) + b"\x00" + good)
    assert isinstance(recs[0], DecodeErrorRecord)
    assert (recs[0].error.kind, recs[0].error.detail) == (ErrorKind.CRC, "CRC-32 mismatch")
    assert [type(r) for r in recs] == [DecodeErrorRecord, DeviceRecord]
    s = d.statistics()
    assert (s.frames, s.crc_errors) == (1, 1)


def test_link_lost_reports_half_frame() -> None:
    d = DeviceDecoder()
    frame = encode_frame(Token(1, 2, 1), 0, 9)
    assert d.feed(0.0, frame[:5]) == []
    lost = d.link_lost(0.05)
    assert len(lost) == 1 and isinstance(lost[0], DecodeErrorRecord)
    assert lost[0].error.kind.value == "truncated"
    recs = d.feed(0.1, encode_frame(Token(2, 3, 1), 1, 10))
    assert [type(r) for r in recs] == [DeviceRecord]


def test_reboot_hello_restarts_the_clock() -> None:
    d = DeviceDecoder()
    d.feed(0.0, encode_frame(hello(1000), 0, 5000))
    recs = d.feed(0.1, encode_frame(Token(0, 1, 1), 1, 6000))
    assert recs[0].ticks == 6000  # type: ignore[union-attr]
    d.feed(0.2, encode_frame(hello(1000), 0, 10))  # rebooted: seq 0, clock near zero
    recs = d.feed(0.3, encode_frame(Token(0, 1, 1), 1, 20))
    assert recs[0].ticks == 20  # type: ignore[union-attr]


def test_outstanding_pings_are_bounded() -> None:
    d = DeviceDecoder()
    for nonce in range(1000):
        d.note_ping_sent(nonce, float(nonce))
    assert len(d._pings) <= 256
    assert 999 in d._pings and 0 not in d._pings
