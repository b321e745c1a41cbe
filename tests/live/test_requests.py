"""Client messages are untrusted: any payload is applied within range or answered with an error.

The fuzz rule of the frame decoder, for the streamer's client-message handler: whatever bytes or
text a client sends, the handler either applies a valid request or queues an ``error`` for that
client -- never another exception, never a setting out of range.
"""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import msgpack
import numpy as np
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinytelem.errors import ProtocolError
from tinytelem.live.connection import ClientConnection
from tinytelem.live.requests import (
    SPAN_MODES,
    RawRequest,
    Subscribe,
    parse_client_message,
)
from tinytelem.live.schema import decode
from tinytelem.live.security import parse_listen
from tinytelem.live.streamer import Streamer, StreamerConfig
from tinytelem.records import PowerBlock


def _streamer() -> tuple[Streamer, ClientConnection]:
    streamer = Streamer(StreamerConfig(parse_listen("ws://127.0.0.1:0")))
    client = ClientConnection(None, "json", "fuzz", 1024, 65536, 2, 5.0)
    streamer._clients.append(client)
    return streamer, client


def test_valid_requests_parse() -> None:
    assert parse_client_message({"type": "subscribe", "level": "1ms", "rate_hz": 100,
                                 "raw": True, "spans": "raw", "future_key": [1]}) == \
        Subscribe("1ms", 100.0, True, None, "raw")
    assert parse_client_message({"type": "raw_request"}) == RawRequest(0.1)
    assert parse_client_message({"type": "raw_request", "seconds": 2}) == RawRequest(2.0)


@pytest.mark.parametrize(("message", "words"), [
    ({"type": "subscribe", "rate_hz": 10**400}, "integer of 401 digits"),
    ({"type": "subscribe", "rate_hz": math.nan}, "finite"),
    ({"type": "subscribe", "rate_hz": -math.inf}, "finite"),
    ({"type": "subscribe", "rate_hz": 1000}, "within 0.1 .. 100"),
    ({"type": "subscribe", "rate_hz": True}, "must be a number, got bool"),
    ({"type": "subscribe", "raw": "false"}, "raw must be true or false"),
    ({"type": "subscribe", "level": "x" * 100}, "short string"),
    ({"type": "subscribe", "spans": "all"}, "spans must be one of layers, raw, off"),
    ({"type": "raw_request", "seconds": 1e400}, "finite"),
    ({"type": "raw_request", "seconds": "1"}, "must be a number"),
    ({"type": "unsubscribe"}, "unknown client message type 'unsubscribe'"),
    ({"type": "x" * 1000}, "unknown client message type 'str'"),
])
def test_bad_requests_name_the_key_and_the_rule(message: dict[str, Any], words: str) -> None:
    with pytest.raises(ProtocolError, match=words.replace(".", r"\.").replace("(", r"\(")):
        parse_client_message(message)


def test_deep_nesting_is_a_protocol_error() -> None:
    for payload in ("[" * 100_000 + "]" * 100_000, b"\x91" * 100_000 + b"\x00"):
        with pytest.raises(ProtocolError):
            decode(payload)


JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**300),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.sampled_from(["1ms", "10ms", "100ms", "1s", "3ms", "layers", "raw", "off"]),
)
VALUES = st.recursive(JSON_SCALARS, lambda kids: st.lists(kids, max_size=4)
                      | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=12)
KEYS = st.sampled_from(["type", "level", "rate_hz", "raw", "events", "spans", "seconds"])
MESSAGES = st.dictionaries(KEYS | st.text(max_size=8), VALUES, max_size=7) | st.builds(
    lambda kind, rest: {"type": kind, **rest},
    st.sampled_from(["subscribe", "raw_request", "bye", ""]),
    st.dictionaries(KEYS, VALUES, max_size=6),
)


def _encodings(message: dict[str, Any]) -> list[bytes | str]:
    out: list[bytes | str] = []
    # JSON keeps NaN/Infinity as JavaScript literals, which Python's json reads: so must the
    # handler cope with them. msgpack cannot carry integers beyond 64 bits.
    with contextlib.suppress(ValueError, TypeError):
        out.append(json.dumps(message))
    with contextlib.suppress(OverflowError, TypeError, ValueError):
        out.append(msgpack.packb(message, use_bin_type=True))
    return out


def _check(streamer: Streamer, client: ClientConnection, payload: bytes | str) -> None:
    before = len(client.box)
    applied = streamer.handle_payload(client, payload)
    if applied:
        assert len(client.box) in (before, before + 1)  # a raw_request answer at most
    else:
        item = client.box.pop()
        while item is not None and item.map["type"] != "error":
            item = client.box.pop()
        assert item is not None and isinstance(item.map["text"], str) and item.map["text"]
    # Whatever happened, the client's settings are within their rules.
    assert 0.1 <= client.rate_hz <= 100.0 and math.isfinite(client.next_summary)
    assert 0 <= client.level < len(streamer.config.levels_s)
    assert client.spans in SPAN_MODES
    assert isinstance(client.raw, bool) and isinstance(client.events, bool)


async def test_fuzz_structured_client_messages() -> None:
    streamer, client = _streamer()
    # power, so raw_request has something to answer with
    streamer.feed(PowerBlock(0.0, 0, np.zeros(1000, np.float32), 3.3, 100_000.0))

    @settings(max_examples=400, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(MESSAGES)
    def run(message: dict[str, Any]) -> None:
        for payload in _encodings(message):
            _check(streamer, client, payload)

    run()
    await trio.lowlevel.checkpoint()


async def test_fuzz_arbitrary_bytes_and_text() -> None:
    streamer, client = _streamer()

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=300) | st.text(max_size=300))
    def run(payload: bytes | str) -> None:
        _check(streamer, client, payload)

    run()
    await trio.lowlevel.checkpoint()
