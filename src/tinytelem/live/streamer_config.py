"""Configuration and statistics records of the websocket streamer (:mod:`.streamer`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tinytelem.live.connection import ClientStatistics
from tinytelem.live.security import ListenAddress
from tinytelem.power.summaries import DEFAULT_LEVELS_S

__all__ = ["StreamerConfig", "StreamerStatistics"]


@dataclass
class StreamerConfig:
    """How the streamer listens and how much it buffers."""

    listen: ListenAddress
    token: str | None = None
    ssl_context: Any = None
    """``ssl.SSLContext`` for wss (see :func:`tinytelem.live.security.server_ssl_context`)."""
    client_queue: int = 65536
    """Droppable messages (spans, raw power) that may wait for one client before its oldest
    are dropped..."""
    client_bytes: int = 8 << 20
    """...and their (estimated) bytes (see :mod:`tinytelem.live.mailbox`)."""
    kept_queue: int = 65536
    """Kept messages (tokens, runs, memory, errors, summaries...) that may wait for one client;
    only a client this far behind loses them."""
    hub_queue: int = 16384
    """The streamer's own hub mailbox for spans (records); other records get 4x this."""
    stats_interval_s: float = 1.0
    levels_s: tuple[float, ...] = DEFAULT_LEVELS_S
    default_level: str = "100ms"
    default_rate_hz: float = 5.0
    ring_seconds: float = 2.0
    """Raw samples kept for ``raw_request``."""
    close_grace_s: float = 5.0
    """At the end, clients receive what is queued and the ``bye``: one that takes nothing for
    this long is not waited for."""
    close_max_s: float = 120.0
    """...and no client is waited for longer than this."""
    session: Mapping[str, Any] = field(default_factory=dict)
    """Facts for the hello message (device URL, platform, prompt...). Never secrets."""
    on_listening: Callable[[str], None] | None = None
    """Called with the actual URL once the server listens (port 0 resolved)."""


@dataclass(frozen=True, slots=True)
class StreamerStatistics:
    """Counters of the streamer (immutable snapshot)."""

    records_in: int
    server_dropped: int
    """Records the streamer missed (its hub mailbox overflowed): spans, unless
    ``server_dropped_kept`` says otherwise."""
    messages: int
    """Messages the pump offered (each counted once, however many clients took it)."""
    clients_total: int
    clients_connected: int
    rejected: int
    max_offer_s: float
    """Longest time the pump spent per record (averaged over one batch) handing records to
    every client (it never awaits them)."""
    clients: tuple[ClientStatistics, ...]
    server_dropped_kept: int = 0
    """Of ``server_dropped``, records of the kept classes (should be 0)."""
    closed_for_errors: int = 0
    """Client connections that ended with an unexpected error (logged; the session went on)."""
    offered_by_type: dict[str, int] = field(default_factory=dict)
    """Messages the pump offered per message type (summaries are per client, not counted)."""
