"""Supervisor: starts the actor graph for one device (and one sensor) and runs a session.

::

    link ──RawChunk/LinkStatus──> decoder ──┐
                                            ├──Record──> hub ──lossless──> recorder (HDF5)
    power sensor ──PowerBlock/PowerGap──────┘         │  └──lossless──> session (this module)
                                                      └──drop-oldest──> live views

Shutdown is ordered so that nothing in flight is lost: the sources (link, sensor) are cancelled
first; closing their channels ends the decoder, then the hub, then the recorder, which writes
its last rows and flushes.
"""

from __future__ import annotations

import math
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

from tinytelem.actors.decoder import DecoderActor, DecoderActorStatistics
from tinytelem.actors.hub import Hub
from tinytelem.actors.link import LinkActor, LinkStatistics, RawChunk
from tinytelem.actors.recorder import RecorderActor, RecorderStatistics, TraceRecorder
from tinytelem.errors import LinkBroken, LinkClosed, LinkError, TinyTelemError, first_error
from tinytelem.power.source import PowerSource
from tinytelem.protocol.messages import (
    Config,
    Hello,
    InferBegin,
    InferEnd,
    Memory,
    Ping,
    Run,
    SpanBegin,
    SpanEnd,
    Stop,
    Token,
    TraceLevel,
)
from tinytelem.records import DeviceRecord, LinkStatus, Record, RecordBatch

LINK_CHANNEL = 256
HUB_CHANNEL = 1024
RECORDER_BUFFER = 8192
SESSION_BUFFER = 8192


class RunTimeout(LinkError):
    """A run's INFER_END did not arrive within the session's run timeout.

    ``outcome`` is the session's outcome up to then (the trace holds what arrived)."""

    outcome: SessionOutcome | None = None


@dataclass
class RunRequest:
    """What the session asks the device to do."""

    prompt: list[int]
    n_tokens: int
    seed: int = 42
    temperature: float = 0.0
    trace_level: TraceLevel = TraceLevel.SPANS
    run_id: int = 1


@dataclass
class RunSchedule:
    """Runs one after another (``record --repeat``): each request keeps its own run_id.

    ``requests`` may be endless (a generator); a run starts ``interval_s`` after the previous
    one started, or as soon as it ended when it took longer.
    """

    requests: Iterable[RunRequest]
    interval_s: float = 0.0


@dataclass
class SessionOutcome:
    """What happened, for the CLI and the summary."""

    hello: Hello | None = None
    run_status: int | None = None
    run_begin_host_s: float | None = None
    run_end_host_s: float | None = None
    token_ids: list[int] = field(default_factory=list)
    n_prompt_tokens: int = 0
    link_outages: int = 0
    stopped_early: bool = False
    run_end_lost: bool = False
    """The run's INFER_END was sent while the link was down."""
    runs_done: int = 0
    """Runs that ended (with a schedule, several; the fields above describe the last)."""
    link: LinkStatistics | None = None
    decoder: DecoderActorStatistics | None = None
    recorder: RecorderStatistics | None = None
    hub: Any = None
    power: Any = None


