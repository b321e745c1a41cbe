"""In-memory links for tests: two connected streams with the same error types as real links.

Built on :func:`trio.testing.memory_stream_pair` (buffered), not the lockstep variant: a
buffered pair lets a single task send and then receive, which is how most actor tests are
written. The buffer is unbounded, so ``send_all`` never blocks; tests that need backpressure
should use ``trio.testing.lockstep_stream_pair`` directly.
"""

from __future__ import annotations

import trio.testing

from tinytelem.transports.base import HalfCloseableLinkStream

__all__ = ["memory_link_pair"]


def memory_link_pair(
    name: str = "memory",
) -> tuple[HalfCloseableLinkStream, HalfCloseableLinkStream]:
    """Two connected, half-closeable link streams (``name:a`` and ``name:b``).

    Bytes sent on one come out of the other. Closing one side makes the other side's
    ``receive_some`` return ``b""`` and its ``send_all`` raise
    :class:`~tinytelem.errors.LinkBroken`, like a real peer going away.
    """
    left, right = trio.testing.memory_stream_pair()
    return (
        HalfCloseableLinkStream(left, name=f"{name}:a", remedy="the other end was closed"),
        HalfCloseableLinkStream(right, name=f"{name}:b", remedy="the other end was closed"),
    )
