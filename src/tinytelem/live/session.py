"""``tinytelem serve``: run the actor graph on a device and stream it (optionally record too).

The same supervisor as ``profile`` and ``record``, with the websocket streamer added as an
extra actor. Without ``--out`` the recorder writes to :class:`NullSink` (the supervisor's
session logic still needs the recorder's view of HELLO and runs, and nothing is kept).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import trio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

from tinytelem import __version__
from tinytelem.errors import ConfigError, first_error
from tinytelem.live.security import (
    check_listen_security,
    parse_listen,
    resolve_token,
    server_ssl_context,
)
from tinytelem.live.streamer import Streamer, StreamerConfig, StreamerStatistics
from tinytelem.protocol.messages import TraceLevel

__all__ = [
    "NullSink", "ServeOptions", "ServeResult", "make_streamer", "run_unwrapped", "serve_device",
]


def run_unwrapped(fn: Callable[[], Awaitable[Any]]) -> Any:
    """``trio.run`` that raises the one TinyTelemError inside a nursery's exception group, so
    callers (and click's test runner) see "refused: HTTP 401", not "1 sub-exception"."""
    try:
        return trio.run(fn)
    except BaseExceptionGroup as group:
        found = first_error(group)
        if found is None:
            raise
        raise found from group


@dataclass
class ServeOptions:
    """Options of ``tinytelem serve`` (and what ``monitor --device`` uses)."""

    device: str
    listen: str = "ws://127.0.0.1:8765"
    token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    out: Path | None = None
    overwrite: bool = False
    run: bool = False
    prompt: str = "Once upon a time"
    n_tokens: int = 64
    model: Path | None = None
    tokenizer: Path | None = None
    seed: int = 42
    trace_level: TraceLevel = TraceLevel.SPANS
    duration_s: float | None = None
    sensor: Literal["sim", "none"] = "sim"
    sensor_rate_hz: float = 100_000.0
    client_queue: int = 65536
    faults: list[str] = field(default_factory=list)
    wait_clients: int = 0
    """Before recording (and before RUN), wait until this many clients have subscribed."""
    wait_timeout_s: float | None = None
    """Give up waiting for clients after this long (ConfigError); None waits until stopped."""


@dataclass
class ServeResult:
    """What a serve session did."""

    url: str
    streamer: StreamerStatistics
    outcome: Any
    trace: Path | None


class NullSink:
    """A trace sink that keeps nothing (serve without ``--out``)."""

    def add_events(self, rows: np.ndarray) -> None: ...
    def add_tokens(self, rows: np.ndarray) -> None: ...
    def add_spans(self, rows: np.ndarray) -> None: ...
    def add_memory(self, rows: np.ndarray) -> None: ...
    def add_pings(self, rows: np.ndarray) -> None: ...
    def add_runs(self, rows: np.ndarray) -> None: ...
    def add_power(self, first_index: int, current_a: np.ndarray, host_s: float) -> None: ...
    def add_power_gap(self, first_index: int, n_missing: int, host_s: float) -> None: ...
    def add_link_gap(self, lost_host_s: float, restored_host_s: float) -> None: ...
    def add_text(self, table: Any, host_s: float, device_s: float, code: int,
                 text: str) -> None: ...
    def set_attrs(self, group: str, attrs: dict[str, Any]) -> None: ...
    def flush(self) -> None: ...


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
    from tinytelem.actors.recorder import TraceRecorder
    from tinytelem.actors.supervisor import RunRequest, Supervisor
    from tinytelem.devices import TwinOptions, open_device
    from tinytelem.profiling import ProfileOptions, TwinSensor, store_session, tokenize_prompt

    streamer = make_streamer(
        options.listen, options.token, options.tls_cert, options.tls_key,
        client_queue=options.client_queue,
        session={"device": options.device, "prompt": options.prompt if options.run else "",
                 "tool": f"tinytelem {__version__}"},
        on_listening=on_listening,
    )
    if options.out is not None and options.out.exists() and not options.overwrite:
        raise ConfigError(f"{options.out} already exists; pass --overwrite or choose another")
    request = None
    if options.run:
        prompt, _ = tokenize_prompt(ProfileOptions(device=options.device, out_dir=Path("."),
                                             prompt=options.prompt, model=options.model,
                                             tokenizer=options.tokenizer))
        request = RunRequest(prompt=prompt, n_tokens=options.n_tokens, seed=options.seed,
                             trace_level=options.trace_level)
    is_emu = options.device.startswith("emu:")
    twin = TwinOptions(model=options.model, seed=options.seed, faults=tuple(options.faults))
    async with open_device(options.device, twin if is_emu else None) as handle, \
            trio.open_nursery() as listener:
        if options.wait_clients > 0:
            await listener.start(streamer.listen)
            await wait_for_clients(streamer, options, stop, on_waiting)
        power = None
        if options.sensor == "sim" and handle.power_url is not None:
            power = TwinSensor(handle.power_url, options.sensor_rate_hz, -40.0, options.seed)
        host_t0 = time.monotonic()
        writer: Any = None
        extensions: list[Any] = []
        if options.out is not None:
            from tinytelem.live.summaries import PowerSummaryRecorder, summary_tables
            from tinytelem.trace.writer import TraceWriter

            options.out.parent.mkdir(parents=True, exist_ok=True)
            writer = TraceWriter.create(options.out, overwrite=options.overwrite, attrs={
                "host_t0": host_t0, "device": handle.url, "link_url": handle.link_url,
                "platform": handle.platform or "", "sensor": "sim" if power else "none",
                "calibration_id": "none",
            }, extra_tables=summary_tables() if power else None)
            if power is not None:
                extensions.append(PowerSummaryRecorder(writer))
        recorder = TraceRecorder(writer if writer is not None else NullSink(), host_t0=host_t0,
                                 extensions=extensions)

        try:
            supervisor = Supervisor(handle.link_url, handle.connect, recorder, power=power,
                                    reconnect=handle.reconnect, extra_actors=[streamer.run],
                                    tail_s=0.3 if power is not None else 0.1)
            outcome = await supervisor.record(request, duration_s=options.duration_s, stop=stop,
                                              run_timeout_s=300.0)
            if writer is not None:
                store_session(writer, recorder, outcome, power)
        finally:
            if writer is not None:
                writer.close()
        listener.cancel_scope.cancel()
    if options.out is not None:
        from tinytelem.profiling import write_summary

        write_summary(options.out)
    return ServeResult(streamer.url or options.listen, streamer.statistics(), outcome,
                       options.out)

