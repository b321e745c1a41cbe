"""Generate the wire protocol v1 golden vectors (tests/vectors/protocol_v1.json).

Run from the repository root::

    python tests/vectors/generate.py            # rewrite protocol_v1.json
    python tests/vectors/generate.py --check    # exit 1 if the committed file is stale

The JSON is committed: it is the contract between the Python codec and the C encoder (the
firmware tests encode every ``frames`` entry and compare bytes). docs/protocol.md, section
"Golden vectors", describes the format. Regenerate only on purpose, and review the diff: a change
in any ``wire`` string is a wire-format change.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import zlib
from pathlib import Path
from typing import Any

from tinytelem.protocol import cobs
from tinytelem.protocol.codec import (
    HEADER,
    NEED_DATA,
    ErrorKind,
    Frame,
    FrameDecoder,
    encode_frame,
)
from tinytelem.protocol.commands import Config, Ping, Run, Stop
from tinytelem.protocol.messages import (
    MESSAGE_CLASSES,
    AnyMessage,
    Capability,
    Counter,
    CounterValue,
    DeviceError,
    Heartbeat,
    Hello,
    InferBegin,
    InferEnd,
    InferStatus,
    Log,
    LogLevel,
    Marker,
    Memory,
    MsgType,
    Op,
    Phase,
    Pong,
    PowerSamples,
    SpanBatch,
    SpanBegin,
    SpanEnd,
    SpanRecord,
    Token,
    TraceLevel,
)

OUT = Path(__file__).resolve().parent / "protocol_v1.json"
FORMAT = "tinytelem-protocol-vectors"
FORMAT_VERSION = 1


# ---------------------------------------------------------------- fields <-> message (shared)
def message_to_fields(message: AnyMessage) -> dict[str, Any]:
    """JSON form of a message's fields: bytes as lowercase hex, tuples as lists."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(message):
        value = getattr(message, f.name)
        if isinstance(value, bytes):
            value = value.hex()
        elif f.name == "records":
            value = [[bool(r.end), int(r.layer), int(r.op), int(r.delta)] for r in value]
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            value = int(value)
        out[f.name] = value
    return out


def message_from_fields(type_code: int, fields: dict[str, Any]) -> AnyMessage:
    """Inverse of :func:`message_to_fields`."""
    cls = MESSAGE_CLASSES[type_code]
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        value = fields[f.name]
        if f.name == "model_hash":
            value = bytes.fromhex(value)
        elif f.name in ("prompt", "shunt", "bus"):
            value = tuple(value)
        elif f.name == "records":
            value = tuple(SpanRecord(bool(e), la, op, d) for e, la, op, d in value)
        kwargs[f.name] = value
    return cls(**kwargs)


# ---------------------------------------------------------------- frame vectors
HASH = bytes(range(0x10, 0x30))


def _log_with_body(n_body: int, seq: int) -> tuple[Log, int]:
    """A LOG whose un-stuffed frame is n_body bytes with no zero byte at all (COBS 254 cases)."""
    text = "a" * (n_body - 8 - 1 - 4)
    msg = Log(LogLevel.INFO, text)
    for ticks in range(0x01010101, 0x01010101 + 100000):
        body = HEADER.pack(1, msg.TYPE, seq, ticks) + msg.pack()
        body += zlib.crc32(body).to_bytes(4, "little")
        if 0 not in body:
            return msg, ticks
    raise AssertionError("no zero-free CRC found")  # pragma: no cover


_SPAN_RECORDS = (
    SpanRecord(False, 0xFFFF, Op.EMBED, 0),
    SpanRecord(True, 0xFFFF, Op.EMBED, 100),
    SpanRecord(False, 0, Op.LAYER, 3),
    SpanRecord(False, 0, Op.ATTN_NORM, 1),
    SpanRecord(True, 0, Op.ATTN_NORM, 1_000),
    SpanRecord(False, 0, Op.QKV, 2),
    SpanRecord(True, 0, Op.QKV, 90_000),
    SpanRecord(False, 1, Op.LAYER, 0x12345678),
)


