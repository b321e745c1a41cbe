"""Turn one RUN into a timed schedule of frames, power segments and the ground truth.

:class:`RunLayout` lays a run out token by token, as the twin's forward passes produce the ids
(the twin streams: a long run never waits for a plan of the whole run). Each step places every
frame the firmware would emit at the given trace level and the power waveform a sensor would
see; :meth:`RunLayout.plan` gives what is laid out so far as a :class:`RunPlan` with the
:class:`RunTruth` the tests and the host-side metrics are checked against. Timing depends on
positions only, never on the ids, so a layout is the same whether the ids come one by one or
all at once (:func:`plan_run`). Times are seconds since the twin booted, in true (host) time;
the device clock's drift is applied only when stamping ticks.

Token windows tile the run: token ``i`` runs from the end of token ``i-1`` (the INFER_BEGIN time
for the first) to its TOKEN frame's timestamp, so per-token energies add up to the energy of the
run until the last TOKEN. TTFT is INFER_BEGIN to the first DECODE token; ITL are the gaps between
consecutive DECODE tokens.

Span events are batched as the firmware batches them: each costs one span record, and the
pending records leave as one SPAN_BATCH (a :class:`SpanDraft` until the twin stamps its ticks)
before the next other frame, or when the batch is full.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from tinytelem.costing.model import CostModel, OpTiming
from tinytelem.power.waveform import PowerSegment
from tinytelem.protocol.codec import encode_frame
from tinytelem.protocol.messages import (
    MAX_PAYLOAD,
    MAX_SPAN_RECORD,
    NO_LAYER,
    AnyMessage,
    Counter,
    CounterValue,
    InferBegin,
    InferEnd,
    InferStatus,
    Memory,
    MsgType,
    Op,
    Phase,
    SpanBatch,
    SpanBegin,
    SpanEnd,
    SpanRecord,
    Token,
    TraceLevel,
    varint_len,
)

__all__ = [
    "PowerSegment",
    "RunLayout",
    "RunPlan",
    "RunTruth",
    "ScheduledFrame",
    "ScheduledMessage",
    "SpanDraft",
    "energy_between",
    "plan_run",
    "truncate_plan",
]

_LEVEL_OF: dict[MsgType, TraceLevel] = {
    MsgType.INFER_BEGIN: TraceLevel.OFF,
    MsgType.INFER_END: TraceLevel.OFF,
    MsgType.TOKEN: TraceLevel.TOKENS,
    MsgType.MEMORY: TraceLevel.TOKENS,
    MsgType.COUNTER: TraceLevel.TOKENS,
    MsgType.SPAN_BEGIN: TraceLevel.SPANS,
    MsgType.SPAN_END: TraceLevel.SPANS,
    MsgType.SPAN_BATCH: TraceLevel.SPANS,
}


@dataclass(frozen=True, slots=True)
class SpanDraft:
    """A SPAN_BATCH laid out in seconds: ``events`` are ``(time_s, end, layer, op)``.

    The twin turns it into the wire message with its own clock when the frame is sent
    (:meth:`resolve`): the header carries the first record's ticks and each record the ticks
    since the one before, as the firmware writes them.
    """

    TYPE: ClassVar[MsgType] = MsgType.SPAN_BATCH
    events: tuple[tuple[float, bool, int, int], ...]

    def resolve(self, ticks_at: Callable[[float], int], first: int) -> tuple[int, SpanBatch]:
        """(header ticks, message) with ``first`` as the batch's record number."""
        t0 = ticks_at(self.events[0][0]) if self.events else 0
        last = t0
        records = []
        for t, end, layer, op in self.events:
            ticks = ticks_at(t)
            records.append(SpanRecord(end, layer, op, (ticks - last) & 0xFFFFFFFF))
            last = ticks
        return t0, SpanBatch(first & 0xFFFF, tuple(records))

    def nominal(self, tick_hz: int) -> tuple[int, SpanBatch]:
        """:meth:`resolve` with a clock that has no drift or offset (sizes, link budgets)."""
        return self.resolve(lambda t: round(t * tick_hz) & 0xFFFFFFFF, 0)


ScheduledMessage = AnyMessage | SpanDraft
"""What a schedule emits: a message, or a span batch whose ticks the twin fills in."""


@dataclass(frozen=True, slots=True)
class ScheduledFrame:
    """A frame the firmware emits at ``time_s`` (seconds since boot, true time)."""

    time_s: float
    message: ScheduledMessage


