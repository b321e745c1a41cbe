"""The sans-I/O twin: schedules, determinism, ground truth, commands, clock and power."""

from __future__ import annotations

import itertools
import math

import pytest

from tinytelem.emulator.schedule import SpanDraft, energy_between
from tinytelem.emulator.twin import ERR_BAD_RUN, ERR_BUSY, LOOKAHEAD_S, RUN_HISTORY, TwinDevice
from tinytelem.protocol.codec import Frame, FrameDecoder
from tinytelem.protocol.commands import Config, Ping, Run, Stop
from tinytelem.protocol.messages import (
    CounterValue,
    DeviceError,
    Heartbeat,
    Hello,
    InferBegin,
    InferEnd,
    InferStatus,
    Log,
    Memory,
    Phase,
    Pong,
    SpanBatch,
    SpanBegin,
    SpanEnd,
    Token,
    TraceLevel,
)

from .helpers import device, greedy, model, platform

PROMPT = (1, 20, 30)


def run_all(d: TwinDevice, run: Run, t0: float = 0.25) -> list:
    d.receive(run, t0)
    d.advance(t0 + 0.9)
    return d.pop_due(t0 + 0.9)


def test_greedy_tokens_match_reference_and_schedule_is_deterministic() -> None:
    a, b = device(), device()
    fa = run_all(a, Run(1, 5, 0.0, 12, PROMPT))
    fb = run_all(b, Run(1, 5, 0.0, 12, PROMPT))
    assert [(f.time_s, f.message) for f in fa] == [(f.time_s, f.message) for f in fb]
    gen = [f.message.token_id for f in fa
           if isinstance(f.message, Token) and f.message.phase == Phase.DECODE]
    assert gen == greedy(PROMPT, 12)
    # Relative times do not depend on when the run starts.
    c = device()
    fc = run_all(c, Run(1, 5, 0.0, 12, PROMPT), t0=0.5)

    def rel(fs: list) -> list[float]:
        return [round(f.time_s - fs[0].time_s, 12) for f in fs
                if not isinstance(f.message, Heartbeat)]

    assert rel(fa) == pytest.approx(rel(fc), abs=1e-9)


def test_temperature_sampling_depends_on_seed() -> None:
    ids = {}
    for seed in (1, 2, 3):
        d = device()
        d.receive(Run(1, seed, 1.0, 20, PROMPT), 0.0)
        d.advance(math.inf)
        ids[seed] = d.truths[1].token_ids
    again = device()
    again.receive(Run(1, 1, 1.0, 20, PROMPT), 0.0)
    again.advance(math.inf)
    assert again.truths[1].token_ids == ids[1]
    assert len(set(ids.values())) > 1


def test_run_history_is_bounded() -> None:
    """A twin that runs for days keeps the plans of its last RUN_HISTORY runs only."""
    d = device()
    runs = RUN_HISTORY + 5
    for run_id in range(1, runs + 1):
        frames = run_all(d, Run(run_id, 1, 0.0, 2, PROMPT), t0=float(run_id))
        assert any(isinstance(f.message, InferEnd) for f in frames)
    assert len(d.plans) == len(d.truths) == RUN_HISTORY
    assert sorted(d.plans) == list(range(runs - RUN_HISTORY + 1, runs + 1))


def test_truth_matches_schedule() -> None:
    d = device()
    frames = run_all(d, Run(7, 1, 0.0, 10, PROMPT))
    truth = d.truths[7]
    begin = next(f for f in frames if isinstance(f.message, InferBegin))
    tokens = [f for f in frames if isinstance(f.message, Token)]
    end = next(f for f in frames if isinstance(f.message, InferEnd))
    assert truth.start_s == begin.time_s and truth.end_s == end.time_s
    assert [f.time_s for f in tokens] == list(truth.token_end_s)
    decode = [f.time_s for f in tokens if f.message.phase == Phase.DECODE]
    assert truth.ttft_s == pytest.approx(decode[0] - begin.time_s)
    assert truth.itl_s == pytest.approx([b - a for a, b in itertools.pairwise(decode)])
    assert sum(truth.energy_per_token_j) <= truth.energy_j
    assert truth.energy_j == pytest.approx(
        energy_between(d.plans[7].power, truth.start_s, truth.end_s)
    )
    p = platform()
    assert p.idle_power_w < truth.avg_power_w < p.active_power_w
    assert truth.n_generated == len(decode) and truth.n_prompt == 3
    assert end.message == InferEnd(7, len(decode), InferStatus.OK)


