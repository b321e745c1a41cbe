"""Recorder actor: every record into the HDF5 trace, nothing lost silently.

:class:`TraceRecorder` is synchronous (records in, table rows out) so that ``trace replay`` uses
exactly the code of a live recording. Rows are buffered and written in batches at least every
``flush_interval_s``; the writer then flushes the file, so a recorder killed with SIGKILL leaves
a trace that opens and holds everything up to the last flush.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import trio

from tinytelem.actors.heap import HeapTrimmer
from tinytelem.protocol.messages import (
    AnyMessage,
    CounterValue,
    DeviceError,
    Heartbeat,
    Hello,
    InferBegin,
    InferEnd,
    Log,
    Marker,
    Memory,
    Pong,
    SpanBegin,
    SpanEnd,
    Token,
)
from tinytelem.records import (
    DecodeErrorRecord,
    DeviceRecord,
    LinkStatus,
    PingRecord,
    PowerBlock,
    PowerGap,
    Record,
    RecordBatch,
)
from tinytelem.trace.schema import (
    EVENT_DTYPE,
    MEMORY_DTYPE,
    PING_DTYPE,
    RUN_DTYPE,
    SPAN_DTYPE,
    TOKEN_DTYPE,
)


class RecorderExtension(Protocol):
    """Extra per-record work done by the recorder (e.g. power summaries into the trace)."""

    def handle(self, record: Record) -> None: ...
    def flush(self) -> None: ...
    def finish(self) -> None: ...


class TraceSink(Protocol):
    """The part of :class:`tinytelem.trace.writer.TraceWriter` the recorder uses.

    Each method does nothing by default, so a class that subclasses this protocol explicitly is
    a sink that keeps nothing (``session.core.NullSink``) without listing the methods again.
    """

    def add_events(self, rows: np.ndarray) -> None: return None
    def add_tokens(self, rows: np.ndarray) -> None: return None
    def add_spans(self, rows: np.ndarray) -> None: return None
    def add_memory(self, rows: np.ndarray) -> None: return None
    def add_pings(self, rows: np.ndarray) -> None: return None
    def add_runs(self, rows: np.ndarray) -> None: return None
    def add_power(self, first_index: int, current_a: np.ndarray, host_s: float) -> None: return None
    def add_power_gap(self, first_index: int, n_missing: int, host_s: float) -> None: return None
    def add_link_gap(self, lost_host_s: float, restored_host_s: float) -> None: return None
    def add_text(
        self, table: Literal["errors", "logs"], host_s: float, device_s: float, code: int,
        text: str,
    ) -> None: return None
    def set_attrs(self, group: str, attrs: dict[str, Any]) -> None: return None
    def flush(self) -> None: return None


@dataclass(frozen=True, slots=True)
class RecorderStatistics:
    """Counts of the recorder (immutable snapshot)."""

    records: int
    frames: int
    tokens: int
    spans: int
    unmatched_spans: int
    power_samples: int
    power_gaps: int
    link_gaps: int
    decode_errors: int
    flushes: int


def _abc(message: AnyMessage) -> tuple[int, int, int]:
    """The small integer fields of a message, for the generic events table."""
    if isinstance(message, Token):
        return message.index, message.token_id, message.phase
    if isinstance(message, SpanBegin | SpanEnd):
        return message.layer, message.op, 0
    if isinstance(message, InferBegin):
        return message.run_id, message.n_prompt, message.n_tokens
    if isinstance(message, InferEnd):
        return message.run_id, message.n_generated, message.status
    if isinstance(message, CounterValue):
        return message.counter_id, min(message.value, 2**63 - 1), 0
    if isinstance(message, Marker):
        return message.marker_id, message.value, 0
    if isinstance(message, Heartbeat):
        return message.uptime_ms, message.tx_dropped, 0
    if isinstance(message, Pong):
        return message.nonce, 0, 0
    return 0, 0, 0


class TraceRecorder:
    """Turns records into trace rows (synchronous; see module docstring)."""

    def __init__(
        self,
        sink: TraceSink,
        *,
        flush_interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        host_t0: float | None = None,
        extensions: Sequence[RecorderExtension] = (),
    ) -> None:
        self._sink = sink
        self._extensions = tuple(extensions)
        self._flush_interval_s = flush_interval_s
        self._clock = clock
        self.host_t0 = clock() if host_t0 is None else host_t0
        self._last_flush = self.host_t0
        self._events: list[tuple[Any, ...]] = []
        self._tokens: list[tuple[Any, ...]] = []
        self._spans: list[tuple[Any, ...]] = []
        self._memory: list[tuple[Any, ...]] = []
        self._pings: list[tuple[Any, ...]] = []
        self._open_spans: dict[tuple[int, int], tuple[int, float]] = {}
        self.runs: dict[int, dict[str, Any]] = {}
        self._run_id = 0
        self._link_down_at: float | None = None
        self.hello: Hello | None = None
        self._n_records = self._n_frames = self._n_tokens = self._n_spans = 0
        self._n_unmatched = self._n_samples = self._n_gaps = self._n_link_gaps = 0
        self._n_errors = self._n_flushes = 0

    def rel(self, host_s: float) -> float:
        """Host monotonic time -> seconds since the recording started."""
        return host_s - self.host_t0

    def handle(self, record: Record) -> None:
        """Take one record; write buffered rows when the flush interval has passed."""
        self._n_records += 1
        if isinstance(record, DeviceRecord):
            self._device(record)
        elif isinstance(record, PowerBlock):
            self._sink.add_power(record.first_index, record.current_a, self.rel(record.host_s))
            self._n_samples += len(record.current_a)
        elif isinstance(record, PowerGap):
            self._sink.add_power_gap(record.first_index, record.n_missing, self.rel(record.host_s))
            self._n_gaps += 1
        elif isinstance(record, PingRecord):
            self._pings.append(
                (record.nonce, self.rel(record.send_host_s), self.rel(record.recv_host_s),
                 record.ticks)
            )
        elif isinstance(record, DecodeErrorRecord):
            self._n_errors += 1
            err = record.error
            text = f"{err.kind.value}: {err.detail}"
            self._sink.add_text("errors", self.rel(record.host_s), math.nan, err.size, text)
        elif isinstance(record, LinkStatus):
            self._link(record)
        for ext in self._extensions:
            ext.handle(record)
        self.maybe_flush()

    def _device(self, r: DeviceRecord) -> None:
        self._n_frames += 1
        m = r.message
        host_s = self.rel(r.host_s)
        a, b, c = _abc(m)
        self._events.append((host_s, r.ticks, r.device_s, r.seq, int(m.TYPE), a, b, c))
        if isinstance(m, Token):
            self._n_tokens += 1
            self._tokens.append(
                (self._run_id, m.index, m.token_id, m.phase, r.ticks, r.device_s, host_s)
            )
        elif isinstance(m, SpanBegin):
            self._open_spans[(m.layer, m.op)] = (r.ticks, r.device_s)
        elif isinstance(m, SpanEnd):
            begin = self._open_spans.pop((m.layer, m.op), None)
            if begin is None:
                self._n_unmatched += 1
            else:
                self._n_spans += 1
                self._spans.append(
                    (self._run_id, m.layer, m.op, begin[0], r.ticks, begin[1], r.device_s)
                )
        elif isinstance(m, Memory):
            self._memory.append(
                (r.ticks, r.device_s, m.heap_used, m.heap_peak, m.stack_peak, m.arena_bytes,
                 m.kv_bytes)
            )
        elif isinstance(m, InferBegin):
            self._run_id = m.run_id
            self._open_spans.clear()
            self.runs[m.run_id] = begun = {
                "run_id": m.run_id, "n_prompt": m.n_prompt, "n_tokens": m.n_tokens,
                "n_generated": 0, "status": -1, "begin_ticks": r.ticks, "end_ticks": 0,
                "begin_s": r.device_s, "end_s": math.nan,
            }
            self._write_run(begun)
        elif isinstance(m, InferEnd):
            # An ended run is written now (a killed recorder keeps it) and forgotten, so
            # runs without end keep the recorder's memory bounded.
            run = self.runs.pop(m.run_id, None)
            if run is not None:
                run.update(n_generated=m.n_generated, status=m.status, end_ticks=r.ticks,
                           end_s=r.device_s)
                self._write_run(run)
        elif isinstance(m, Hello):
            self.hello = m
        elif isinstance(m, Log):
            self._sink.add_text("logs", host_s, r.device_s, m.level, m.text)
        elif isinstance(m, DeviceError):
            self._sink.add_text("errors", host_s, r.device_s, m.code, f"device: {m.text}")

    def _write_run(self, run: dict[str, Any]) -> None:
        names = RUN_DTYPE.names or ()
        self._sink.add_runs(np.array([tuple(run[name] for name in names)], dtype=RUN_DTYPE))

    def _link(self, status: LinkStatus) -> None:
        if not status.up:
            self._link_down_at = self.rel(status.host_s)
            # Spans cut by the outage can never end.
            self._open_spans.clear()
        elif self._link_down_at is not None:
            self._sink.add_link_gap(self._link_down_at, self.rel(status.host_s))
            self._n_link_gaps += 1
            self._link_down_at = None

    def maybe_flush(self) -> None:
        """Flush when the interval has passed since the last flush."""
        if self._clock() - self._last_flush >= self._flush_interval_s:
            self.flush()

    def flush(self) -> None:
        """Write buffered rows and flush the file."""
        for rows, dtype, add in (
            (self._events, EVENT_DTYPE, self._sink.add_events),
            (self._tokens, TOKEN_DTYPE, self._sink.add_tokens),
            (self._spans, SPAN_DTYPE, self._sink.add_spans),
            (self._memory, MEMORY_DTYPE, self._sink.add_memory),
            (self._pings, PING_DTYPE, self._sink.add_pings),
        ):
            if rows:
                add(np.array(rows, dtype=dtype))
                rows.clear()
        for ext in self._extensions:
            ext.flush()
        self._sink.flush()
        self._n_flushes += 1
        self._last_flush = self._clock()

    def finish(self) -> None:
        """Write the runs table, close an open link gap, and flush. Call once at the end."""
        if self._link_down_at is not None:
            self._sink.add_link_gap(self._link_down_at, math.nan)
            self._link_down_at = None
        if self.runs:
            names = RUN_DTYPE.names or ()
            rows = [tuple(run[name] for name in names) for run in self.runs.values()]
            self._sink.add_runs(np.array(rows, dtype=RUN_DTYPE))
        for ext in self._extensions:
            ext.finish()
        self.flush()

    def statistics(self) -> RecorderStatistics:
        """Immutable snapshot of the counters."""
        return RecorderStatistics(
            records=self._n_records,
            frames=self._n_frames,
            tokens=self._n_tokens,
            spans=self._n_spans,
            unmatched_spans=self._n_unmatched,
            power_samples=self._n_samples,
            power_gaps=self._n_gaps,
            link_gaps=self._n_link_gaps,
            decode_errors=self._n_errors,
            flushes=self._n_flushes,
        )


class RecorderActor:
    """Drains the hub's lossless subscription into a :class:`TraceRecorder`.

    It also trims the C heap once a minute (:mod:`tinytelem.actors.heap`), so a recording that
    runs for days keeps a flat RSS instead of one glibc's kept arenas make creep up.
    """

    def __init__(self, recorder: TraceRecorder, trimmer: HeapTrimmer | None = None) -> None:
        self.recorder = recorder
        self.trimmer = HeapTrimmer() if trimmer is None else trimmer

    async def run(
        self,
        receive: trio.MemoryReceiveChannel[RecordBatch],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Record until the channel closes, flushing on time even when nothing arrives."""
        async with receive:
            task_status.started()
            while True:
                with trio.move_on_after(self.recorder._flush_interval_s):
                    try:
                        batch = await receive.receive()
                    except trio.EndOfChannel:
                        break
                    for record in batch:
                        self.recorder.handle(record)
                    self.trimmer.maybe_trim()
                    continue
                self.recorder.flush()
                self.trimmer.maybe_trim()
        self.recorder.finish()

    def statistics(self) -> RecorderStatistics:
        """Immutable snapshot of the counters."""
        return self.recorder.statistics()
