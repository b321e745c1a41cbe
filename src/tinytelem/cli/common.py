"""Options and helpers shared by the CLI modules."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

F = TypeVar("F", bound=Callable[..., Any])


def device_option(default: str | None = None) -> Callable[[F], F]:
    """``--device URL`` with the accepted forms in its help."""
    return click.option(
        "--device", default=default, required=default is None, show_default=True,
        help="Device URL: emu:<platform> (device twin), qemu:<target> (real firmware under "
             "QEMU), native: (firmware built for this host), tcp://host:port, "
             "serial:///dev/ttyACM0?baud=921600, exec:<command>.",
    )


def trace_level_option() -> Callable[[F], F]:
    """``--trace-level off|tokens|spans``."""
    return click.option(
        "--trace-level", type=click.Choice(["off", "tokens", "spans"]), default="spans",
        show_default=True, help="What the firmware reports: spans adds per-layer timing.",
    )


def run_trio(fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run an async main under trio; Ctrl-C cancels it cleanly (files are closed).

    The one TinyTelemError inside a nursery's exception group is raised as itself, so callers
    (and click's test runner) see "refused: HTTP 401", not "1 sub-exception".
    """
    import trio

    from tinytelem.errors import first_error

    try:
        return trio.run(fn)
    except BaseExceptionGroup as group:
        found = first_error(group)
        if found is None:
            raise
        raise found from group


async def stop_on_signals(stop: Any, say: Callable[[str], object], message: str) -> None:
    """Set ``stop`` (a ``trio.Event``) on SIGINT or SIGTERM, saying ``message`` each time.

    The command then finishes its files cleanly instead of being torn down mid-write.
    """
    import signal

    import trio

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            say(message)
            stop.set()
