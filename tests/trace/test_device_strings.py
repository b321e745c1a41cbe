"""Device strings are untrusted: whatever a HELLO or LOG carries, the recording goes on.

Before the fix, a HELLO whose platform or model name held a NUL made ``record`` fail at the end
("VLEN strings do not support embedded NULLs"), and one whose name was not UTF-8 was rejected
whole, costing the device clock. Now the text is stored backslash-escaped.
"""

from __future__ import annotations

import json
import struct
import tempfile
import zlib
from pathlib import Path

import h5py
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinytelem.actors.decoder import DeviceDecoder
from tinytelem.actors.recorder import TraceRecorder
from tinytelem.actors.supervisor import SessionOutcome
from tinytelem.protocol import cobs
from tinytelem.protocol.codec import encode_frame
from tinytelem.protocol.enums import MsgType
from tinytelem.protocol.messages import DeviceError, InferBegin, InferEnd, Log, Token
from tinytelem.session.core import store_session, write_summary
from tinytelem.trace.reader import open_trace
from tinytelem.trace.writer import TraceWriter

TICK_HZ = 1_000_000


def hello_frame(platform: bytes, firmware: bytes, model: bytes, seq: int = 0) -> bytes:
    """A HELLO frame built byte by byte, so its strings can be anything a device sends."""
    payload = struct.pack("<IIIIII32s", 240_000_000, TICK_HZ, 512 * 1024, 8 << 20, 0, 0,
                          bytes(range(32)))
    for text in (platform, firmware, model):
        payload += bytes([len(text)]) + text
    body = struct.pack("<BBHI", 1, int(MsgType.HELLO), seq, 10) + payload
    body += struct.pack("<I", zlib.crc32(body))
    return cobs.encode(body) + b"\x00"


def record(path: Path, platform: bytes, firmware: bytes, model: bytes, log: str) -> Path:
    """Decode a short session (HELLO, LOG, ERROR, one run) and record it like ``record``."""
    data = hello_frame(platform, firmware, model)
    for seq, msg in enumerate((Log(2, log), DeviceError(7, log), InferBegin(1, 1, 1),
                               Token(0, 5, 0), Token(1, 6, 1), InferEnd(1, 1, 0)), start=1):
        data += encode_frame(msg, seq, 100 + 50 * seq)
    writer = TraceWriter.create(path, attrs={"device": "tcp://x", "platform": ""})
    recorder = TraceRecorder(writer, host_t0=0.0, clock=lambda: 0.0)
    decoder = DeviceDecoder()
    for rec in decoder.feed(1.0, data):
        recorder.handle(rec)
    recorder.finish()
    try:
        store_session(writer, recorder, SessionOutcome(hello=decoder.hello, run_status=0), None)
    finally:
        writer.close()
    summary_path = path.with_suffix(".json")
    write_summary(path, summary_path)
    return summary_path


def escaped(raw: bytes) -> str:
    """What the trace stores for ``raw``: UTF-8 where it is, ``\\xNN`` for the rest."""
    text = raw.decode("utf-8", "backslashreplace")
    return "".join(c if c in "\t\n\r" or (0x20 <= ord(c) < 0x7F or ord(c) > 0x9F)
                   else f"\\x{ord(c):02x}" for c in text)


def test_nul_and_invalid_utf8_are_recorded_escaped(tmp_path: Path) -> None:
    path = tmp_path / "t.h5"
    summary_path = record(path, b"esp\x00s3\xff", b"1.0\x1b[2J", b"stories\x00260K", "a\x00b")
    with open_trace(path) as tr:
        assert tr.attrs["platform"] == "esp\\x00s3\\xff"
        assert tr.attrs["firmware_version"] == "1.0\\x1b[2J"
        assert tr.attrs["model_name"] == "stories\\x00260K"
        assert tr.attrs["tick_hz"] == TICK_HZ  # the clock survived the bad names
        assert list(tr.logs["text"]) == ["a\\x00b"]
        assert list(tr.errors["text"]) == ["device: a\\x00b"]
        assert tr.tokens.size == 2 and np.isfinite(tr.tokens["device_s"]).all()
        assert tr.attrs["complete"] is True
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    assert summary["platform"] == "esp\\x00s3\\xff"


def test_huge_device_text_is_stored(tmp_path: Path) -> None:
    path = tmp_path / "t.h5"
    big = "x\x00" * 500_000
    with TraceWriter.create(path, attrs={"platform": big}) as w:
        w.add_text("logs", 0.0, 0.0, 1, big)
    with h5py.File(path, "r") as f:
        assert f.attrs["platform"] == "x\\x00" * 500_000
        assert f["logs"][0]["text"].decode() == "x\\x00" * 500_000


names = st.binary(max_size=255) | st.text(max_size=60).map(lambda t: t.encode()[:255])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(platform=names, firmware=names, model=names, log=st.text(max_size=200))
def test_fuzz_device_strings_never_end_a_recording(platform: bytes, firmware: bytes,
                                                   model: bytes, log: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.h5"
        summary_path = record(path, platform, firmware, model, log)
        with open_trace(path) as tr:
            assert tr.attrs["complete"] is True
            assert tr.attrs["platform"] == escaped(platform)
            assert tr.attrs["model_name"] == escaped(model)
            assert tr.attrs["firmware_version"] == escaped(firmware)
            assert list(tr.logs["text"]) == [escaped(log.encode("utf-8", "surrogatepass"))]
            assert tr.tokens.size == 2
        json.loads(summary_path.read_text(encoding="utf-8"))
