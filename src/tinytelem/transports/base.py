"""The one place where transport errors become tinytelem errors.

Every transport (tcp, serial, subprocess, memory) hands its raw trio stream to
:class:`LinkStream`, which keeps trio's stream semantics (``receive_some`` returns ``b""`` on a
clean end of stream, every call is a checkpoint, concurrent use raises
:class:`trio.BusyResourceError`) and changes only the error types:

* using a stream after *we* closed it -> :class:`StreamClosed` (a :class:`LinkClosed`);
* the world broke it (peer reset, cable pulled, child died) -> :class:`StreamBroken` (a
  :class:`LinkBroken`), with the OS error in ``__cause__`` and the remedy in the message.

The two classes also derive from trio's own :class:`trio.ClosedResourceError` /
:class:`trio.BrokenResourceError`, so generic trio code (``trio.StapledStream``,
``trio.SSLStream``, ``trio.testing.check_two_way_stream``) keeps working on our streams while
tinytelem code can catch ``LinkError`` without knowing about trio.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio

from tinytelem.errors import LinkBroken, LinkClosed, LinkError

__all__ = ["HalfCloseableLinkStream", "LinkStream", "StreamBroken", "StreamClosed"]


class StreamClosed(LinkClosed, trio.ClosedResourceError):
    """A link stream was used after our own ``aclose`` (a bug in the caller)."""


class StreamBroken(LinkBroken, trio.BrokenResourceError):
    """A link stream was broken by the outside world; ``__cause__`` holds the OS error."""


def _root_cause(exc: BaseException) -> BaseException:
    """The OS-level error behind a trio error, so messages and ``__cause__`` say what happened."""
    cause = exc
    while cause.__cause__ is not None and isinstance(
        cause, (trio.BrokenResourceError, trio.ClosedResourceError)
    ):
        cause = cause.__cause__
    return cause


class LinkStream(trio.abc.Stream):
    """A trio stream whose errors are tinytelem errors.

    Args:
        inner: the raw trio stream; this object owns it and closes it.
        name: how the link is shown in messages (normally the device URL).
        remedy: what to tell the user when the world breaks the link.
    """

    def __init__(self, inner: trio.abc.Stream, *, name: str, remedy: str = "") -> None:
        self._inner = inner
        self.name = name
        self.remedy = remedy
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether ``aclose`` has been called on this stream."""
        return self._closed

    def _closed_error(self) -> StreamClosed:
        return StreamClosed(f"{self.name}: the link was already closed by this program")

    def _broken_error(self, what: str, cause: BaseException | None = None) -> StreamBroken:
        detail = f" ({cause})" if cause is not None and str(cause) else ""
        remedy = f"; {self.remedy}" if self.remedy else ""
        return StreamBroken(f"{self.name}: {what}{detail}{remedy}")

    @contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        """Map trio/OS errors raised inside the block to StreamClosed/StreamBroken."""
        try:
            yield
        except LinkError:
            raise
        except trio.ClosedResourceError as exc:
            raise self._closed_error() from exc
        except (trio.BrokenResourceError, OSError) as exc:
            if self._closed:
                # Closing a stream under a blocked call can surface as EBADF/EIO.
                raise self._closed_error() from exc
            cause = _root_cause(exc)
            raise self._broken_error(what, cause) from cause

    async def _checkpoint_if_closed(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            raise self._closed_error()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send every byte, or raise StreamBroken/StreamClosed."""
        await self._checkpoint_if_closed()
        with self._translate("link lost while sending"):
            await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until ``send_all`` is unlikely to block (trio stream contract)."""
        await self._checkpoint_if_closed()
        with self._translate("link lost while waiting to send"):
            await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Return some bytes, or ``b""`` at a clean end of stream."""
        await self._checkpoint_if_closed()
        with self._translate("link lost while receiving"):
            data = await self._inner.receive_some(max_bytes)
        return bytes(data)

    async def aclose(self) -> None:
        """Close the link; idempotent, and it closes even when cancelled."""
        self._closed = True
        with self._translate("error while closing"):
            await self._inner.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {self.name} {state}>"


class HalfCloseableLinkStream(LinkStream, trio.abc.HalfCloseableStream):
    """A :class:`LinkStream` that can also signal end-of-data to the peer (tcp, pipes, memory)."""

    def __init__(self, inner: trio.abc.HalfCloseableStream, *, name: str, remedy: str = "") -> None:
        super().__init__(inner, name=name, remedy=remedy)
        self._half_inner = inner

    async def send_eof(self) -> None:
        """Tell the peer no more data follows; receiving keeps working."""
        await self._checkpoint_if_closed()
        with self._translate("link lost while sending end of stream"):
            await self._half_inner.send_eof()
