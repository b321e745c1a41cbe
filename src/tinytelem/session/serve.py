"""``serve``: the recording graph with the websocket streamer riding along as an extra actor.

Without ``--out`` the recorder writes to :class:`~tinytelem.session.core.NullSink`: nothing is
kept, and the stream is the product.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from tinytelem import __version__
from tinytelem.errors import ConfigError
from tinytelem.live.security import (
    check_listen_security,
    parse_listen,
    resolve_token,
    server_ssl_context,
)
from tinytelem.live.streamer import Streamer, StreamerConfig, StreamerStatistics
from tinytelem.session.core import (
    SessionOutputs,
    check_sensor,
    resolve_sensor,
    run_request,
    run_session,
)
from tinytelem.session.options import ServeOptions

__all__ = ["ServeResult", "make_streamer", "serve_device", "wait_for_clients"]


@dataclass
class ServeResult:
    """What a serve session did."""

    url: str
    streamer: StreamerStatistics
    outcome: Any
    trace: Path | None


def make_streamer(
    listen: str,
    token: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    *,
    client_queue: int = 65536,
    session: dict[str, Any] | None = None,
    on_listening: Callable[[str], None] | None = None,
) -> Streamer:
    """Check the security rules and build a streamer (``--token`` falls back to the env)."""
    address = parse_listen(listen)
    token = resolve_token(token)
    check_listen_security(address, token, tls_cert, tls_key)
    ssl_context = (server_ssl_context(tls_cert, tls_key)
                   if tls_cert is not None and tls_key is not None else None)
    return Streamer(StreamerConfig(address, token=token, ssl_context=ssl_context,
                                   client_queue=client_queue, session=dict(session or {}),
                                   on_listening=on_listening))


async def wait_for_clients(
    streamer: Streamer, options: ServeOptions, stop: trio.Event,
    on_waiting: Callable[[int, int], None] | None,
) -> None:
    """Until ``options.wait_clients`` clients subscribed (or ``stop``); ConfigError on timeout."""
    with trio.move_on_after(options.wait_timeout_s or math.inf) as timeout:
        async with trio.open_nursery() as nursery:
            async def stopper() -> None:
                await stop.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(stopper)
            await streamer.wait_subscribed(options.wait_clients, on_waiting)
            nursery.cancel_scope.cancel()
    if timeout.cancelled_caught:
        raise ConfigError(
            f"{streamer.subscribed_clients()} of {options.wait_clients} client(s) subscribed to "
            f"{streamer.url} within {options.wait_timeout_s:g} s (--wait-timeout); start the "
            "clients sooner, lower --wait-clients or raise --wait-timeout. A client counts once "
            "it has sent a 'subscribe' message."
        )


async def serve_device(
    options: ServeOptions,
    stop: trio.Event,
    on_listening: Callable[[str], None] | None = None,
    on_waiting: Callable[[int, int], None] | None = None,
) -> ServeResult:
    """Open the device, start the graph with the streamer, stream until the session ends.

    With ``options.wait_clients`` the stream listens first and the recording (and RUN) starts
    only once that many clients have subscribed; ``on_waiting(connected, subscribed)`` reports
    progress.
    """
    options = dataclasses.replace(options, sensor=resolve_sensor(options.sensor, options.device))
    calibration = check_sensor(options)
    streamer = make_streamer(
        options.listen, options.token, options.tls_cert, options.tls_key,
        client_queue=options.client_queue,
        session={"device": options.device, "prompt": options.prompt if options.run else "",
                 "tool": f"tinytelem {__version__}"},
        on_listening=on_listening,
    )
    if options.out is not None and options.out.exists() and not options.overwrite:
        raise ConfigError(f"{options.out} already exists; pass --overwrite or choose another")
    request = run_request(options) if options.run else None
    async with trio.open_nursery() as listener:

        async def audience(handle: object) -> None:
            if options.wait_clients > 0:
                await listener.start(streamer.listen)
                await wait_for_clients(streamer, options, stop, on_waiting)

        outcome, _ = await run_session(
            options, SessionOutputs(options.out, overwrite=options.overwrite), request,
            stop=stop, duration_s=options.duration_s, extra_actors=[streamer.run],
            calibration=calibration, before_record=audience)
        listener.cancel_scope.cancel()
    return ServeResult(streamer.url or options.listen, streamer.statistics(), outcome,
                       options.out)