def test_trace_levels_filter_frames() -> None:
    kinds = {}
    for level in TraceLevel:
        d = device(trace_level=level)
        kinds[level] = {type(f.message) for f in run_all(d, Run(1, 1, 0.0, 4, PROMPT))}
    assert kinds[TraceLevel.OFF] == {InferBegin, InferEnd, Heartbeat}
    assert kinds[TraceLevel.TOKENS] == {InferBegin, InferEnd, Heartbeat, Token, Memory,
                                        CounterValue}
    # Span events leave batched, as the firmware sends them: one SPAN_BATCH per token.
    assert kinds[TraceLevel.SPANS] == kinds[TraceLevel.TOKENS] | {SpanBatch}


def _host_view(frames: list) -> list:
    """The twin's frames as a host decodes them (SPAN_BATCH expanded into span events)."""
    dec = FrameDecoder()
    dec.receive_data(b"".join(f.encode() for f in frames))
    return [e for e in dec.events() if isinstance(e, Frame)]


def test_spans_are_balanced_and_nested() -> None:
    d = device()
    stack = []
    frames = _host_view(run_all(d, Run(1, 1, 0.0, 3, PROMPT)))
    assert sum(isinstance(f.message, SpanBegin) for f in frames) >= 3 * 2 * 8
    for f in frames:
        if isinstance(f.message, SpanBegin):
            stack.append((f.message.layer, f.message.op))
        elif isinstance(f.message, SpanEnd):
            assert stack.pop() == (f.message.layer, f.message.op)
    assert stack == []


def test_span_batches_leave_before_their_token_with_the_spans_times() -> None:
    """Each token's span events go out in one SPAN_BATCH right before its TOKEN; decoded, every
    span event carries the device ticks of the time the schedule laid it out at."""
    d = device(tick_offset=0xFFFFFF00)  # the batch's deltas cross the tick wrap
    made = run_all(d, Run(1, 1, 0.0, 3, PROMPT))
    kinds = [type(f.message) for f in made if isinstance(f.message, SpanBatch | Token)]
    assert kinds == [SpanBatch, Token] * (len(PROMPT) + 3)
    batches = [f for f in made if isinstance(f.message, SpanBatch)]
    assert [f.message.first for f in batches] == list(itertools.accumulate(
        [0] + [len(f.message.records) for f in batches[:-1]]))
    times = [e[0] for draft in _drafts(d.plans[1]) for e in draft.events]
    ticks = [f.ticks for f in _host_view(made) if isinstance(f.message, SpanBegin | SpanEnd)]
    assert ticks == [d.ticks_at(t) for t in times]


def _drafts(plan: object) -> list[SpanDraft]:
    return [f.message for f in plan.frames  # type: ignore[attr-defined]
            if isinstance(f.message, SpanDraft)]


def test_config_changes_next_run_and_tracing_costs_time() -> None:
    d = device()
    d.receive(Config(TraceLevel.OFF), 0.0)
    d.receive(Run(1, 1, 0.0, 8, PROMPT), 0.0)
    d.advance(math.inf)
    off = d.truths[1]
    d.pop_due(1.0)
    d.receive(Config(TraceLevel.SPANS), 1.0)
    d.receive(Run(2, 1, 0.0, 8, PROMPT), 1.0)
    d.advance(math.inf)
    spans = d.truths[2]
    assert (spans.end_s - spans.start_s) > (off.end_s - off.start_s)
    d.receive(Config(9), 2.0)
    assert isinstance(d.pop_due(2.0)[-1].message, DeviceError)


def test_ping_pong_clock_drift_and_wrap() -> None:
    d = device(drift_ppm=100.0, tick_offset=2**32 - 500)
    d.receive(Ping(0xABCD), 0.01)
    (frame,) = d.pop_due(0.01)
    assert frame.message == Pong(0xABCD)
    assert frame.ticks == (round(0.01 * 1.0001 * 1_000_000) + 2**32 - 500) % 2**32 == 9501
    dec = FrameDecoder()
    dec.receive_data(frame.encode())
    (ev,) = dec.events()
    assert ev.message == Pong(0xABCD) and ev.ticks == 9501 and ev.seq == 0


