"""Re-decode a raw link capture into a trace, with the code that made the live trace.

The capture holds every byte in both directions with its host arrival time, so the decoder
sees the same chunks at the same times, and the PINGs the host sent (decoded from the
host->device bytes) pair with their PONGs exactly as they did live. Power samples are not in
the capture (the sensor is not on the link), so a replayed trace has the device side only.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tinytelem.actors.decoder import DecoderActorStatistics, DeviceDecoder
from tinytelem.actors.recorder import RecorderStatistics, TraceRecorder
from tinytelem.protocol.codec import Frame, FrameDecoder
from tinytelem.protocol.commands import Ping
from tinytelem.records import LinkStatus
from tinytelem.trace.raw import DEVICE_TO_HOST, HOST_TO_DEVICE, LINK_EVENT


@dataclass(frozen=True)
class ReplayResult:
    """Counts of a replay."""

    records: int
    truncated: bool
    decoder: DecoderActorStatistics
    recorder: RecorderStatistics


def replay_capture(
    raw_path: Path | Sequence[Path], trace_path: Path, *, overwrite: bool = False
) -> ReplayResult:
    """Decode ``raw_path`` into a new trace at ``trace_path``.

    A sequence of paths is the captures of a rotated recording's segments, in order: they are
    decoded as one stream (a frame cut by a switch is joined again), into one trace.
    """
    from tinytelem.trace.raw import RawCaptureReader
    from tinytelem.trace.writer import TraceWriter

    paths = [raw_path] if isinstance(raw_path, Path) else list(raw_path)
    readers = [RawCaptureReader(p) for p in paths]
    reader = readers[0]
    header = reader.header
    records = itertools.chain.from_iterable(readers)
    first = next(records, None)
    host_t0 = float(header.get("host_t0", first[0] if first else 0.0))
    now = [host_t0]
    writer = TraceWriter.create(trace_path, overwrite=overwrite, attrs={
        "host_t0": host_t0, "device": str(header.get("url", "")),
        "link_url": str(header.get("link_url", "")),
        "replayed_from": ",".join(p.name for p in paths),
        "sensor": "none", "calibration_id": "none",
    })
    decoder = DeviceDecoder()
    host_frames = FrameDecoder()
    recorder = TraceRecorder(writer, clock=lambda: now[0], host_t0=host_t0, flush_interval_s=5.0)
    n = 0
    try:
        item = first
        while item is not None:
            host_s, direction, data = item
            now[0] = host_s
            n += 1
            if direction == DEVICE_TO_HOST:
                for record in decoder.feed(host_s, data):
                    recorder.handle(record)
            elif direction == LINK_EVENT:
                up = data == b"up"
                if not up:
                    for record in decoder.link_lost(host_s):
                        recorder.handle(record)
                url = str(header.get("link_url", ""))
                reason = data.decode("utf-8", "replace").removeprefix("down ")
                recorder.handle(LinkStatus(host_s, up, url, reason))
            elif direction == HOST_TO_DEVICE:
                host_frames.receive_data(data)
                for event in host_frames.events():
                    if isinstance(event, Frame) and isinstance(event.message, Ping):
                        decoder.note_ping_sent(event.message.nonce, host_s)
            item = next(records, None)
        recorder.finish()
        hello = recorder.hello
        if hello is not None:
            writer.set_attrs("/", {
                "tick_hz": hello.tick_hz, "cpu_hz": hello.cpu_hz, "platform": hello.platform,
                "model_name": hello.model_name, "model_sha256": hello.model_hash.hex(),
                "firmware_version": hello.firmware_version,
            })
        s = decoder.statistics()
        writer.set_attrs("link", {
            "frames": s.frames, "bytes": s.bytes, "crc_errors": s.crc_errors,
            "cobs_errors": s.cobs_errors, "other_errors": s.other_errors, "gaps": s.seq_gaps,
            "lost_frames": s.lost_frames, "lost_spans": s.lost_spans,
            "resyncs": s.resyncs,
            "reconnects": recorder.statistics().link_gaps,
        })
    finally:
        writer.close()
    return ReplayResult(n, any(r.truncated for r in readers), decoder.statistics(),
                        recorder.statistics())
