"""Hypothesis strategies for wire protocol v1 messages (shared by the protocol tests)."""

from __future__ import annotations

import struct

from hypothesis import strategies as st

from tinytelem.protocol.commands import Config, Ping, Run, Stop
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
    SpanBatch,
    SpanBegin,
    SpanEnd,
    SpanRecord,
    Token,
)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, (1 << 64) - 1)


def _short_text(max_bytes: int) -> st.SearchStrategy[str]:
    return st.text(max_size=max_bytes // 4)


# f32-exact, finite, non-negative temperatures so a round trip compares equal.
f32 = st.floats(0.0, 4.0, width=32).map(lambda x: struct.unpack("<f", struct.pack("<f", x))[0])

MESSAGES: dict[str, st.SearchStrategy[AnyMessage]] = {
    "HELLO": st.builds(
        Hello,
        u32,
        st.integers(1, 0xFFFFFFFF),
        u32,
        u32,
        u32,
        u32,
        st.binary(min_size=32, max_size=32),
        _short_text(255),
        _short_text(255),
        _short_text(255),
    ),
    "INFER_BEGIN": st.builds(InferBegin, u32, u16, u16),
    "INFER_END": st.builds(InferEnd, u32, u16, u8),
    "TOKEN": st.builds(Token, u32, u32, u8),
    "SPAN_BEGIN": st.builds(SpanBegin, u16, u8),
    "SPAN_END": st.builds(SpanEnd, u16, u8),
    "SPAN_BATCH": st.builds(
        SpanBatch,
        u16,
        st.lists(st.builds(SpanRecord, st.booleans(), u16, st.integers(0, 63), u32),
                 max_size=120).map(tuple),
    ),
    "MEMORY": st.builds(Memory, u32, u32, u32, u32, u32),
    "COUNTER": st.builds(CounterValue, u16, u64),
    "MARKER": st.builds(Marker, u16, u32),
    "LOG": st.builds(Log, u8, st.text(max_size=250)),
    "ERROR": st.builds(DeviceError, u16, st.text(max_size=250)),
    "HEARTBEAT": st.builds(Heartbeat, u32, u32),
    "PONG": st.builds(Pong, u32),
    "PING": st.builds(Ping, u32),
    "RUN": st.builds(Run, u32, u32, f32, u16, st.lists(u32, max_size=252).map(tuple)),
    "STOP": st.just(Stop()),
    "CONFIG": st.builds(Config, u8),
}

any_message: st.SearchStrategy[AnyMessage] = st.one_of(*MESSAGES.values())
frames = st.tuples(any_message, u16, u32)


def expanded(message: AnyMessage, seq: int, ticks: int) -> list[tuple[int, int, AnyMessage]]:
    """(seq, ticks, message) of the events a (span-expanding) decoder gives for one frame."""
    if isinstance(message, SpanBatch):
        return [(seq, t, m) for t, m in message.spans(ticks)]
    return [(seq, ticks, message)]