def _batch(seq: int, first: int, records: tuple[SpanRecord, ...], ticks: int = 5000) -> bytes:
    return encode_frame(SpanBatch(first, records), seq, ticks)


def frame_cases() -> list[tuple[str, str, int, int, AnyMessage]]:
    """(name, note, seq, ticks, message); one or more per message type."""
    log254, t254 = _log_with_body(254, 0x0101)
    log255, t255 = _log_with_body(255, 0x0102)
    return [
        (
            "hello",
            "boot announcement",
            0,
            0,
            Hello(
                cpu_hz=64_000_000,
                tick_hz=1_000_000,
                ram_bytes=262_144,
                flash_bytes=1_048_576,
                psram_bytes=0,
                capabilities=int(Capability.SPANS | Capability.MEMORY | Capability.STOP),
                model_hash=HASH,
                platform="nrf52840",
                firmware_version="0.1.0",
                model_name="stories260K",
            ),
        ),
        (
            "hello_empty_strings",
            "empty strings are a zero length byte",
            1,
            5,
            Hello(480_000_000, 25_000_000, 1 << 20, 2 << 20, 8 << 20, 0, bytes(32), "", "", ""),
        ),
        ("infer_begin", "", 2, 1_000, InferBegin(run_id=7, n_prompt=3, n_tokens=32)),
        ("token_prefill", "", 3, 2_500, Token(index=0, token_id=1, phase=Phase.PREFILL)),
        (
            "token_decode",
            "the worked example of docs/protocol.md",
            42,
            1_000_000,
            Token(index=5, token_id=300, phase=Phase.DECODE),
        ),
        (
            "token_max",
            "all-ones fields, seq and ticks at their maximum",
            0xFFFF,
            0xFFFFFFFF,
            Token(index=0xFFFFFFFF, token_id=0xFFFFFFFF, phase=0xFF),
        ),
        ("span_begin", "", 4, 3_000, SpanBegin(layer=3, op=Op.ATTENTION)),
        ("span_end_no_layer", "NO_LAYER spans", 5, 3_100, SpanEnd(layer=0xFFFF, op=Op.SAMPLE)),
        (
            "memory",
            "",
            6,
            4_000,
            Memory(
                heap_used=20_480,
                heap_peak=24_576,
                stack_peak=3_072,
                arena_bytes=65_536,
                kv_bytes=8_192,
            ),
        ),
        (
            "counter",
            "u64 value",
            7,
            5_000,
            CounterValue(counter_id=Counter.CYCLES, value=0x0123456789ABCDEF),
        ),
        ("marker", "", 8, 6_000, Marker(marker_id=2, value=0xDEADBEEF)),
        ("log", "UTF-8 text to the payload end", 9, 7_000, Log(LogLevel.WARNING, "kv cache 90% ✓")),
        ("log_empty", "level only", 10, 7_001, Log(LogLevel.DEBUG, "")),
        (
            "log_body_254",
            "frame of 254 zero-free bytes: one 0xFF block and nothing after it",
            0x0101,
            t254,
            log254,
        ),
        (
            "log_body_255",
            "frame of 255 zero-free bytes: 0xFF block, then code 0x02",
            0x0102,
            t255,
            log255,
        ),
        ("error", "", 11, 8_000, DeviceError(code=3, text="arena exhausted")),
        (
            "span_batch",
            "a token's first spans: EMBED outside layers, then layer 0 (LAYER, ATTN_NORM, QKV); "
            "deltas of 1, 2, 3 and 5 varint bytes, the first 0 (the frame's own timestamp)",
            17,
            12_000,
            SpanBatch(first=300, records=_SPAN_RECORDS),
        ),
        (
            "span_batch_empty",
            "no records (a device never sends one; a host must accept it)",
            18,
            12_500,
            SpanBatch(first=0xFFFF),
        ),
        ("heartbeat", "", 12, 9_000, Heartbeat(uptime_ms=123_456, tx_dropped=0)),
        ("pong", "", 13, 9_500, Pong(nonce=0x11223344)),
        (
            "power_samples",
            "INA226 bridge: 3 raw (shunt i16, bus u16) pairs, one negative shunt",
            16,
            11_000,
            PowerSamples(first_index=1000, period_ns=280_000, chip=1,
                         shunt=(1200, -3, 32767), bus=(2640, 2641, 0xFFFF)),
        ),
        ("infer_end", "", 14, 10_000, InferEnd(run_id=7, n_generated=29, status=InferStatus.OK)),
        (
            "infer_end_stopped",
            "",
            15,
            10_500,
            InferEnd(run_id=8, n_generated=4, status=InferStatus.STOPPED),
        ),
        ("ping", "host to device", 0, 0, Ping(nonce=0x11223344)),
        (
            "run",
            "f32 temperature; prompt of 3 token ids",
            1,
            0,
            Run(run_id=7, seed=42, temperature=0.75, n_tokens=32, prompt=(1, 403, 511)),
        ),
        ("run_empty_prompt", "", 2, 0, Run(run_id=9, seed=0, temperature=0.0, n_tokens=1)),
        ("stop", "empty payload", 3, 0, Stop()),
        ("config", "", 4, 0, Config(trace_level=TraceLevel.SPANS)),
    ]


