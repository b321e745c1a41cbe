"""``tinytelem.client``: the live-stream client API (a re-export of :mod:`tinytelem.live.client`
and the typed messages of :mod:`tinytelem.live.schema`)."""

from __future__ import annotations

from tinytelem.live.client import LiveStream, StreamRefused, connect
from tinytelem.live.schema import (
    ByeMessage,
    DeviceInfo,
    DroppedMessage,
    ErrorMessage,
    HelloMessage,
    LayersMessage,
    LinkMessage,
    LogMessage,
    MemoryMessage,
    PowerGapMessage,
    RawPowerMessage,
    RunMessage,
    SpanMessage,
    StatsMessage,
    StreamMessage,
    SummaryMessage,
    TokenMessage,
    UnknownMessage,
)
from tinytelem.live.security import client_ssl_context

__all__ = [
    "ByeMessage",
    "DeviceInfo",
    "DroppedMessage",
    "ErrorMessage",
    "HelloMessage",
    "LayersMessage",
    "LinkMessage",
    "LiveStream",
    "LogMessage",
    "MemoryMessage",
    "PowerGapMessage",
    "RawPowerMessage",
    "RunMessage",
    "SpanMessage",
    "StatsMessage",
    "StreamMessage",
    "StreamRefused",
    "SummaryMessage",
    "TokenMessage",
    "UnknownMessage",
    "client_ssl_context",
    "connect",
]