class _SessionState:
    """Follows the device's frames as the session subscriber sees them."""

    def __init__(self, outcome: SessionOutcome, run_id: int) -> None:
        self.outcome = outcome
        self.hello = trio.Event()
        self.token_seen = 0
        self.timed_out: RunTimeout | None = None
        self.changed = trio.Event()
        self.begin(run_id)

    def begin(self, run_id: int) -> None:
        """Follow run ``run_id`` from now on (the next run of a schedule)."""
        self.run_id = run_id
        self.run_begun = trio.Event()
        self.run_ended = trio.Event()
        self.outage_in_run = False
        self.outcome.token_ids = []
        self.outcome.n_prompt_tokens = 0
        self.outcome.run_status = None
        self.outcome.run_begin_host_s = self.outcome.run_end_host_s = None

    async def follow(self, receive: trio.MemoryReceiveChannel[RecordBatch]) -> None:
        async with receive:
            async for batch in receive:
                for record in batch:
                    self._handle(record)

    def _handle(self, record: Record) -> None:
        if isinstance(record, LinkStatus):
            if not record.up:
                self.outcome.link_outages += 1
                if self.run_begun.is_set() and not self.run_ended.is_set():
                    self.outage_in_run = True
            self._changed()
            return
        if not isinstance(record, DeviceRecord):
            return
        m = record.message
        if isinstance(m, Hello):
            self.outcome.hello = m
            self.hello.set()
        elif isinstance(m, InferBegin) and m.run_id == self.run_id:
            self.outcome.run_begin_host_s = record.host_s
            self.run_begun.set()
            self._changed()
        elif isinstance(m, Token) and self.run_begun.is_set() and not self.run_ended.is_set():
            if m.phase == 0:
                self.outcome.n_prompt_tokens += 1
            else:
                self.outcome.token_ids.append(m.token_id)
            self.token_seen += 1
            self._changed()
        elif isinstance(m, SpanBegin | SpanEnd | Memory):
            self._changed()
        elif isinstance(m, InferEnd) and m.run_id == self.run_id:
            self.outcome.run_status = m.status
            self.outcome.run_end_host_s = record.host_s
            self.run_ended.set()
            self._changed()

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


Connector = Callable[[], Awaitable[trio.abc.Stream]]
ExtraActor = Callable[..., Awaitable[None]]
"""``async def actor(hub, task_status)``: a consumer of the hub started with the graph."""