def frame_vector(name: str, note: str, seq: int, ticks: int, msg: AnyMessage) -> dict[str, Any]:
    payload = msg.pack()
    body = HEADER.pack(1, msg.TYPE, seq, ticks) + payload
    crc = zlib.crc32(body)
    wire = encode_frame(msg, seq, ticks)
    assert wire == cobs.encode(body + crc.to_bytes(4, "little")) + b"\x00"
    return {
        "name": name,
        "note": note,
        "type": MsgType(msg.TYPE).name,
        "type_code": int(msg.TYPE),
        "seq": seq,
        "ticks": ticks,
        "fields": message_to_fields(msg),
        "payload": payload.hex(),
        "crc": f"{crc:08x}",
        "frame": (body + crc.to_bytes(4, "little")).hex(),
        "wire": wire.hex(),
    }


# ---------------------------------------------------------------- malformed streams
def _raw(version: int, msg_type: int, seq: int, ticks: int, payload: bytes) -> bytes:
    body = HEADER.pack(version, msg_type, seq, ticks) + payload
    return cobs.encode(body + zlib.crc32(body).to_bytes(4, "little")) + b"\x00"


def _tok(seq: int) -> bytes:
    return encode_frame(Token(seq, 100 + seq, Phase.DECODE), seq, 1000 * seq)


