"""Client -> server messages of ``tinytelem.stream/1``: decoded maps -> validated requests.

Everything a client sends is untrusted: values are checked for type, range and size here, in
one place, so the streamer only ever applies a well-formed request. A bad one raises
:class:`~tinytelem.errors.ProtocolError` naming the key and what is allowed; the streamer sends
that text back as an ``error`` message and keeps the connection (and the session) going.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tinytelem.errors import ProtocolError

__all__ = [
    "MAX_CLIENT_MESSAGE_BYTES",
    "SPAN_MODES",
    "RawRequest",
    "Subscribe",
    "parse_client_message",
]


MAX_CLIENT_MESSAGE_BYTES = 4096
"""Largest client message the server reads; a bigger one closes that connection (1009)."""

LEVEL_NAME_MAX = 16
RATE_HZ_RANGE = (0.1, 100.0)
RAW_SECONDS_MAX = 3600.0
SPAN_MODES = ("layers", "raw", "off")


@dataclass(frozen=True, slots=True)
class Subscribe:
    """A validated ``subscribe`` request; ``None`` leaves that setting as it was."""

    level: str | None = None
    rate_hz: float | None = None
    raw: bool | None = None
    events: bool | None = None
    spans: str | None = None


@dataclass(frozen=True, slots=True)
class RawRequest:
    """A validated ``raw_request``: the newest ``seconds`` of raw samples."""

    seconds: float


def _number(m: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    if key not in m:
        return None
    value = m[key]
    # bool is an int subclass: {"rate_hz": true} is a mistake, not 1 Hz.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"{key} must be a number, got {type(value).__name__}")
    if isinstance(value, int) and abs(value) > 1 << 53:
        raise ProtocolError(f"{key} must be within {lo:g} .. {hi:g}, got an integer of "
                            f"{len(str(abs(value)))} digits")
    number = float(value)
    if not math.isfinite(number):
        raise ProtocolError(f"{key} must be a finite number within {lo:g} .. {hi:g}")
    if not lo <= number <= hi:
        raise ProtocolError(f"{key} must be within {lo:g} .. {hi:g}, got {number:g}")
    return number


def _flag(m: dict[str, Any], key: str) -> bool | None:
    if key not in m:
        return None
    value = m[key]
    if not isinstance(value, bool):
        raise ProtocolError(f"{key} must be true or false, got {type(value).__name__}")
    return value


def _choice(m: dict[str, Any], key: str, allowed: tuple[str, ...] | None) -> str | None:
    if key not in m:
        return None
    value = m[key]
    if not isinstance(value, str) or len(value) > LEVEL_NAME_MAX:
        raise ProtocolError(f"{key} must be a short string, got {type(value).__name__}")
    if allowed is not None and value not in allowed:
        raise ProtocolError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def parse_client_message(m: dict[str, Any]) -> Subscribe | RawRequest:
    """A decoded client message -> a validated request (unknown keys are ignored).

    Raises:
        ProtocolError: an unknown type, or a value of the wrong type or out of range; the
            text names the key and what is allowed (the server sends it back as ``error``).
    """
    kind = m.get("type")
    if kind == "subscribe":
        return Subscribe(
            level=_choice(m, "level", None), rate_hz=_number(m, "rate_hz", *RATE_HZ_RANGE),
            raw=_flag(m, "raw"), events=_flag(m, "events"),
            spans=_choice(m, "spans", SPAN_MODES),
        )
    if kind == "raw_request":
        seconds = _number(m, "seconds", 0.0, RAW_SECONDS_MAX)
        return RawRequest(0.1 if seconds is None else seconds)
    shown = kind if isinstance(kind, str) and len(kind) <= 32 else type(kind).__name__
    raise ProtocolError(f"unknown client message type {shown!r}; send 'subscribe' or "
                        "'raw_request'")
