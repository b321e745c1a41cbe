"""Watching a stream: subscribe, fold every message into a :class:`MonitorState`, show it.

A lab stream (``record --session ... --serve``) is folded per device. ``tinytelem monitor``
is this plus a choice of view (a live terminal table, plain status lines,
or nothing until the end for ``--json``).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Awaitable, Callable

import trio

from tinytelem.live.client import connect
from tinytelem.live.monitor import FleetMonitorState

__all__ = ["View", "watch_stream"]

View = Callable[[FleetMonitorState, float, trio.Event], Awaitable[None]]
"""Shows ``state`` (``t0`` is the watch's start on the monotonic clock) until ``stop`` is set."""


async def watch_stream(
    url: str,
    stop: trio.Event,
    view: View,
    *,
    token: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    reconnect: bool = True,
    level: str = "100ms",
    rate_hz: float = 5.0,
) -> tuple[FleetMonitorState, float]:
    """Follow the stream at ``url`` until it ends or ``stop`` is set.

    The view asks for no spans (tokens, runs, memory and summaries come regardless). Returns the
    final state and the seconds watched. The end of the stream sets ``stop``.
    """
    state = FleetMonitorState()  # one state per device of a lab stream
    t0 = time.monotonic()
    async with connect(url, token=token, ssl_context=ssl_context, reconnect=reconnect) as stream:
        await stream.subscribe(level=level, rate_hz=rate_hz, spans="off")

        async def consume() -> None:
            async for message in stream:
                state.update(message)
            stop.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await view(state, t0, stop)
            nursery.cancel_scope.cancel()
    return state, time.monotonic() - t0