def stream_cases() -> list[tuple[str, str, bytes, list[str], bool]]:
    """(name, note, wire, expected event kinds in order, end_of_stream called)."""
    good = _tok(1)
    bad_crc = bytearray(cobs.decode(_tok(2)[:-1]))
    bad_crc[-1] ^= 0x01
    flipped = bytearray(cobs.decode(_tok(2)[:-1]))
    flipped[12] ^= 0x40  # token_id 102 -> 38: still non-zero, so the COBS layout is unchanged
    big = Log(LogLevel.INFO, "x" * 300)
    return [
        (
            "bad_crc",
            "one bit of the CRC flipped, COBS re-applied",
            good + cobs.encode(bytes(bad_crc)) + b"\x00" + _tok(3),
            ["frame", "crc", "frame"],
            False,
        ),
        (
            "bad_crc_payload_bit",
            "one payload bit flipped on the wire (still valid COBS)",
            good + cobs.encode(bytes(flipped)) + b"\x00" + _tok(3),
            ["frame", "crc", "frame"],
            False,
        ),
        (
            "bad_cobs",
            "a code byte pointing past the delimiter",
            good + b"\x05\x01\x02\x00" + _tok(2),
            ["frame", "cobs", "frame"],
            False,
        ),
        (
            "truncated_frame",
            "the first 9 bytes of a frame, then a delimiter (link reset)",
            good + _tok(2)[:9] + b"\x00" + _tok(3),
            ["frame", "cobs", "frame"],
            False,
        ),
        (
            "truncated_short",
            "a 6-byte stretch that decodes but is shorter than 12 bytes",
            good + b"\x07\x01\x02\x03\x04\x05\x06\x00" + _tok(3),
            ["frame", "short", "frame"],
            False,
        ),
        (
            "truncated_at_end",
            "the stream ends inside a frame; end_of_stream reports it",
            good + _tok(2)[:12],
            ["frame", "truncated"],
            True,
        ),
        (
            "mid_frame_start",
            "capture starts inside a frame",
            _tok(1)[7:] + _tok(2),
            ["crc", "frame"],
            False,
        ),
        (
            "empty_frames",
            "extra delimiters are ignored",
            b"\x00\x00" + good + b"\x00\x00" + _tok(2),
            ["frame", "frame"],
            False,
        ),
        (
            "oversize",
            "2000 bytes of 0x55 and no delimiter, then a good frame",
            b"\x55" * 2000 + b"\x00" + good,
            ["oversize", "frame"],
            False,
        ),
        (
            "bad_version",
            "version byte 2",
            _raw(2, 4, 1, 0, b"\x00" * 9) + _tok(2),
            ["version", "frame"],
            False,
        ),
        (
            "unknown_type",
            "type 0x3f is not defined in v1",
            _raw(1, 0x3F, 1, 0, b"") + _tok(2),
            ["type", "frame"],
            False,
        ),
        (
            "bad_payload_length",
            "TOKEN with 8 payload bytes instead of 9",
            _raw(1, 4, 1, 0, b"\x00" * 8) + _tok(2),
            ["payload", "frame"],
            False,
        ),
        (
            "bad_utf8",
            "LOG text that is not UTF-8",
            _raw(1, 0x0A, 1, 0, b"\x01\xff\xfe") + _tok(2),
            ["payload", "frame"],
            False,
        ),
        (
            "seq_gap",
            "seq 1, 2, 5: one gap, two frames lost",
            _tok(1) + _tok(2) + _tok(5),
            ["frame", "frame", "frame"],
            False,
        ),
        (
            "seq_wrap",
            "65534, 65535, 0, 1: no gap across the wrap",
            b"".join(
                encode_frame(Token(i, 1, 1), s, i) for i, s in enumerate((65534, 65535, 0, 1))
            ),
            ["frame"] * 4,
            False,
        ),
        (
            "seq_gap_across_wrap",
            "65535 then 2: one gap, two frames (0, 1) lost",
            encode_frame(Token(0, 1, 1), 65535, 0) + encode_frame(Token(1, 1, 1), 2, 10),
            ["frame", "frame"],
            False,
        ),
        (
            "hello_reanchors",
            "a reboot: seq restarts at 0 with HELLO, no gap is counted",
            _tok(7) + _tok(8) + encode_frame(frame_cases()[0][4], 0, 0) + _tok(1),
            ["frame"] * 4,
            False,
        ),
        (
            "span_batch_expanded",
            "a SPAN_BATCH before its token's TOKEN: one span frame per record, same seq, "
            "ticks accumulated from the frame's timestamp (wrapping past 2^32)",
            _tok(1) + _batch(2, 0, _SPAN_RECORDS[:4], 0xFFFFFFF0) + _tok(3),
            ["frame"] * 6,
            False,
        ),
        (
            "span_batch_lost",
            "batches seq 1 (records 0-2), 3 (records 7-8): batch seq 2 with records 3-6 lost",
            _batch(1, 0, _SPAN_RECORDS[:3]) + _batch(3, 7, _SPAN_RECORDS[3:5]) + _tok(4),
            ["frame"] * 6,
            False,
        ),
        (
            "span_batch_empty_then_token",
            "an empty batch expands to nothing but its seq is used",
            _batch(1, 5, ()) + _tok(2),
            ["frame"],
            False,
        ),
        (
            "span_batch_cut_record",
            "a record whose varint delta runs past the payload",
            _raw(1, 0x0F, 1, 0, b"\x00\x00\x41\x00\x00\x85") + _tok(2),
            ["payload", "frame"],
            False,
        ),
        (
            "long_frame",
            "a 313-byte frame with a 0xFF COBS block",
            encode_frame(big, 1, 1) + _tok(2),
            ["frame", "frame"],
            False,
        ),
    ]


