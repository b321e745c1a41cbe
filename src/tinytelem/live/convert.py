"""Hub records -> stream message maps (schema ``tinytelem.stream/1``, docs/streaming.md).

One converter per streamer; it is stateful only where the wire protocol is (SPAN_BEGIN waits
for its SPAN_END; HELLO facts are kept for clients that connect later; link and drop counters
feed the periodic ``stats`` message). Power blocks are summarised by the streamer itself; here
they only count.

Operator spans come at ~90 per token with span tracing on: far more than any view needs and
more than a websocket fan-out should carry. By default they are aggregated per token (one
``layers`` message just before each ``token``: time per layer, time and count per operator);
one ``span`` message per SPAN_BEGIN/SPAN_END pair is made only while ``raw_spans`` is set (a
client subscribed with ``spans: "raw"``).
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

__all__ = ["LayerAggregate", "RecordConverter", "device_map", "op_name"]


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


class LayerAggregate:
    """Spans that ended since the last token, summed per layer and per operator."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.n = 0
        self.begin_s = float("inf")
        self.end_s = float("-inf")
        self.layer_s: dict[int, float] = {}
        self.op_s: dict[int, float] = {}
        self.op_count: dict[int, int] = {}

    def add(self, begin_s: float, end_s: float, layer: int, op: int) -> None:
        self.n += 1
        self.begin_s = min(self.begin_s, begin_s)
        self.end_s = max(self.end_s, end_s)
        if op == Op.LAYER:
            self.layer_s[layer] = self.layer_s.get(layer, 0.0) + (end_s - begin_s)
        else:
            self.op_s[op] = self.op_s.get(op, 0.0) + (end_s - begin_s)
            self.op_count[op] = self.op_count.get(op, 0) + 1

    def message(self, index: int) -> dict[str, Any]:
        """The ``layers`` map for token ``index`` (then starts over)."""
        layers = sorted(self.layer_s)
        ops = sorted(self.op_s)
        out = {"type": "layers", "index": index, "begin_s": self.begin_s, "end_s": self.end_s,
               "spans": self.n, "layer": layers, "layer_s": [self.layer_s[k] for k in layers],
               "op": ops, "op_name": [op_name(k) for k in ops],
               "op_s": [self.op_s[k] for k in ops], "op_count": [self.op_count[k] for k in ops]}
        self.clear()
        return out


class RecordConverter:
    """Turns each record into zero or more message maps."""

    def __init__(self) -> None:
        self.device: dict[str, Any] | None = None
        self._open_spans: dict[tuple[int, int], float] = {}
        self.layers = LayerAggregate()
        self.raw_spans = False
        """Also make one ``span`` message per pair (some client subscribed to raw spans)."""
        self.spans_lost = 0
        """SPAN_ENDs whose SPAN_BEGIN never arrived (dropped upstream): not aggregated."""
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
        if isinstance(m, SpanBegin):
            self._open_spans[(m.layer, m.op)] = r.device_s
            return []
        if isinstance(m, SpanEnd):
            begin = self._open_spans.pop((m.layer, m.op), None)
            if begin is None:
                self.spans_lost += 1
                return []
            self.layers.add(begin, r.device_s, m.layer, m.op)
            if not self.raw_spans:
                return []
            return [{"type": "span", "begin_s": begin, "end_s": r.device_s, "layer": m.layer,
                     "op": m.op, "op_name": op_name(m.op)}]
        if isinstance(m, Token):
            token = {"type": "token", "host_s": r.host_s, "device_s": r.device_s,
                     "index": m.index, "token_id": m.token_id, "phase": m.phase}
            if self.layers.n:
                return [self.layers.message(m.index), token]
            return [token]
        if isinstance(m, Memory):
            return [{"type": "memory", "device_s": r.device_s, "heap_used": m.heap_used,
                     "heap_peak": m.heap_peak, "stack_peak": m.stack_peak,
                     "arena_bytes": m.arena_bytes, "kv_bytes": m.kv_bytes}]
        if isinstance(m, InferBegin):
            self._open_spans.clear()
            self.layers.clear()
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