@dataclass(frozen=True, slots=True)
class RunTruth:
    """What really happened in one run, in seconds since boot (the twin's ground truth)."""

    run_id: int
    status: InferStatus
    start_s: float
    end_s: float
    n_prompt: int
    token_ids: tuple[int, ...]
    phases: tuple[Phase, ...]
    token_start_s: tuple[float, ...]
    token_end_s: tuple[float, ...]
    energy_per_token_j: tuple[float, ...]
    energy_j: float
    """Energy from INFER_BEGIN to INFER_END."""
    macs: int

    @property
    def n_generated(self) -> int:
        """DECODE tokens produced."""
        return sum(1 for p in self.phases if p is Phase.DECODE)

    @property
    def ttft_s(self) -> float | None:
        """INFER_BEGIN to the first DECODE token (None when nothing was generated)."""
        for phase, end in zip(self.phases, self.token_end_s, strict=True):
            if phase is Phase.DECODE:
                return end - self.start_s
        return None

    @property
    def itl_s(self) -> tuple[float, ...]:
        """Gaps between consecutive DECODE token times."""
        ends = [e for p, e in zip(self.phases, self.token_end_s, strict=True) if p is Phase.DECODE]
        return tuple(b - a for a, b in itertools.pairwise(ends))

    @property
    def avg_power_w(self) -> float:
        """Mean power over the run."""
        span = self.end_s - self.start_s
        return self.energy_j / span if span > 0 else 0.0


@dataclass(frozen=True, slots=True)
class RunPlan:
    """Everything one RUN produces: frames, power waveform, truth."""

    run_id: int
    start_s: float
    end_s: float
    frames: tuple[ScheduledFrame, ...]
    power: tuple[PowerSegment, ...]
    truth: RunTruth
    heap_peak: int
    cycles: int


def energy_between(segments: Sequence[PowerSegment], start: float, end: float) -> float:
    """Integral of power over ``[start, end]`` (joules); segments outside count zero."""
    total = 0.0
    for seg in segments:
        lo = max(seg.start_s, start)
        hi = min(seg.end_s, end)
        if hi > lo:
            total += seg.watts * (hi - lo)
    return total


class _Builder:
    """Accumulates frames and power while a cursor walks device time forward."""

    def __init__(self, cost: CostModel, level: TraceLevel, start_s: float) -> None:
        self.cost = cost
        self.level = level
        self.t = start_s
        self.frames: list[ScheduledFrame] = []
        self.power: list[PowerSegment] = []
        self._instr_w = cost.instrumentation_watts()
        self.macs = 0
        self.power_taken = 0
        """Segments already handed out: they are final, so new time never merges into them."""
        self._tick_hz = cost.platform.tick_hz
        self._spans: list[tuple[float, bool, int, int]] = []
        self._span_bytes = 0
        self._span_layer = NO_LAYER
        self._span_ticks = 0

    def _segment(self, duration: float, watts: float) -> None:
        end = self.t + duration
        power = self.power
        if (len(power) > self.power_taken and power[-1].watts == watts
                and power[-1].end_s == self.t):
            power[-1] = PowerSegment(power[-1].start_s, end, watts)
        else:
            power.append(PowerSegment(self.t, end, watts))
        self.t = end

    def emit(self, message: AnyMessage) -> None:
        if _LEVEL_OF.get(message.TYPE, TraceLevel.OFF) > self.level:
            return
        if isinstance(message, SpanBegin | SpanEnd):
            self._span(isinstance(message, SpanEnd), message.layer, message.op)
            return
        self.flush_spans()
        self.frames.append(ScheduledFrame(self.t, message))
        self._spend(self.cost.frame_cost_s(message.TYPE))

    def _spend(self, cost: float) -> None:
        if cost > 0:
            self._segment(cost, self._instr_w)

    def _span(self, end: bool, layer: int, op: int) -> None:
        """A span event: a record in the pending batch (a full batch leaves first)."""
        if self._span_bytes > MAX_PAYLOAD - MAX_SPAN_RECORD:
            self.flush_spans()
        ticks = round(self.t * self._tick_hz)
        if not self._spans:
            self._span_bytes, self._span_layer, self._span_ticks = 2, NO_LAYER, ticks
        self._span_bytes += 1 + varint_len(ticks - self._span_ticks)
        if layer != self._span_layer:
            self._span_bytes += 2
            self._span_layer = layer
        self._span_ticks = ticks
        self._spans.append((self.t, end, layer, op))
        self._spend(self.cost.frame_cost_s(MsgType.SPAN_BEGIN))

    def flush_spans(self) -> None:
        """Send the pending span records as one SPAN_BATCH (the firmware does so before any
        other frame)."""
        if not self._spans:
            return
        draft = SpanDraft(tuple(self._spans))
        self._spans = []
        self.frames.append(ScheduledFrame(self.t, draft))
        ticks, batch = draft.nominal(self._tick_hz)
        self._spend(self.cost.frame_bytes_cost_s(len(encode_frame(batch, 0, ticks))))

    def work(self, timing: OpTiming) -> None:
        self.emit(SpanBegin(timing.layer, timing.op))
        self._segment(timing.duration_s, timing.watts)
        self.macs += timing.macs
        self.emit(SpanEnd(timing.layer, timing.op))

    def forward(self, pos: int) -> None:
        layer: int | None = None
        for timing in self.cost.forward_ops(pos):
            if timing.layer != layer:
                if layer is not None and layer != NO_LAYER:
                    self.emit(SpanEnd(layer, Op.LAYER))
                if timing.layer != NO_LAYER:
                    self.emit(SpanBegin(timing.layer, Op.LAYER))
                layer = timing.layer
            self.work(timing)
        if layer is not None and layer != NO_LAYER:
            self.emit(SpanEnd(layer, Op.LAYER))