class Supervisor:
    """Owns the nursery of one recording: link, decoder, sensor, hub, recorder."""

    def __init__(
        self,
        url: str,
        connect: Connector,
        recorder: TraceRecorder,
        *,
        power: PowerSource | None = None,
        raw: Any = None,
        reconnect: bool = True,
        ping_interval_s: float = 0.25,
        hello_timeout_s: float = 5.0,
        tail_s: float = 0.1,
        extra_actors: Sequence[ExtraActor] = (),
        outage_grace_s: float = 2.0,
    ) -> None:
        self.url = url
        self.link = LinkActor(url, connect, raw=raw, reconnect=reconnect)
        self.decoder = DecoderActor()
        self.hub = Hub()
        self.recorder = RecorderActor(recorder)
        self.power = power
        self.ping_interval_s = ping_interval_s
        self.hello_timeout_s = hello_timeout_s
        self.tail_s = tail_s
        self.extra_actors = tuple(extra_actors)
        """Started in the sinks nursery once the hub exists (e.g. the websocket streamer);
        each must call ``task_status.started()`` and return when the hub's subscriptions end."""
        self.outage_grace_s = outage_grace_s
        """After an outage mid-run, how long a quiet run may stay quiet before its end is
        taken as lost with the outage."""
        """How long to keep recording after the run: sensors that lag real time catch up."""

    async def _ping(self) -> None:
        nonce = secrets.randbelow(0xFFFFFFFF) + 1
        # Register before sending: the PONG can arrive before send_message returns.
        self.decoder.note_ping_sent(nonce, time.monotonic())
        sent = await self.link.send_message(Ping(nonce))
        self.decoder.note_ping_sent(nonce, sent)

    async def _pinger(self) -> None:
        """PING periodically: liveness, and the clock-alignment points of the device clock.

        Returns once the link actor has stopped: when the sources are cancelled, this task can
        wake from its sleep after the link's ``finally`` already ran, before its own cancel.
        """
        while True:
            try:
                await self._ping()
            except LinkClosed:
                return
            except LinkBroken:
                try:
                    await self.link.wait_connected()
                except LinkClosed:
                    return
                continue
            await trio.sleep(self.ping_interval_s)

    async def record(
        self,
        request: RunRequest | RunSchedule | None,
        *,
        duration_s: float | None = None,
        max_tokens: int | None = None,
        stop: trio.Event | None = None,
        run_timeout_s: float = 120.0,
        on_token: Callable[[int], None] | None = None,
        on_run_end: Callable[[SessionOutcome], None] | None = None,
    ) -> SessionOutcome:
        """Record; with ``request``, drive one inference and stop after its INFER_END; with a
        :class:`RunSchedule`, drive its runs one after another and stop after the last.

        Without a request it records what the device does until ``stop`` is set, ``duration_s``
        passes or ``max_tokens`` tokens were seen. ``on_run_end`` sees the outcome after each
        run's INFER_END (its fields describe that run).
        """
        try:
            return await self._record(request, duration_s, max_tokens, stop, run_timeout_s,
                                      on_token, on_run_end)
        except BaseExceptionGroup as group:
            found = first_error(group)
            if found is None:
                raise
            raise found from group

    async def _record(
        self,
        request: RunRequest | RunSchedule | None,
        duration_s: float | None,
        max_tokens: int | None,
        stop: trio.Event | None,
        run_timeout_s: float,
        on_token: Callable[[int], None] | None,
        on_run_end: Callable[[SessionOutcome], None] | None,
    ) -> SessionOutcome:
        outcome = SessionOutcome()
        state = _SessionState(outcome, -1)
        async with trio.open_nursery() as sinks:
            link_send, link_recv = trio.open_memory_channel[RawChunk | LinkStatus](LINK_CHANNEL)
            hub_send, hub_recv = trio.open_memory_channel[Record | RecordBatch](HUB_CHANNEL)
            recorder_recv = self.hub.subscribe_lossless("recorder", RECORDER_BUFFER)
            session_recv = self.hub.subscribe_lossless("session", SESSION_BUFFER)
            await sinks.start(self.recorder.run, recorder_recv)
            sinks.start_soon(state.follow, session_recv)
            await sinks.start(self.hub.run, hub_recv)
            for actor in self.extra_actors:
                await sinks.start(actor, self.hub)
            await sinks.start(self.decoder.run, link_recv, hub_send.clone())
            async with trio.open_nursery() as sources:
                if self.power is not None:
                    await sources.start(self.power.run, hub_send.clone())
                hub_send.close()
                await sources.start(self.link.run, link_send)
                sources.start_soon(self._pinger)
                try:
                    await self._drive(state, request, duration_s, max_tokens, stop,
                                      run_timeout_s, on_token, on_run_end)
                    await trio.sleep(self.tail_s)
                finally:
                    # Last alignment points after the run, then stop the sources.
                    with trio.move_on_after(0.3) as cs:
                        cs.shield = True
                        for _ in range(3):
                            try:
                                await self._ping()
                            except LinkError:
                                break
                            await trio.sleep(0.05)
                    sources.cancel_scope.cancel()
        outcome.link = self.link.statistics()
        outcome.decoder = self.decoder.statistics()
        outcome.recorder = self.recorder.statistics()
        outcome.hub = self.hub.statistics()
        outcome.power = self.power.statistics() if self.power is not None else None
        if state.timed_out is not None:
            # Raised only now: the session ended the way a finished one does (STOP sent, the
            # sinks drained what arrived into the trace) before the error reaches the caller.
            state.timed_out.outcome = outcome
            raise state.timed_out
        return outcome

    async def _send_retrying(self, message: Any) -> None:
        while True:
            try:
                await self.link.send_message(message)
                return
            except LinkBroken:
                await self.link.wait_connected()

    async def _drive(
        self,
        state: _SessionState,
        request: RunRequest | RunSchedule | None,
        duration_s: float | None,
        max_tokens: int | None,
        stop: trio.Event | None,
        run_timeout_s: float,
        on_token: Callable[[int], None] | None,
        on_run_end: Callable[[SessionOutcome], None] | None,
    ) -> None:
        with trio.move_on_after(self.hello_timeout_s) as cs:
            await state.hello.wait()
        if cs.cancelled_caught:
            # A device may already be running: ask for HELLO (CONFIG is answered with it).
            level = (request.trace_level if isinstance(request, RunRequest)
                     else TraceLevel.SPANS)
            await self._send_retrying(Config(int(level)))
            with trio.move_on_after(self.hello_timeout_s):
                await state.hello.wait()
            if not state.hello.is_set():
                raise LinkError(
                    f"no HELLO from {self.url} within {2 * self.hello_timeout_s:.0f} s — is the "
                    "firmware running, and are both sides at the same baud rate?"
                )
        deadline = math.inf if duration_s is None else trio.current_time() + duration_s
        async with trio.open_nursery() as waiters:
            if stop is not None:
                async def _stop_waiter() -> None:
                    await stop.wait()
                    waiters.cancel_scope.cancel()

                waiters.start_soon(_stop_waiter)
            with trio.move_on_at(deadline):
                if request is not None:
                    await self._run_all(state, request, max_tokens, run_timeout_s, on_token,
                                        on_run_end)
                else:
                    await self._follow_tokens(state, max_tokens, on_token, until_end=False)
            waiters.cancel_scope.cancel()
        if request is not None and not state.run_ended.is_set() and not state.outcome.run_end_lost:
            state.outcome.stopped_early = True
            with trio.move_on_after(2.0):
                try:
                    await self.link.send_message(Stop())
                    await state.run_ended.wait()
                except LinkError:
                    pass

    async def _run_all(
        self,
        state: _SessionState,
        request: RunRequest | RunSchedule,
        max_tokens: int | None,
        run_timeout_s: float,
        on_token: Callable[[int], None] | None,
        on_run_end: Callable[[SessionOutcome], None] | None,
    ) -> None:
        """One run, or a schedule's runs in turn (until it ends, max_tokens or a lost end)."""
        schedule = request if isinstance(request, RunSchedule) else RunSchedule((request,))
        configured = False
        next_start = trio.current_time()
        for run in schedule.requests:
            await trio.sleep_until(next_start)
            if not configured:
                await self._send_retrying(Config(int(run.trace_level)))
                # A few quick round trips before the run anchor the clock fit.
                for _ in range(3):
                    await self._ping()
                    await trio.sleep(0.02)
                configured = True
            next_start = trio.current_time() + schedule.interval_s
            state.begin(run.run_id)
            await self._send_retrying(
                Run(run.run_id, run.seed, run.temperature, run.n_tokens, tuple(run.prompt)))
            with trio.move_on_after(run_timeout_s) as waited:
                await self._follow_tokens(state, max_tokens, on_token, until_end=True)
            if waited.cancelled_caught:
                state.timed_out = RunTimeout(
                    f"run {run.run_id} did not end within {run_timeout_s:g} s of its RUN "
                    f"({state.token_seen} tokens seen): the device stopped sending or its "
                    f"INFER_END was lost; what arrived is recorded. Give a slow device more "
                    f"time with --run-timeout")
                return  # _drive stops the device; _record raises once the trace has it all
            if not state.run_ended.is_set():
                return  # max_tokens, or the end was lost with the link
            state.outcome.runs_done += 1
            if on_run_end is not None:
                on_run_end(state.outcome)

    async def _follow_tokens(
        self,
        state: _SessionState,
        max_tokens: int | None,
        on_token: Callable[[int], None] | None,
        until_end: bool,
    ) -> None:
        reported = 0
        while not (until_end and state.run_ended.is_set()):
            if max_tokens is not None and state.token_seen >= max_tokens:
                break
            with trio.move_on_after(self.outage_grace_s) as quiet:
                await state.changed.wait()
            if quiet.cancelled_caught and state.outage_in_run and self.link.connected:
                # The link is back but the run has gone quiet: its end was sent while the link
                # was down. Stop waiting; the summary says the end was not seen.
                state.outcome.run_end_lost = True
                break
            if on_token is not None and state.token_seen != reported:
                reported = state.token_seen
                on_token(reported)


__all__ = ["RunRequest", "RunSchedule", "RunTimeout", "SessionOutcome", "Supervisor",
           "TinyTelemError"]