def test_heartbeats_and_hello() -> None:
    d = device(drift_ppm=-50.0)
    frames = d.pop_due(3.5)
    assert [f.message for f in frames] == [Heartbeat(999, 0), Heartbeat(1999, 0),
                                          Heartbeat(2999, 0)]
    assert [f.seq for f in frames] == [0, 1, 2]
    assert d.next_due() == 4.0
    hello = d.hello()
    assert isinstance(hello, Hello) and hello.platform == "esp32s3"
    assert hello.model_hash == bytes.fromhex(model().sha256)
    Hello.unpack(hello.pack())


def test_stop_cuts_the_run() -> None:
    d = device()
    d.receive(Run(3, 1, 0.0, 40, PROMPT), 0.0)
    d.advance(math.inf)
    full = d.truths[3]
    t_stop = full.token_end_s[10] + 1e-6
    early = d.pop_due(t_stop)
    d.receive(Stop(), t_stop)
    rest = d.pop_due(5.0)
    end = next(f.message for f in rest if isinstance(f.message, InferEnd))
    truth = d.truths[3]
    assert truth.status is InferStatus.STOPPED and truth.end_s == t_stop
    assert len(truth.token_ids) == 11
    assert end == InferEnd(3, truth.n_generated, InferStatus.STOPPED)
    assert not [f for f in rest if isinstance(f.message, Token)]
    assert sum(isinstance(f.message, Token) for f in early) == 11
    assert not d.busy
    power = d.drain_power(5.0)
    assert energy_between(power, truth.start_s, 5.0) == pytest.approx(
        truth.energy_j + (5.0 - t_stop) * platform().idle_power_w
    )
    d.receive(Stop(), 5.5)  # nothing running: ignored
    assert d.pop_due(5.5) == []


def test_busy_and_bad_runs_are_reported() -> None:
    d = device()
    d.receive(Run(1, 1, 0.0, 5, PROMPT), 0.0)
    d.receive(Run(2, 1, 0.0, 5, PROMPT), 0.0001)
    d.advance(0.0001)
    errors = [f.message for f in d.pop_due(0.0001) if isinstance(f.message, DeviceError)]
    assert errors and errors[0].code == ERR_BUSY
    d.advance(1.0)
    d.pop_due(1.0)
    d.receive(Run(4, 1, 0.0, 5, (1, 99999)), 1.0)
    out = [f.message for f in d.pop_due(1.0)]
    assert out[0].code == ERR_BAD_RUN and out[1] == InferEnd(4, 0, InferStatus.ERROR)
    d.receive(Run(5, 1, 0.0, 5, tuple([1] * 600)), 1.0)
    assert "context" in d.pop_due(1.0)[0].message.text
    d.receive(Pong(1), 1.0)
    assert isinstance(d.pop_due(1.0)[0].message, Log)


def test_empty_prompt_means_bos_and_clipping() -> None:
    d = device()
    d.receive(Run(1, 1, 0.0, 0, ()), 0.0)
    d.advance(math.inf)
    assert d.truths[1].token_ids == (1,)
    small = TwinDevice(platform("rp2040", sram_bytes=60_000), model())
    ctx = small.cost.context
    assert 20 < ctx < 100
    small.receive(Run(2, 1, 0.0, 5000, (1,)), 0.0)
    small.advance(math.inf)
    # P + N - 1 forward passes fit the context (the last sampled token is never fed back).
    assert len(small.truths[2].token_ids) <= ctx + 1
    frames = small.pop_due(100.0)
    (warning,) = [f.message for f in frames if isinstance(f.message, Log)]
    assert "asked for 5000 tokens" in warning.text and "llama2.c" in warning.text
    assert f"room for {ctx}" in warning.text
    begin = next(f.message for f in frames if isinstance(f.message, InferBegin))
    assert begin.n_tokens == ctx  # INFER_BEGIN announces the clipped count, as the firmware