class RunLayout:
    """One run, laid out step by step as its token ids become known.

    Call :meth:`prefill` for each prompt token, :meth:`decode` for each sampled one (None when
    the sample was BOS, which ends the run like llama2.c), then :meth:`finish`. Prompt token
    ``i`` is one forward pass at position ``i`` (llama2.c computes the classifier for every
    position, so do we). The first generated token needs only sampling from the last prompt
    position's logits; every later one is a forward pass of the previous token plus sampling.
    COUNTER frames carry counters since boot, so ``macs_before`` / ``cycles_before`` continue
    them. INFER_BEGIN announces ``n_tokens``, the (clipped) count the run may generate, as the
    firmware does.
    """

    def __init__(self, cost: CostModel, *, run_id: int, n_prompt: int, n_tokens: int,
                 start_s: float, level: TraceLevel, heap_peak: int = 0, macs_before: int = 0,
                 cycles_before: int = 0) -> None:
        self.cost = cost
        self.run_id = run_id
        self.n_prompt = n_prompt
        self.start_s = start_s
        self._b = _Builder(cost, level, start_s)
        self._macs_before = macs_before
        self._cycles_before = cycles_before
        self.peak = heap_peak
        self.cycles = cycles_before
        self.end_s: float | None = None
        self.n_generated = 0
        self._ids: list[int] = []
        self._phases: list[Phase] = []
        self._starts: list[float] = []
        self._ends: list[float] = []
        self._frames_taken = 0
        self._b.emit(InferBegin(run_id, n_prompt, n_tokens))

    @property
    def horizon_s(self) -> float:
        """Device time laid out so far (the end of the run once finished)."""
        return self._b.t

    @property
    def done(self) -> bool:
        """True once INFER_END is laid out."""
        return self.end_s is not None

    def _token(self, index: int, token_id: int, phase: Phase, window_start: float) -> None:
        self._b.flush_spans()  # the token's spans leave before its TOKEN, which then is stamped
        self._ids.append(token_id)
        self._phases.append(phase)
        self._starts.append(window_start)
        self._ends.append(self._b.t)
        self._b.emit(Token(index, token_id, phase))

    def prefill(self, index: int, token_id: int) -> None:
        """Prompt token ``index``: one forward pass, then its TOKEN frame."""
        w = self._b.t
        self._b.forward(index)
        self._token(index, token_id, Phase.PREFILL, w)

    def decode(self, j: int, token_id: int | None) -> None:
        """Generated token ``j`` (forward pass unless ``j == 0``, sampling, TOKEN, MEMORY);
        ``token_id`` None means the sample was BOS: no TOKEN, and the run ends."""
        b = self._b
        w = b.t
        if j > 0:
            b.forward(self.n_prompt - 1 + j)
        b.work(self.cost.sample_op())
        if token_id is None:
            return
        pos = self.n_prompt + j
        self._token(pos, token_id, Phase.DECODE, w)
        self.n_generated += 1
        mem = self.cost.memory(pos, self.peak)
        self.peak = mem.heap_peak
        b.emit(Memory(mem.heap_used, mem.heap_peak, mem.stack_peak, mem.arena_bytes,
                      mem.kv_bytes))

    def finish(self) -> None:
        """COUNTER frames and INFER_END(OK): the run is complete."""
        b = self._b
        b.flush_spans()
        self.cycles = self._cycles_before + round((b.t - self.start_s) * self.cost.platform.cpu_hz)
        b.emit(CounterValue(Counter.MACS, self._macs_before + b.macs))
        b.emit(CounterValue(Counter.CYCLES, self.cycles))
        self.end_s = b.t
        b.emit(InferEnd(self.run_id, self.n_generated, InferStatus.OK))

    def take(self) -> tuple[list[ScheduledFrame], list[PowerSegment]]:
        """Frames and finished power segments laid out since the last call.

        The last segment stays behind until the run is done: the next step may extend it.
        """
        b = self._b
        frames = b.frames[self._frames_taken:]
        self._frames_taken = len(b.frames)
        upto = len(b.power) if self.done else max(b.power_taken, len(b.power) - 1)
        power = b.power[b.power_taken:upto]
        b.power_taken = upto
        return frames, power

    def plan(self) -> RunPlan:
        """What is laid out so far as a plan (the whole run once :attr:`done`)."""
        b = self._b
        power = tuple(b.power)
        end_s = self.end_s if self.end_s is not None else b.t
        truth = _truth(self.run_id, InferStatus.OK, self.start_s, end_s, self.n_prompt,
                       self._ids, self._phases, self._starts, self._ends, power, b.macs)
        return RunPlan(self.run_id, self.start_s, end_s, tuple(b.frames), power, truth,
                       self.peak, self.cycles)


