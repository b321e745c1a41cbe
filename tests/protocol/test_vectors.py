"""The golden vectors: encoding fields reproduces the wire bytes, decoding reproduces fields.

The same JSON drives the firmware's C encoder tests, so these tests pin the wire format.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tinytelem.protocol import cobs
from tinytelem.protocol.codec import (
    HEADER,
    NEED_DATA,
    Frame,
    FrameDecoder,
    FrameError,
    encode_frame,
)

VECTOR_DIR = Path(__file__).resolve().parent.parent / "vectors"
VECTORS: dict[str, Any] = json.loads((VECTOR_DIR / "protocol_v1.json").read_text("utf-8"))


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_vector_generate", VECTOR_DIR / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _load_generator()
FRAMES = VECTORS["frames"]
STREAMS = VECTORS["streams"]


def test_header() -> None:
    assert VECTORS["format"] == "tinytelem-protocol-vectors"
    assert VECTORS["format_version"] == 1
    assert VECTORS["protocol_version"] == 1
    # Every message type has at least one vector.
    from tinytelem.protocol.messages import MsgType

    assert {f["type"] for f in FRAMES} == {t.name for t in MsgType}


def test_crc_parameters() -> None:
    assert zlib.crc32(b"123456789") == 0xCBF43926


@pytest.mark.parametrize("vec", FRAMES, ids=[f["name"] for f in FRAMES])
def test_frame_vector(vec: dict[str, Any]) -> None:
    msg = GEN.message_from_fields(vec["type_code"], vec["fields"])
    wire = bytes.fromhex(vec["wire"])
    frame = bytes.fromhex(vec["frame"])
    assert msg.pack().hex() == vec["payload"]
    assert encode_frame(msg, vec["seq"], vec["ticks"]) == wire
    assert frame[:8] == HEADER.pack(1, vec["type_code"], vec["seq"], vec["ticks"])
    assert int.from_bytes(frame[-4:], "little") == int(vec["crc"], 16) == zlib.crc32(frame[:-4])
    assert cobs.encode(frame) + b"\x00" == wire
    dec = FrameDecoder(expand_spans=False)
    dec.receive_data(wire)
    ev = dec.next_event()
    assert isinstance(ev, Frame)
    assert (ev.seq, ev.ticks, ev.size) == (vec["seq"], vec["ticks"], len(wire))
    assert ev.message == msg
    assert GEN.message_to_fields(ev.message) == vec["fields"]
    assert dec.next_event() is NEED_DATA


def test_worked_example_in_docs() -> None:
    vec = next(f for f in FRAMES if f["name"] == "token_decode")
    assert vec["wire"] == "0401042a0440420f02050101032c010106014aa9820600"


def test_254_byte_frame_ends_without_extra_code() -> None:
    vec = next(f for f in FRAMES if f["name"] == "log_body_254")
    wire = bytes.fromhex(vec["wire"])
    assert len(wire) == 1 + 254 + 1 and wire[0] == 0xFF


def _events(dec: FrameDecoder) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while (ev := dec.next_event()) is not NEED_DATA:
        if isinstance(ev, Frame):
            out.append(
                {
                    "kind": "frame",
                    "seq": ev.seq,
                    "ticks": ev.ticks,
                    "type": ev.message.TYPE.name,
                    "fields": GEN.message_to_fields(ev.message),
                }
            )
        else:
            assert isinstance(ev, FrameError)
            out.append({"kind": ev.kind.value, "size": ev.size})
    return out


@pytest.mark.parametrize("vec", STREAMS, ids=[s["name"] for s in STREAMS])
def test_stream_vector_every_split(vec: dict[str, Any]) -> None:
    wire = bytes.fromhex(vec["wire"])
    for cut in range(len(wire) + 1):
        dec = FrameDecoder()
        dec.receive_data(wire[:cut])
        first = _events(dec)
        dec.receive_data(wire[cut:])
        if vec["end_of_stream"]:
            dec.end_of_stream()
        assert first + _events(dec) == vec["events"], f"split at {cut}"
        assert dataclasses.asdict(dec.statistics()) == vec["statistics"]


def test_stream_statistics_by_hand() -> None:
    """A few expectations written out, independent of the generator's output."""
    by_name = {s["name"]: s["statistics"] for s in STREAMS}
    assert by_name["bad_crc"]["crc_errors"] == 1 and by_name["bad_crc"]["frames"] == 2
    assert by_name["bad_cobs"]["cobs_errors"] == 1
    assert by_name["oversize"]["other_errors"] == 1 and by_name["oversize"]["frames"] == 1
    assert (by_name["seq_gap"]["seq_gaps"], by_name["seq_gap"]["lost_frames"]) == (1, 2)
    assert (by_name["seq_wrap"]["seq_gaps"], by_name["seq_wrap"]["lost_frames"]) == (0, 0)
    gap = by_name["seq_gap_across_wrap"]
    assert (gap["seq_gaps"], gap["lost_frames"]) == (1, 2)
    assert by_name["hello_reanchors"]["seq_gaps"] == 0
    lost = by_name["span_batch_lost"]
    assert (lost["lost_frames"], lost["lost_spans"], lost["span_batches"]) == (1, 4, 2)
    assert (lost["frames"], lost["batched_spans"]) == (3, 5)
    assert by_name["span_batch_expanded"]["lost_spans"] == 0


def test_span_batch_expands_to_the_single_span_frames() -> None:
    """A batch decodes to the same events its records would give as SPAN_BEGIN/SPAN_END frames."""
    from tinytelem.protocol.messages import SpanBatch, SpanBegin, SpanEnd

    vec = next(f for f in FRAMES if f["name"] == "span_batch")
    batch = GEN.message_from_fields(vec["type_code"], vec["fields"])
    assert isinstance(batch, SpanBatch)
    dec = FrameDecoder()
    dec.receive_data(bytes.fromhex(vec["wire"]))
    got = [(ev.seq, ev.ticks, ev.message) for ev in dec.events() if isinstance(ev, Frame)]
    ticks = vec["ticks"]
    want = []
    for r in batch.records:
        ticks = (ticks + r.delta) & 0xFFFFFFFF
        want.append((vec["seq"], ticks, (SpanEnd if r.end else SpanBegin)(r.layer, r.op)))
    assert got == want
    assert dec.statistics().frames == 1


def test_committed_json_is_current() -> None:
    assert GEN.render() == (VECTOR_DIR / "protocol_v1.json").read_text("utf-8"), (
        "tests/vectors/protocol_v1.json is stale: run python tests/vectors/generate.py and "
        "review the diff (a changed wire string is a wire-format change)"
    )


def test_generator_check_mode_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(VECTOR_DIR / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
