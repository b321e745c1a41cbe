"""The supervisor's background tasks end quietly when the link actor has stopped."""

from __future__ import annotations

import trio
import trio.testing

from tests.actors.helpers import MemorySink
from tinytelem.actors.link import RawChunk
from tinytelem.actors.recorder import TraceRecorder
from tinytelem.actors.supervisor import Supervisor
from tinytelem.records import LinkStatus


async def test_pinger_returns_once_the_link_actor_has_stopped() -> None:
    """At the end of a recording the pinger can wake after the link's ``finally`` ran; it must
    not turn that ordering into a "link actor has stopped" error that fails the recording."""
    host, _device = trio.testing.memory_stream_pair()

    async def connect() -> trio.abc.Stream:
        return host

    sup = Supervisor("mem://dev", connect, TraceRecorder(MemorySink()))
    send, recv = trio.open_memory_channel[RawChunk | LinkStatus](16)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.link.run, send)
        nursery.cancel_scope.cancel()
    assert not sup.link.connected
    with trio.fail_after(1):
        await sup._pinger()
    recv.close()
