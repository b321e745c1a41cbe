"""What every power source is to the rest of tinytelem: an actor that sends power records.

The simulated sensor, the twin's sensor and every hardware sensor (``sensors/``) implement
:class:`PowerSource`; the supervisor starts whichever one a session names.
"""

from __future__ import annotations

from typing import Any, Protocol

import trio

from tinytelem.records import Record

__all__ = ["PowerSource"]


class PowerSource(Protocol):
    """A power sensor actor: sends :class:`~tinytelem.records.PowerBlock` and
    :class:`~tinytelem.records.PowerGap` records until cancelled."""

    async def run(
        self,
        send: trio.MemorySendChannel[Record],
        task_status: trio.TaskStatus[None] = ...,
    ) -> None: ...

    def statistics(self) -> Any:
        """An immutable record of counters (samples, blocks, drops)."""