def test_power_is_contiguous_and_matches_truth() -> None:
    d = device()
    d.drain_power(0.1)
    d.receive(Run(1, 1, 0.0, 10, PROMPT), 0.2)
    d.advance(0.3)
    segs = d.drain_power(0.3)  # only what is laid out: never idle over the run's future
    d.advance(math.inf)
    truth = d.truths[1]
    segs += d.drain_power(truth.end_s / 2)
    segs += d.drain_power(2.0)
    assert segs[0].start_s == 0.1 and segs[-1].end_s == 2.0
    for a, b in itertools.pairwise(segs):
        assert a.end_s == pytest.approx(b.start_s, abs=1e-12)
    assert energy_between(segs, truth.start_s, truth.end_s) == pytest.approx(truth.energy_j)


def test_counters_continue_across_runs() -> None:
    d = device(trace_level=TraceLevel.TOKENS)
    first = [f.message for f in run_all(d, Run(1, 1, 0.0, 3, PROMPT), 0.1)
             if isinstance(f.message, CounterValue)]
    second = [f.message for f in run_all(d, Run(2, 1, 0.0, 3, PROMPT), 1.5)
              if isinstance(f.message, CounterValue)]
    assert [c.value * 2 for c in first] == pytest.approx([c.value for c in second], rel=0.01)


def test_real_stories260k(stories260k) -> None:  # type: ignore[no-untyped-def]
    from tinytelem.models.llama2c import load_checkpoint
    from tinytelem.models.reference import generate

    m = load_checkpoint(stories260k)
    d = TwinDevice(platform(), m)
    prompt = (1, 403, 407, 261, 378)  # BOS and four tok512 ids
    d.receive(Run(1, 1, 0.0, 30, prompt), 0.0)
    d.advance(math.inf)
    ref = generate(m, prompt, len(prompt) + 29)
    assert list(d.truths[1].token_ids[len(prompt):]) == ref[len(prompt):]


class _CountingEngine:
    def __init__(self, m: object) -> None:
        from tinytelem.models.reference import Transformer

        self.inner = Transformer(m)  # type: ignore[arg-type]
        _CountingEngine.calls = 0

    calls = 0

    def forward(self, token: int, pos: int) -> object:
        _CountingEngine.calls += 1
        return self.inner.forward(token, pos)


def test_a_long_run_streams_instead_of_planning_first() -> None:
    """Tokens are computed as time needs them: the first frames are out while most of the
    run is not computed yet, and the layout equals the one of a run computed all at once."""
    run = Run(1, 0, 0.0, 500, PROMPT)
    whole = TwinDevice(platform("esp32s3"), model(), weight_bits=32)
    whole.receive(run, 0.0)
    whole.advance(math.inf)
    truth = whole.truths[1]
    streamed = TwinDevice(platform("esp32s3"), model(), weight_bits=32,
                          engine_factory=_CountingEngine)
    streamed.receive(run, 0.0)
    t = truth.token_end_s[4]  # a few tokens in, whatever the platform's predicted speed
    streamed.advance(t)
    early = streamed.pop_due(t)
    assert sum(isinstance(f.message, Token) for f in early) >= 3
    # Forward passes so far: what covers t plus the look-ahead, not the whole run.
    needed = sum(1 for e in truth.token_end_s if e < t + LOOKAHEAD_S) + 1
    assert _CountingEngine.calls <= needed < len(truth.token_ids) // 2
    assert not any(isinstance(f.message, InferEnd) for f in early) and streamed.busy
    assert all(f.time_s <= t for f in early)
    streamed.advance(math.inf)
    rest = streamed.pop_due(100.0)
    assert [(f.time_s, f.message) for f in early + rest] == \
        [(f.time_s, f.message) for f in whole.pop_due(100.0)]
    assert streamed.truths[1] == truth


def test_stop_while_the_run_is_still_being_computed() -> None:
    d = device()
    d.receive(Run(3, 1, 0.0, 300, PROMPT), 0.0)
    d.advance(0.02)
    early = d.pop_due(0.02)
    d.receive(Stop(), 0.02)
    d.advance(math.inf)  # nothing left to compute
    rest = d.pop_due(5.0)
    end = next(f.message for f in rest if isinstance(f.message, InferEnd))
    truth = d.truths[3]
    assert end.status == InferStatus.STOPPED and truth.end_s == 0.02
    n_tokens = sum(isinstance(f.message, Token) for f in early + rest)
    assert n_tokens == len(truth.token_ids) and not d.busy
    assert energy_between(d.drain_power(5.0), 0.0, 0.02) == pytest.approx(truth.energy_j)
