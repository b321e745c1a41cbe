"""One device's share of a streamer: its converter, power summaries, raw ring and hub mailbox.

A streamer serves one device (``serve``, ``record --serve``) or every device of a lab session
(``record --session lab.toml --serve``) on one websocket server. Everything that belongs to one
device's records lives here, once per device; clients, their mailboxes and the listener are the
streamer's. In a lab every message of a feed carries its ``device_id`` (a key older clients
ignore); a single-device stream has no id and its messages are as they always were.
"""

from __future__ import annotations

import math
from typing import Any

from tinytelem.actors.hub import LiveSubscription
from tinytelem.live.convert import RecordConverter
from tinytelem.live.ring import PowerRing
from tinytelem.power.summaries import MultiLevelSummary

__all__ = ["Feed"]


class Feed:
    """The per-device state of a streamer (see module docstring)."""

    def __init__(self, device_id: str | None) -> None:
        self.device_id = device_id
        self.converter = RecordConverter()
        self.summary: MultiLevelSummary | None = None
        self.ring: PowerRing | None = None
        self.voltage_v = math.nan
        self.sample_rate_hz = math.nan
        self.sub: LiveSubscription | None = None
        self.server_dropped_told = (0, 0)
        self.finished = False

    def stamp(self, message: dict[str, Any]) -> dict[str, Any]:
        """``message`` with this feed's ``device_id`` (unchanged for a single-device stream)."""
        if self.device_id is not None:
            message["device_id"] = self.device_id
        return message

    @property
    def dropped(self) -> int:
        """Records this feed's hub mailbox dropped."""
        return self.sub.dropped if self.sub is not None else 0

    @property
    def kept_dropped(self) -> int:
        """Of :attr:`dropped`, records of the kept classes."""
        return self.sub.kept_dropped if self.sub is not None else 0
