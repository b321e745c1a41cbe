"""A child process's stdin/stdout as a link (``exec:`` URLs).

Useful for wrappers (``exec:ssh board cat /dev/ttyACM0``), for firmware built for the host, and
for tests. The child's stderr is inherited so its diagnostics reach the user's terminal.
Child exit reads as a clean end of stream (``b""``); writing to a child that has exited raises
:class:`~tinytelem.errors.LinkBroken`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import trio

from tinytelem.errors import ConfigError
from tinytelem.transports.base import HalfCloseableLinkStream, StreamBroken
from tinytelem.transports.url import ExecURL

__all__ = ["TERMINATE_GRACE_S", "ProcessStream", "open_process_stream"]

TERMINATE_GRACE_S = 2.0


class ProcessStream(HalfCloseableLinkStream):
    """Sends to the child's stdin, receives from its stdout; ``send_eof`` closes stdin.

    ``aclose`` ends the child: terminate, wait up to :data:`TERMINATE_GRACE_S`, then kill.
    """

    def __init__(self, process: trio.Process, url: ExecURL) -> None:
        if process.stdin is None or process.stdout is None:
            raise ValueError("ProcessStream needs a process started with stdin and stdout pipes")
        super().__init__(
            trio.StapledStream(process.stdin, process.stdout),
            name=str(url),
            remedy="the child process exited; run the command by hand to see why",
        )
        self.process = process
        self.url = url
        self._reaped = False

    @property
    def returncode(self) -> int | None:
        """The child's exit status, or None while it runs."""
        return self.process.poll()

    def _broken_error(self, what: str, cause: BaseException | None = None) -> StreamBroken:
        status = self.process.poll()
        if status is not None:
            what = f"{what}; the child exited with status {status}"
        return super()._broken_error(what, cause)

    async def aclose(self) -> None:
        """Close the pipes and end the child (terminate, then kill after the grace period)."""
        try:
            await super().aclose()
        finally:
            if not self._reaped:
                self._reaped = True
                with trio.CancelScope(shield=True):
                    await self._end_child()

    async def _end_child(self) -> None:
        process = self.process
        if process.poll() is None:
            process.terminate()
            with trio.move_on_after(TERMINATE_GRACE_S):
                await process.wait()
            if process.poll() is None:
                process.kill()
        await process.wait()


async def open_process_stream(argv: Sequence[str] | ExecURL) -> ProcessStream:
    """Start ``argv`` with piped stdin/stdout and return the stream.

    Raises:
        ConfigError: the program does not exist or may not be executed.
    """
    url = argv if isinstance(argv, ExecURL) else ExecURL(tuple(argv))
    if not url.argv:
        raise ConfigError("exec: needs a command, e.g. exec:cat")
    try:
        process = await trio.lowlevel.open_process(
            list(url.argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{url}: command {url.argv[0]!r} not found; check the exec: URL and your PATH"
        ) from exc
    except PermissionError as exc:
        raise ConfigError(
            f"{url}: {url.argv[0]!r} is not executable; check its permissions"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"{url}: cannot start {url.argv[0]!r} ({exc})") from exc
    return ProcessStream(process, url)