def stream_vector(name: str, note: str, wire: bytes, kinds: list[str], eos: bool) -> dict[str, Any]:
    dec = FrameDecoder()
    dec.receive_data(wire)
    if eos:
        dec.end_of_stream()
    events: list[dict[str, Any]] = []
    while (ev := dec.next_event()) is not NEED_DATA:
        if isinstance(ev, Frame):
            events.append(
                {
                    "kind": "frame",
                    "seq": ev.seq,
                    "ticks": ev.ticks,
                    "type": MsgType(ev.message.TYPE).name,
                    "fields": message_to_fields(ev.message),
                }
            )
        else:
            events.append({"kind": ev.kind.value, "size": ev.size})
    got = [e["kind"] for e in events]
    if got != kinds:
        raise AssertionError(f"stream {name}: decoder gave {got}, the vector says {kinds}")
    return {
        "name": name,
        "note": note,
        "wire": wire.hex(),
        "end_of_stream": eos,
        "events": events,
        "statistics": dataclasses.asdict(dec.statistics()),
    }


# ---------------------------------------------------------------- COBS vectors
def cobs_cases() -> list[tuple[str, bytes, bytes]]:
    """(name, decoded, encoded without delimiter): the classic examples of the COBS literature."""
    r = bytes(range(1, 256))  # 01..FF
    return [
        ("one_zero", b"\x00", b"\x01\x01"),
        ("two_zeros", b"\x00\x00", b"\x01\x01\x01"),
        ("zero_x_zero", b"\x00\x11\x00", b"\x01\x02\x11\x01"),
        ("zero_inside", b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
        ("no_zero", b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
        ("trailing_zeros", b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
        ("run_254", r[:254], b"\xff" + r[:254]),
        ("zero_then_run_254", b"\x00" + r[:254], b"\x01\xff" + r[:254]),
        ("run_255", r[:255], b"\xff" + r[:254] + b"\x02\xff"),
        ("run_254_then_zero", r[1:255] + b"\x00", b"\xff" + r[1:255] + b"\x01\x01"),
        ("run_253_zero_one", r[2:255] + b"\x00\x01", b"\xfe" + r[2:255] + b"\x02\x01"),
        ("empty", b"", b"\x01"),
    ]


def build() -> dict[str, Any]:
    for name, decoded, encoded in cobs_cases():
        assert cobs.encode(decoded) == encoded, name
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "protocol_version": 1,
        "generated_by": "tests/vectors/generate.py",
        "frames": [frame_vector(*c) for c in frame_cases()],
        "streams": [stream_vector(*c) for c in stream_cases()],
        "cobs": [{"name": n, "decoded": d.hex(), "encoded": e.hex()} for n, d, e in cobs_cases()],
    }


def render() -> str:
    return json.dumps(build(), indent=1, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    text = render()
    if args.check:
        if OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT.name} is stale: run python tests/vectors/generate.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    _ = ErrorKind  # kinds are written by value; keep the import for readers
    raise SystemExit(main())
