"""Turn one RUN into a timed schedule of frames, power segments and the ground truth.

Pure functions over the cost model: given the token ids (already computed by real forward passes)
and the device time the run starts, :func:`plan_run` lays out every frame the firmware would emit
at the given trace level, the power waveform a sensor would see, and a :class:`RunTruth` the
tests and the host-side metrics are checked against. Times are seconds since the twin booted,
in true (host) time; the device clock's drift is applied only when stamping ticks.

Token windows tile the run: token ``i`` runs from the end of token ``i-1`` (the INFER_BEGIN time
for the first) to its TOKEN frame's timestamp, so per-token energies add up to the energy of the
run until the last TOKEN. TTFT is INFER_BEGIN to the first DECODE token; ITL are the gaps between
consecutive DECODE tokens.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace

from tinytelem.costing.model import CostModel, OpTiming
from tinytelem.protocol.messages import (
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
    SpanBegin,
    SpanEnd,
    Token,
    TraceLevel,
)

__all__ = [
    "PowerSegment",
    "RunPlan",
    "RunTruth",
    "ScheduledFrame",
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
}


@dataclass(frozen=True, slots=True)
class ScheduledFrame:
    """A frame the firmware emits at ``time_s`` (seconds since boot, true time)."""

    time_s: float
    message: AnyMessage


@dataclass(frozen=True, slots=True)
class PowerSegment:
    """Constant power ``watts`` from ``start_s`` to ``end_s`` (seconds since boot)."""

    start_s: float
    end_s: float
    watts: float


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

    def _segment(self, duration: float, watts: float) -> None:
        end = self.t + duration
        power = self.power
        if power and power[-1].watts == watts and power[-1].end_s == self.t:
            power[-1] = PowerSegment(power[-1].start_s, end, watts)
        else:
            power.append(PowerSegment(self.t, end, watts))
        self.t = end

    def emit(self, message: AnyMessage) -> None:
        if _LEVEL_OF.get(message.TYPE, TraceLevel.OFF) > self.level:
            return
        self.frames.append(ScheduledFrame(self.t, message))
        cost = self.cost.frame_cost_s(message.TYPE)
        if cost > 0:
            self._segment(cost, self._instr_w)

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
) -> RunPlan:
    """Lay out one run that starts at ``start_s``.

    Prompt token ``i`` is one forward pass at position ``i`` (llama2.c computes the classifier
    for every position, so do we). The first generated token needs only sampling from the last
    prompt position's logits; every later one is a forward pass of the previous token plus
    sampling. COUNTER frames carry counters since boot, so ``macs_before`` / ``cycles_before``
    continue them.
    """
    b = _Builder(cost, level, start_s)
    n_prompt = len(prompt)
    b.emit(InferBegin(run_id, n_prompt, len(generated)))
    ids: list[int] = []
    phases: list[Phase] = []
    starts: list[float] = []
    ends: list[float] = []
    peak = heap_peak

    def token(index: int, token_id: int, phase: Phase, window_start: float) -> None:
        ids.append(token_id)
        phases.append(phase)
        starts.append(window_start)
        ends.append(b.t)
        b.emit(Token(index, token_id, phase))

    for i, tok in enumerate(prompt):
        w = b.t
        b.forward(i)
        token(i, tok, Phase.PREFILL, w)
    for j, tok in enumerate(generated):
        w = b.t
        if j > 0:
            b.forward(n_prompt - 1 + j)
        b.work(cost.sample_op())
        token(n_prompt + j, tok, Phase.DECODE, w)
        mem = cost.memory(n_prompt + j, peak)
        peak = mem.heap_peak
        b.emit(Memory(mem.heap_used, mem.heap_peak, mem.stack_peak, mem.arena_bytes, mem.kv_bytes))
    cycles = cycles_before + round((b.t - start_s) * cost.platform.cpu_hz)
    b.emit(CounterValue(Counter.MACS, macs_before + b.macs))
    b.emit(CounterValue(Counter.CYCLES, cycles))
    end_s = b.t
    b.emit(InferEnd(run_id, len(generated), InferStatus.OK))
    power = tuple(b.power)
    truth = _truth(
        run_id, InferStatus.OK, start_s, end_s, n_prompt, ids, phases, starts, ends, power, b.macs
    )
    return RunPlan(run_id, start_s, end_s, tuple(b.frames), power, truth, peak, cycles)


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


def shift_plan(plan: RunPlan, dt: float) -> RunPlan:
    """The same plan ``dt`` seconds later: every frame, power segment and truth time moved.

    Planning a long run takes real time (thousands of frames); the twin starts the run when
    the plan is ready, not when RUN arrived, so its frames are not already overdue.
    """
    if dt == 0:
        return plan
    t = plan.truth
    truth = replace(
        t,
        start_s=t.start_s + dt,
        end_s=t.end_s + dt,
        token_start_s=tuple(x + dt for x in t.token_start_s),
        token_end_s=tuple(x + dt for x in t.token_end_s),
    )
    return replace(
        plan,
        start_s=plan.start_s + dt,
        end_s=plan.end_s + dt,
        frames=tuple(ScheduledFrame(f.time_s + dt, f.message) for f in plan.frames),
        power=tuple(PowerSegment(p.start_s + dt, p.end_s + dt, p.watts) for p in plan.power),
        truth=truth,
    )
