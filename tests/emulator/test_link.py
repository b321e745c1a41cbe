"""The link budget: a UART's byte rate through the firmware's transmit ring, and what fits."""

from __future__ import annotations

import math

import pytest

from tinytelem.costing.model import CostModel
from tinytelem.emulator.link import DROPPABLE, TxRing, link_fit, parse_baud
from tinytelem.emulator.twin import TwinDevice
from tinytelem.errors import ConfigError
from tinytelem.protocol.messages import (
    Heartbeat,
    InferEnd,
    Memory,
    Run,
    SpanBatch,
    Token,
    TraceLevel,
)

from .helpers import model, platform

PROMPT = (1, 20, 30)


def test_ring_drains_at_the_byte_rate_and_drops_only_what_does_not_fit() -> None:
    ring = TxRing(115_200, capacity=100)  # 11 520 bytes/s
    assert ring.offer(0.0, 60) == pytest.approx(60 / 11_520)
    assert ring.queued(0.0) == pytest.approx(60)
    assert ring.offer(0.0, 50) is None  # 110 > 100: dropped, counted
    assert (ring.dropped_frames, ring.dropped_bytes) == (1, 50)
    assert ring.offer(0.0, 40) == pytest.approx(100 / 11_520)  # exactly fills it
    t = 50 / 11_520  # half drained
    assert ring.queued(t) == pytest.approx(50)
    assert ring.offer(t, 50) == pytest.approx(150 / 11_520)
    # A frame a session cannot do without waits behind a full ring instead of vanishing.
    assert ring.offer(t, 80, droppable=False) == pytest.approx(230 / 11_520)
    assert ring.sent_bytes == 230 and ring.sent_frames == 4
    assert ring.queued(1.0) == 0


@pytest.mark.parametrize(("text", "want"), [("115200", 115200), ("0", None), (None, None),
                                            ("free", None), (921600, 921600)])
def test_parse_baud(text: object, want: int | None) -> None:
    assert parse_baud(text) == want  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["fast", "-9600", "12"])
def test_parse_baud_refuses_nonsense(text: str) -> None:
    with pytest.raises(ConfigError, match="baud"):
        parse_baud(text)


def _cost(level: TraceLevel) -> CostModel:
    return CostModel(platform("stm32f4"), model().config, 4, level)


def test_link_fit_counts_a_decode_tokens_frames() -> None:
    spans = link_fit(_cost(TraceLevel.SPANS), 115_200, pos=4)
    tokens = link_fit(_cost(TraceLevel.TOKENS), 115_200, pos=4)
    # The token's span events leave as one SPAN_BATCH before its TOKEN; then MEMORY.
    assert spans.frames_per_token == 3
    assert tokens.frames_per_token == 2  # TOKEN and MEMORY
    # 5 layers x (LAYER + 7 ops) + classifier + sampling, begin and end each: a tag byte and a
    # tick delta at least, per span event.
    assert spans.bytes_per_token - tokens.bytes_per_token >= 2 * 2 * (5 * 8 + 2)
    assert not spans.fits and tokens.fits
    assert spans.baud_needed > 115_200 and spans.baud_needed >= spans.needed_bytes_s * 10
    assert tokens.token_s < spans.token_s  # span frames cost device time too


def _run_through(ring: TxRing | None, level: TraceLevel, n: int = 40) -> tuple[list, TwinDevice]:
    d = TwinDevice(platform("stm32f4"), model(), trace_level=level, weight_bits=4, link=ring)
    d.receive(Run(1, 5, 0.0, n, PROMPT), 0.25)
    d.advance(math.inf)
    end = d.plans[1].end_s
    frames = d.pop_due(end)  # made by the run's end; with a slow link some are still queued
    return frames + d.pop_due(end + 60.0), d


def test_twin_drops_span_frames_a_slow_link_cannot_carry() -> None:
    free, _ = _run_through(None, TraceLevel.SPANS)
    ring = TxRing(115_200)
    slow, dev = _run_through(ring, TraceLevel.SPANS)
    made = [f for f in free if not isinstance(f.message, Heartbeat)]
    got = [f for f in slow if not isinstance(f.message, Heartbeat)]
    assert dev.tx_dropped == ring.dropped_frames > 0
    assert len(made) - len(got) == dev.tx_dropped  # every frame either left or was counted
    assert all(f.message.TYPE in DROPPABLE for f in made if f.seq not in {g.seq for g in got})
    # Tokens and the run's end always arrive, with the ids the free link delivers.
    assert [f.message for f in got if isinstance(f.message, Token)] == \
        [f.message for f in made if isinstance(f.message, Token)]
    assert isinstance(got[-1].message, InferEnd)
    # The link ran flat out: what left while spans were made is the byte rate times that time,
    # plus at most the ring that was full at its start.
    first = next(f.time_s for f in got if isinstance(f.message, SpanBatch))
    last_span = max(f.time_s for f in got if isinstance(f.message, SpanBatch))
    sent = sum(len(f.encode()) for f in got if first <= f.time_s <= last_span)
    carried = 11_520 * (last_span - first)
    assert 0.9 * carried <= sent <= carried + ring.capacity * 1.1
    # Sequence numbers of dropped frames are spent: the host sees them as gaps.
    seqs = [f.seq for f in got]
    assert seqs == sorted(seqs) and seqs[-1] - seqs[0] + 1 == len(got) + dev.tx_dropped


def test_twin_at_tokens_level_drops_nothing_and_frames_keep_their_times() -> None:
    ring = TxRing(115_200)
    got, dev = _run_through(ring, TraceLevel.TOKENS)
    assert dev.tx_dropped == 0 and ring.dropped_frames == 0
    assert sum(isinstance(f.message, Token) for f in got) == len(PROMPT) + 40
    assert any(isinstance(f.message, Memory) for f in got)
    free, _ = _run_through(None, TraceLevel.TOKENS)
    assert [f.time_s for f in got] == [f.time_s for f in free]  # made at the same times