def plan_run(
    cost: CostModel,
    *,
    run_id: int,
    prompt: Sequence[int],
    generated: Sequence[int],
    start_s: float,
    level: TraceLevel,
    heap_peak: int = 0,
    macs_before: int = 0,
    cycles_before: int = 0,
    n_tokens: int | None = None,
) -> RunPlan:
    """Lay out a whole run whose ids are known (``generated`` without the final BOS).

    ``n_tokens`` is the count INFER_BEGIN announces (default ``len(generated)``); when it is
    larger, the run ended on a sampled BOS, whose forward pass and sampling are laid out too.
    """
    n = len(generated) if n_tokens is None else n_tokens
    lay = RunLayout(cost, run_id=run_id, n_prompt=len(prompt), n_tokens=n, start_s=start_s,
                    level=level, heap_peak=heap_peak, macs_before=macs_before,
                    cycles_before=cycles_before)
    for i, tok in enumerate(prompt):
        lay.prefill(i, tok)
    for j, tok in enumerate(generated):
        lay.decode(j, tok)
    if len(generated) < n:
        lay.decode(len(generated), None)
    lay.finish()
    return lay.plan()


def _truth(
    run_id: int,
    status: InferStatus,
    start_s: float,
    end_s: float,
    n_prompt: int,
    ids: Sequence[int],
    phases: Sequence[Phase],
    starts: Sequence[float],
    ends: Sequence[float],
    power: Sequence[PowerSegment],
    macs: int,
) -> RunTruth:
    energies = tuple(energy_between(power, s, e) for s, e in zip(starts, ends, strict=True))
    return RunTruth(
        run_id=run_id,
        status=status,
        start_s=start_s,
        end_s=end_s,
        n_prompt=n_prompt,
        token_ids=tuple(ids),
        phases=tuple(phases),
        token_start_s=tuple(starts),
        token_end_s=tuple(ends),
        energy_per_token_j=energies,
        energy_j=energy_between(power, start_s, end_s),
        macs=macs,
    )


def truncate_plan(plan: RunPlan, stop_s: float) -> RunPlan:
    """The plan as it looks when STOP arrives at ``stop_s``: later frames and power cut off.

    The INFER_END(STOPPED) frame is stamped at ``stop_s`` and counts DECODE tokens already out.
    MACs in the truth are scaled by the share of the run's time that elapsed.
    """
    stop_s = max(stop_s, plan.start_s)
    frames = [f for f in plan.frames if f.time_s <= stop_s and f.message.TYPE != MsgType.INFER_END]
    for f in plan.frames:  # a batch sent after STOP: the spans before it still leave, at STOP
        if f.time_s > stop_s and isinstance(f.message, SpanDraft):
            events = tuple(e for e in f.message.events if e[0] <= stop_s)
            if events:
                frames.append(ScheduledFrame(stop_s, SpanDraft(events)))
            break
    power: list[PowerSegment] = []
    for seg in plan.power:
        if seg.start_s >= stop_s:
            break
        power.append(PowerSegment(seg.start_s, min(seg.end_s, stop_s), seg.watts))
    t = plan.truth
    keep = sum(1 for e in t.token_end_s if e <= stop_s)
    n_gen = sum(1 for p in t.phases[:keep] if p is Phase.DECODE)
    frames.append(ScheduledFrame(stop_s, InferEnd(plan.run_id, n_gen, InferStatus.STOPPED)))
    span = plan.end_s - plan.start_s
    share = (stop_s - plan.start_s) / span if span > 0 else 1.0
    truth = _truth(
        plan.run_id,
        InferStatus.STOPPED,
        plan.start_s,
        stop_s,
        t.n_prompt,
        t.token_ids[:keep],
        t.phases[:keep],
        t.token_start_s[:keep],
        t.token_end_s[:keep],
        power,
        round(t.macs * min(share, 1.0)),
    )
    return RunPlan(
        plan.run_id,
        plan.start_s,
        stop_s,
        tuple(frames),
        tuple(power),
        truth,
        plan.heap_peak,
        plan.cycles,
    )
