"""Hub records -> stream message maps (schema ``tinytelem.stream/1``, docs/streaming.md).

One converter per streamer; it is stateful only where the wire protocol is (SPAN_BEGIN waits
for its SPAN_END; HELLO facts are kept for clients that connect later; link and drop counters
feed the periodic ``stats`` message). Power blocks are summarised by the streamer itself; here
they only count.
"""

from __future__ import annotations

from typing import Any

from tinytelem.protocol.messages import (
    DeviceError,
    Heartbeat,
    Hello,
    InferBegin,
    InferEnd,
    Log,
    Memory,
    Op,
    SpanBegin,
    SpanEnd,
    Token,
)
from tinytelem.records import (
    DecodeErrorRecord,
    DeviceRecord,
    LinkStatus,
    PowerBlock,
    PowerGap,
    Record,
)

__all__ = ["RecordConverter", "device_map", "op_name"]


def op_name(op: int) -> str:
    """Operator name for a SPAN op id (``"op<N>"`` for ids newer than this host)."""
    try:
        return Op(op).name.lower()
    except ValueError:
        return f"op{op}"


def device_map(hello: Hello) -> dict[str, Any]:
    """HELLO facts as a stream map (the model hash as hex, like the trace stores it)."""
    return {
        "platform": hello.platform, "firmware_version": hello.firmware_version,
        "model_name": hello.model_name, "model_sha256": hello.model_hash.hex(),
        "cpu_hz": hello.cpu_hz, "tick_hz": hello.tick_hz, "ram_bytes": hello.ram_bytes,
        "flash_bytes": hello.flash_bytes, "psram_bytes": hello.psram_bytes,
        "capabilities": hello.capabilities,
    }


class RecordConverter:
    """Turns each record into zero or more message maps."""

    def __init__(self) -> None:
        self.device: dict[str, Any] | None = None
        self._open_spans: dict[tuple[int, int], float] = {}
        self.link_up = True
        self.link_outages = 0
        self.decode_errors = 0
        self.power_samples = 0
        self.power_gaps = 0
        self.device_tx_dropped = 0

    def convert(self, record: Record) -> list[dict[str, Any]]:
        """Message maps for ``record`` (power blocks give none: the streamer summarises them)."""
        if isinstance(record, DeviceRecord):
            return self._device(record)
        if isinstance(record, PowerBlock):
            self.power_samples += len(record.current_a)
            return []
        if isinstance(record, PowerGap):
            self.power_gaps += 1
            return [{"type": "power_gap", "first_index": record.first_index,
                     "n_missing": record.n_missing}]
        if isinstance(record, LinkStatus):
            if not record.up:
                self.link_outages += 1
                self._open_spans.clear()
            self.link_up = record.up
            return [{"type": "link", "host_s": record.host_s, "up": record.up,
                     "reason": record.reason}]
        if isinstance(record, DecodeErrorRecord):
            self.decode_errors += 1
            err = record.error
            return [{"type": "error", "host_s": record.host_s,
                     "text": f"link: {err.kind.value}: {err.detail}"}]
        return []  # PingRecord: clock alignment, not interesting live

    def _device(self, r: DeviceRecord) -> list[dict[str, Any]]:
        m = r.message
        if isinstance(m, Token):
            return [{"type": "token", "host_s": r.host_s, "device_s": r.device_s,
                     "index": m.index, "token_id": m.token_id, "phase": m.phase}]
        if isinstance(m, SpanBegin):
            self._open_spans[(m.layer, m.op)] = r.device_s
            return []
        if isinstance(m, SpanEnd):
            begin = self._open_spans.pop((m.layer, m.op), None)
            if begin is None:
                return []
            return [{"type": "span", "begin_s": begin, "end_s": r.device_s, "layer": m.layer,
                     "op": m.op, "op_name": op_name(m.op)}]
        if isinstance(m, Memory):
            return [{"type": "memory", "device_s": r.device_s, "heap_used": m.heap_used,
                     "heap_peak": m.heap_peak, "stack_peak": m.stack_peak,
                     "arena_bytes": m.arena_bytes, "kv_bytes": m.kv_bytes}]
        if isinstance(m, InferBegin):
            self._open_spans.clear()
            return [{"type": "run", "event": "begin", "host_s": r.host_s,
                     "device_s": r.device_s, "run_id": m.run_id, "n_prompt": m.n_prompt,
                     "n_tokens": m.n_tokens}]
        if isinstance(m, InferEnd):
            return [{"type": "run", "event": "end", "host_s": r.host_s, "device_s": r.device_s,
                     "run_id": m.run_id, "n_generated": m.n_generated, "status": m.status}]
        if isinstance(m, Hello):
            self.device = device_map(m)
            return [{"type": "device", **self.device}]
        if isinstance(m, Heartbeat):
            self.device_tx_dropped = m.tx_dropped
            return []
        if isinstance(m, Log):
            return [{"type": "log", "device_s": r.device_s, "level": m.level, "text": m.text}]
        if isinstance(m, DeviceError):
            return [{"type": "error", "host_s": r.host_s, "text": f"device: {m.text}"}]
        return []
